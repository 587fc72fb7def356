"""End to end: a mirror follows a publisher (issue #14). Publisher P releases and
moves :latest; mirror M, which follows P, fetches and seeds each release without
anyone asking; client C, which knows only M, fetches ORG/MODEL:latest while P is
stopped."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import Cluster, Node, make_model, wait_for


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


def _release(p: Node, tmp_path: Path, version: str, seed: int) -> str:
    model = make_model(tmp_path / f"m{version}", 2, seed=seed)
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
