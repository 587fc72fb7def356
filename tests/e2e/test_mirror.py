"""End to end: a mirror follows a publisher (issue #14). Publisher P releases and
moves :latest; mirror M, which follows P, fetches and seeds each release without
anyone asking; client C, which knows only M, fetches ORG/MODEL:latest while P is
stopped."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from sovnet.core.address import PeerAddress
from sovnet.net.control_client import PeerClient
from sovnet.store.networkfiles import NetworkFiles
from tests.e2e.conftest import Cluster, Node, expire_timestamp, make_model, wait_for


def _publisher_root(p: Node, tmp_path: Path) -> Path:
    """acme's root, 1 of 1: P's key signs it, its releases and (online) its timestamp."""
    key = tmp_path / "p.pub"
    key.write_text(p.sovnet("key", "show", "--public", check=True).stdout)
    root = tmp_path / "root.json"
    p.sovnet("publisher", "init", "acme", "--key", key, "--threshold", "1", "-o", root,
             check=True)  # fmt: skip
    p.sovnet("publisher", "sign", root, check=True)
    p.sovnet("publisher", "install", root, check=True)
    return root


def _release(p: Node, tmp_path: Path, version: str, seed: int, megabytes: int = 2) -> str:
    model = make_model(tmp_path / f"m{version}", megabytes, seed=seed)
    cid = p.sovnet.json("publish", model, "--name", "acme/tiny", "--version", version)["cid"]
    release = tmp_path / f"release-{version}.json"
    p.sovnet("publisher", "release", f"acme/tiny@{version}", "-o", release, check=True)
    p.sovnet("publisher", "sign", release, check=True)
    p.sovnet("publisher", "install", release, check=True)
    return str(cid)


def test_a_mirror_fetches_what_it_follows_unasked_and_serves_it_without_the_publisher(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    m = cluster.node("m", trust_first=False)
    c = cluster.node("c", trust_first=False)
    root = _publisher_root(p, tmp_path)
    p.start()
    first = _release(p, tmp_path, "1.0", seed=1)

    m.sovnet("trust", "add", root, check=True)
    m.start(SOVNET_FOLLOW="acme", SOVNET_METADATA_INTERVAL="1")
    m.sovnet("peers", "add", p.control, check=True)
    wait_for("the mirror to hold release 1.0", lambda: m.has(first), timeout=60)
    # The next release moves :latest; the mirror follows without being asked.
    second = _release(p, tmp_path, "2.0", seed=2)
    wait_for("the mirror to hold release 2.0", lambda: m.has(second), timeout=60)
    [followed] = m.sovnet.json("mirror", "status")["followed"]
    assert followed["publisher"] == "acme" and followed["releases_version"] == 2
    assert (followed["wanted"], followed["held"], followed["missing"]) == (2, 2, 0)
    shown = m.sovnet("mirror", "status", check=True).stdout
    assert "acme" in shown and "2 of 2" in shown
    assert f"mirror: acme released {second}: fetching it" in m.log_text()

    p.stop()  # from now on only the mirror has acme's models and metadata
    c.sovnet("trust", "add", root, check=True)
    c.start()
    c.sovnet("peers", "add", m.control, check=True)
    fetched = c.sovnet("fetch", "acme/tiny:latest", "--json")
    assert fetched.returncode == 0, fetched.stderr + m.log_text()[-2000:]
    assert json.loads(fetched.stdout.splitlines()[-1])["cid"] == second
    assert c.sovnet("verify", "acme/tiny@2.0").returncode == 0


# -- a followed publisher's metadata goes bad: the mirror keeps what it has ----------------


def _stale_and_still(m: Node, second: str, why: str) -> dict[str, Any]:
    """Wait for M to say acme is stale; then, over two more refreshes, it must start
    no fetch of ``second`` (listed in what it trusted, not here)."""
    wait_for(
        "the mirror to call acme stale",
        lambda: m.sovnet.json("mirror", "status")["followed"][0].get("stale", False),
        timeout=60,
    )
    time.sleep(2.5)  # two more rounds of metadata_interval = 1
    [followed] = m.sovnet.json("mirror", "status")["followed"]
    assert why in followed["problem"], followed
    assert (followed["wanted"], followed["held"], followed["fetching"]) == (2, 1, 0), followed
    assert not m.has(second)
    assert "fetching it" not in m.log_text()
    assert "acme is stale" in m.log_text()
    assert "STALE" in m.sovnet("mirror", "status", check=True).stdout
    return followed


def test_a_stale_publisher_is_followed_no_further_until_its_metadata_is_fresh_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    r = cluster.node("r", trust_first=False)  # a peer that holds acme's models
    m = cluster.node("m", trust_first=False)
    root = _publisher_root(p, tmp_path)
    p.start()
    first = _release(p, tmp_path, "1.0", seed=1)
    second = _release(p, tmp_path, "2.0", seed=2)
    for node in (r, m):
        node.sovnet("trust", "add", root, check=True)
        node.start()
        node.sovnet("peers", "add", p.control, check=True)
    r.sovnet("fetch", "acme/tiny@2.0", check=True)
    m.sovnet("fetch", "acme/tiny@1.0", check=True)  # M trusts metadata listing 2.0 too
    p.stop()
    r.stop()
    m.stop()
    # P is off for two days: the timestamps R and M trusted expire.
    expire_timestamp(r, p)
    expire_timestamp(m, p)
    r.start()
    m.start(SOVNET_FOLLOW="acme", SOVNET_METADATA_INTERVAL="1")
    m.sovnet("peers", "add", r.control, check=True)

    _stale_and_still(m, second, "has expired")
    assert m.sovnet("verify", first).returncode == 0  # what is here stays, verified
    assert m.status()["seeding"] == 1

    # The publisher's node is back and releases 3.0: fresh metadata, and the mirror
    # catches up with all it missed.
    p.start()
    third = _release(p, tmp_path, "3.0", seed=3)
    m.sovnet("peers", "add", p.control, check=True)
    wait_for("the mirror to fetch 2.0 once acme is fresh", lambda: m.has(second), timeout=60)
    wait_for("the mirror to fetch 3.0", lambda: m.has(third), timeout=60)
    [followed] = m.sovnet.json("mirror", "status")["followed"]
    assert not followed["stale"] and followed["problem"] is None
    assert "acme refreshed again: following it" in m.log_text()


def test_a_mirror_offered_only_older_metadata_fetches_nothing_new(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    r = cluster.node("r", trust_first=False)  # trusted acme's metadata before 2.0
    m = cluster.node("m", trust_first=False)
    root = _publisher_root(p, tmp_path)
    p.start()
    first = _release(p, tmp_path, "1.0", seed=1)
    r.sovnet("trust", "add", root, check=True)
    r.start()
    r.sovnet("peers", "add", p.control, check=True)
    r.sovnet("fetch", "acme/tiny@1.0", check=True)
    r.stop()  # keeps metadata of 1.0 only, and would hand it on
    second = _release(p, tmp_path, "2.0", seed=2)
    m.sovnet("trust", "add", root, check=True)
    m.start()
    m.sovnet("peers", "add", p.control, check=True)
    m.sovnet("fetch", "acme/tiny@1.0", check=True)
    p.stop()
    m.stop()
    # A day later (R's timestamp still fresh), M's only reachable peer is R.
    r.start()
    m.start(SOVNET_FOLLOW="acme", SOVNET_METADATA_INTERVAL="1")
    m.sovnet("peers", "add", r.control, check=True)

    followed = _stale_and_still(m, second, "was refused")
    assert "older" in followed["problem"] or "version" in followed["problem"].lower(), followed
    assert m.has(first)


# -- hints: a peer says something changed ----------------------------------------------------


def test_a_release_reaches_a_mirror_by_hint_long_before_its_next_refresh(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    m = cluster.node("m", trust_first=False)
    root = _publisher_root(p, tmp_path)
    p.start()
    _release(p, tmp_path, "1.0", seed=1)
    m.sovnet("trust", "add", root, check=True)
    # Its own rounds of refreshes 10 minutes apart: only a hint can be this quick.
    m.start(SOVNET_FOLLOW="acme", SOVNET_METADATA_INTERVAL="600")
    m.sovnet("peers", "add", p.control, check=True)
    m.sovnet("fetch", "acme/tiny@1.0", check=True)  # and P learns of M, as of any fetcher
    wait_for(
        "P to have checked M",
        lambda: any(
            row.get("state") == "verified" and row["address"] == m.control
            for row in p.sovnet.json("peers", "ls")
        ),
        timeout=30,
    )

    second = _release(p, tmp_path, "2.0", seed=2)
    wait_for("the mirror to hold 2.0 by P's hint", lambda: m.has(second), timeout=60)
    assert "publisher acme: version" in p.log_text() and "telling the peers" in p.log_text()
    assert m.scrape()[("sovnet_hinted_refreshes_total", ())] >= 1


def test_a_peer_hinting_in_a_loop_costs_one_refresh_per_gap(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    m = cluster.node("m", trust_first=False)
    x = cluster.node("x")  # a member that hints without end
    root = _publisher_root(p, tmp_path)
    p.start()
    first = _release(p, tmp_path, "1.0", seed=1)
    m.sovnet("trust", "add", root, check=True)
    m.start(SOVNET_FOLLOW="acme", SOVNET_METADATA_INTERVAL="600")
    m.sovnet("peers", "add", p.control, check=True)
    address = PeerAddress.parse(m.control)

    async def hint_in_a_loop(seconds: float) -> int:
        sent = 0
        async with PeerClient(NetworkFiles(x.state).tls_files(), timeout=5.0) as client:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                sent += 1
                await client.hint(address, "acme", 1000 + sent)  # ever newer, never true
                await client.hint(address, "other", 1000 + sent)  # not pinned: nothing
                await asyncio.sleep(0.02)
        return sent

    started = time.monotonic()
    sent = asyncio.run(hint_in_a_loop(7.0))
    time.sleep(1.0)  # the last refresh a hint started ends
    elapsed = time.monotonic() - started
    refreshes = m.scrape()[("sovnet_hinted_refreshes_total", ())]
    assert sent > 100
    # One at once, then one a HINT_GAP (5 s) at most, whatever the number of hints.
    assert 1 <= refreshes <= 1 + elapsed // 5, (sent, refreshes, elapsed)
    # A hint is a nudge: the refresh it started verified what P really has (version
    # 1, and release 1.0, which the mirror then fetched), not what the hints said.
    [followed] = m.sovnet.json("mirror", "status")["followed"]
    assert followed["releases_version"] == 1
    wait_for("the mirror to hold 1.0", lambda: m.has(first), timeout=30)


def test_a_mirror_following_the_newest_versions_holds_only_those(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    m = cluster.node("m", trust_first=False)
    root = _publisher_root(p, tmp_path)
    p.start()
    cids = {v: _release(p, tmp_path, v, seed=k) for k, v in enumerate(["1.9", "1.10", "2.0"])}
    m.sovnet("trust", "add", root, check=True)
    config = tmp_path / "mirror.toml"
    config.write_text('follow = [{publisher = "acme", versions = 2}]\nmetadata_interval = 1\n')
    m.start(SOVNET_CONFIG=str(config))
    m.sovnet("peers", "add", p.control, check=True)
    wait_for("the mirror to hold 2.0", lambda: m.has(cids["2.0"]), timeout=60)
    wait_for("the mirror to hold 1.10", lambda: m.has(cids["1.10"]), timeout=60)
    time.sleep(2.5)  # two more rounds: 1.9, the third newest, is not fetched
    assert not m.has(cids["1.9"])
    [followed] = m.sovnet.json("mirror", "status")["followed"]
    assert (followed["wanted"], followed["held"], followed["missing"]) == (2, 2, 0)
    assert followed["versions"] == 2
    assert "acme newest 2" in m.sovnet("mirror", "status", check=True).stdout


def test_following_a_publisher_whose_root_is_not_pinned_is_said_everywhere(
    cluster: Cluster,
) -> None:
    m = cluster.node("m")
    m.start(SOVNET_FOLLOW="beta")
    assert "mirror: follows beta, but no root of beta is pinned here" in m.log_text()
    [followed] = m.sovnet.json("mirror", "status")["followed"]
    assert followed["stale"] and "no root of beta is pinned" in followed["problem"]
    assert m.scrape()[("sovnet_followed_stale", (("publisher", "beta"),))] == 1
