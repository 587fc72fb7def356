"""End to end: a store within its budget (issue #14). A mirror whose quota fits two
models collects the least recently used unpinned one for a third release, never a
pinned one; `rm` and `gc` report the bytes `df` sees come back (on a tmpfs of their
own, so that nothing else writes to the disk measured)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SOVNET, Runner, cli_env
from tests.e2e.conftest import Cluster, make_model, wait_for
from tests.e2e.test_disk_full import small_disk
from tests.e2e.test_mirror import _publisher_root, _release

MIB = 1024 * 1024


def test_a_mirror_over_its_quota_collects_the_oldest_unpinned_release_never_a_pinned_one(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    m = cluster.node("m", trust_first=False)
    root = _publisher_root(p, tmp_path)
    p.start()
    first = _release(p, tmp_path, "1.0", seed=1)
    m.sovnet("trust", "add", root, check=True)
    # 2 MiB of weights a model: room for two, not three.
    m.start(SOVNET_FOLLOW="acme", SOVNET_METADATA_INTERVAL="1", SOVNET_MAX_STORE_BYTES="5MiB")
    m.sovnet("peers", "add", p.control, check=True)
    wait_for("the mirror to hold 1.0", lambda: m.has(first), timeout=60)
    said = m.sovnet("pin", "acme/tiny@1.0", check=True).stderr
    assert f"acme/tiny@1.0 ({first}) is pinned." in said
    assert "acme/tiny" in m.sovnet("ls", check=True).stdout and "1.0 (pinned)" in (
        m.sovnet("ls", check=True).stdout
    )
    assert [row["pinned"] for row in m.ls()] == [True]
    second = _release(p, tmp_path, "2.0", seed=2)
    wait_for("the mirror to hold 2.0", lambda: m.has(second), timeout=60)
    third = _release(p, tmp_path, "3.0", seed=3)
    wait_for("the mirror to hold 3.0", lambda: m.has(third), timeout=60)
    assert m.has(first) and not m.has(second)  # 2.0 collected; 1.0 is pinned
    assert f"gc: removing {second} (acme/tiny, unpinned, least recently used)" in m.log_text()
    # A fourth needs room only 1.0's removal could make: refused, and 1.0 stays.
    m.sovnet("pin", third, check=True)
    fourth = _release(p, tmp_path, "4.0", seed=4)
    refused = m.sovnet("fetch", "acme/tiny@4.0")
    assert refused.returncode == 8 and "would break this node's budget" in refused.stderr
    assert m.has(first) and m.has(third) and not m.has(fourth)
    [followed] = m.sovnet.json("mirror", "status")["followed"]
    assert followed["missing"] == 1  # 4.0; 2.0, collected, is not fetched again unasked
    assert not m.has(second)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs to measure df needs root")
def test_rm_and_gc_report_the_bytes_df_sees_freed(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", 64) as disk:
        node = Runner(disk / "node")
        node("key", "gen", check=True)
        cids = [
            node.json(
                "publish",
                make_model(tmp_path / f"m{k}", 4, seed=k),
                "--name",
                "acme/tiny",
                "--version",
                str(k),
            )["cid"]
            for k in range(3)
        ]

        def free() -> int:
            found = os.statvfs(disk)
            return found.f_bavail * found.f_frsize

        before = free()
        removed = node.json("rm", cids[0])
        assert abs((free() - before) - removed["freed_bytes"]) <= 16 * 1024, removed
        assert removed["freed_bytes"] >= 4 * MIB

        node.json("pin", cids[2])
        before = free()
        budget = {"SOVNET_MAX_STORE_BYTES": str(5 * MIB)}  # only one 4 MiB model fits
        dry = node.json("gc", "--dry-run", env=budget)
        assert [v["cid"] for v in dry["planned"]] == [cids[1]] and free() == before
        collected = node.json("gc", env=budget)
        assert [r["removed"] for r in collected["removed"]] == [cids[1]]
        assert abs((free() - before) - collected["freed_bytes"]) <= 16 * 1024, collected
        assert [row["cid"] for row in node.json("ls")] == [cids[2]]  # the pinned one


def test_a_quota_smaller_than_one_model_refuses_its_fetch_before_any_download(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    a.start()
    b.start(SOVNET_MAX_STORE_BYTES="1MiB")
    cid = a.sovnet.json("publish", make_model(tmp_path / "m", 4), "--name", "acme/big")["cid"]
    b.sovnet("peers", "add", a.control, check=True)
    refused = b.sovnet("fetch", cid)
    assert refused.returncode == 8, refused.stderr
    assert "would break this node's budget" in refused.stderr and "quota of 1.0 MiB" in (
        refused.stderr
    )
    assert "raise max_store_bytes" in refused.stderr  # the hint says what to do
    assert not b.has(cid)
    assert b.status()["recent_fetches"] == [] and not list((b.state / "blobs").iterdir())


def test_sigterm_during_gc_loses_nothing_pinned_and_leaves_no_model_half_removed(
    cluster: Cluster, tmp_path: Path
) -> None:
    from sovnet.store.keyfiles import NodeFiles
    from sovnet.store.publish import publish
    from sovnet.store.store import Store

    m = cluster.node("m")
    # Many small models, published as `sovnet publish` would (in this process: 300
    # CLI runs would take minutes): a gc long enough to stop in the middle of.
    store, key = Store(m.state).init(), NodeFiles(m.state).load_key()
    cids = []
    for i in range(300):
        model = tmp_path / f"m{i}"
        model.mkdir()
        (model / "config.json").write_text(f'{{"model_type": "llama", "seed": {i}}}')
        cids.append(str(publish(store, key, model, name=f"acme/m{i}").cid))
    pinned = cids[:3]
    for cid in pinned:
        m.sovnet("pin", cid, check=True)
    # A budget nothing unpinned fits in: gc removes all but the pinned.
    m.start(SOVNET_MAX_STORE_BYTES="1B")
    gc = subprocess.Popen(
        [str(SOVNET), "gc", "--json"],
        env=cli_env(m.state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for("gc to be removing", lambda: "gc: removing" in m.log_text(), every=0.01)
        assert m.stop() == 0  # SIGTERM: a clean stop, in the middle of it
        gc.communicate(timeout=60)  # the CLI says the daemon went away; it does not hang
    finally:
        gc.kill()
    removed = m.log_text().count("gc: removing")
    assert 0 < removed < 297, "the stop did not land in the middle of the gc"

    m.start()
    held = {row["cid"] for row in m.ls()}
    assert set(pinned) <= held
    assert 3 < len(held) < 300
    checked = m.sovnet("verify", "--all", "--json")
    assert checked.returncode == 0, checked.stdout[-2000:] + checked.stderr
    assert m.status()["damaged"] == {}
    # Each model is whole or gone: every one left verifies, and a second gc ends the job
    # (all but the pinned, which alone are over a budget of one byte).
    m.sovnet("gc", check=True)
    assert {row["cid"] for row in m.ls()} == set(pinned)
    assert "gc: stopped after" in m.log_text()


def test_gc_without_sovnetd_says_where_it_read_the_budget_and_takes_decimal_sizes(
    tmp_path: Path,
) -> None:
    node = Runner(tmp_path / "node")
    node("key", "gen", check=True)
    node("publish", make_model(tmp_path / "m", 1), "--name", "acme/tiny", check=True)
    (tmp_path / "empty.toml").write_text("")
    none = node("gc", "--dry-run", env={"SOVNET_CONFIG": str(tmp_path / "empty.toml")})
    assert none.returncode == 0, none.stderr
    assert "no budget" in none.stderr and "$SOVNET_CONFIG" in none.stderr
    some = node("gc", "--dry-run", env={"SOVNET_MAX_STORE_BYTES": "0.5MiB"})
    assert "with a quota of 512.0 KiB" in some.stderr, some.stderr
    assert "would remove" in some.stderr
