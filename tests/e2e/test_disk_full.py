"""End to end: a fetching node whose disk is full, on a small tmpfs of its own.

Mounting a tmpfs needs root (CI and the development machines run tests as root);
elsewhere these tests are skipped, saying why.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sovnet.store.diskspace import free_bytes
from tests.e2e.conftest import Cluster, make_model, same_files, wait_for
from tests.e2e.test_mirror import _publisher_root, _release
from tests.e2e.test_swarm import MIB, _fetch_in_background

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounting a small tmpfs as a full disk needs root"
)


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int) -> Iterator[Path]:
    path.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m,mode=0700", "tmpfs", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fill(path: Path, leave: int) -> Path:
    """A file taking all the free space below ``path`` but ``leave`` bytes."""
    filler = path / "filler"
    with open(filler, "wb") as out:
        chunk = b"\xff" * MIB
        while free_bytes(path) > leave + len(chunk):
            out.write(chunk)
            out.flush()
        out.write(b"\xff" * max(0, free_bytes(path) - leave - 4096))
    return filler


def test_a_fetch_that_cannot_fit_is_refused_before_it_starts(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    with small_disk(cluster.root / "b", 24):
        b = cluster.node("b")
        a.start()
        b.start()
        model = make_model(tmp_path / "m", megabytes=32)
        cid = a.sovnet.json("publish", model, "--name", "acme/big")["cid"]
        b.sovnet("peers", "add", a.control, check=True)

        fetched = b.sovnet("fetch", cid)
        assert fetched.returncode == 8, fetched.stderr + b.log_text()[-2000:]
        assert "not enough free disk space" in fetched.stderr
        assert "MiB" in fetched.stderr  # how much is needed, and how much there is
        assert "internal error" not in fetched.stderr
        # Nothing was downloaded: no file of the model's beyond its manifest.
        downloaded = [
            p for p in (b.state / "partial").rglob("*") if p.is_file() and p.stat().st_size > MIB
        ]
        assert downloaded == []
        b.stop()


@pytest.mark.parametrize(
    "leave",
    [64 * 1024, 6 * MIB],
    ids=["writes-fail", "nearly-full"],  # at once to the last blocks; below the low water
)
def test_a_disk_that_fills_during_a_fetch_fails_it_cleanly_and_it_resumes_later(
    cluster: Cluster, tmp_path: Path, leave: int
) -> None:
    a = cluster.node("a")
    with small_disk(cluster.root / "b", 64) as disk:
        b = cluster.node("b")
        a.start(SOVNET_UPLOAD_RATE_LIMIT=str(4 * MIB))
        b.start(SOVNET_RESUME_INTERVAL="0.5")
        model = make_model(tmp_path / "m", megabytes=40)
        cid = a.sovnet.json("publish", model, "--name", "acme/big")["cid"]
        total = sum(p.stat().st_size for p in model.iterdir())
        b.sovnet("peers", "add", a.control, check=True)

        follower = _fetch_in_background(b.state, cid)

        def progress() -> int | None:
            for fetch in b.status()["fetches"]:
                if fetch.get("resumable", 0) >= 8 * MIB:
                    return int(fetch["resumable"])
            return None

        wait_for("the fetch to be under way", progress, timeout=60, every=0.2)
        filler = _fill(disk, leave=leave)
        out, err = follower.communicate(timeout=120)
        assert follower.returncode == 8, err + b.log_text()[-3000:]
        error = json.loads(out.splitlines()[-1])["error"]
        assert "the disk filled up" in error["message"], error
        assert "MiB" in error["message"], error  # how much more is needed
        log = b.log_text()
        assert "Traceback" not in log
        assert log.count("ERROR") < 5, log[-3000:]
        done_before = sum(
            p.stat().st_blocks * 512 for p in (b.state / "partial").rglob("*") if p.is_file()
        )

        if leave > 4 * MIB:  # the fetch stopped itself before any write failed
            assert "No space left" not in log, log[-3000:]
        filler.unlink()
        fetched = b.sovnet("fetch", cid, "--json")
        assert fetched.returncode == 0, fetched.stderr + b.log_text()[-3000:]
        result = json.loads(fetched.stdout.splitlines()[-1])
        # What had arrived before the disk filled is not downloaded again (up to a
        # tenth of the model: the pieces in flight when it filled).
        assert result["downloaded"] <= total - done_before + total // 10, (result, done_before)
        assert same_files(model, b.state / "models" / cid)
        b.stop()


def test_on_a_full_disk_commands_say_so_and_rm_still_frees_room(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    with small_disk(cluster.root / "b", 48) as disk:
        b = cluster.node("b")
        a.start()
        b.start()
        first = a.sovnet.json("publish", make_model(tmp_path / "m1", 8), "--name", "acme/one")
        second = a.sovnet.json(
            "publish", make_model(tmp_path / "m2", 8, seed=2), "--name", "acme/two"
        )
        b.sovnet("peers", "add", a.control, check=True)
        b.sovnet("fetch", first["cid"], check=True)
        filler = _fill(disk, leave=0)

        fetched = b.sovnet("fetch", second["cid"])
        assert fetched.returncode == 8, fetched.stderr
        assert "disk" in fetched.stderr and "internal error" not in fetched.stderr
        added = b.sovnet("peers", "add", "127.0.0.1:9")
        assert added.returncode == 7 and "the disk is full" in added.stderr, added.stderr
        trusted = b.sovnet("trust", "add", a.key_id(), "--name", "again")
        assert trusted.returncode == 7 and "Traceback" not in trusted.stderr, trusted.stderr

        removed = b.sovnet("rm", first["cid"])  # the way out sovnet's own hint names
        assert removed.returncode == 0, removed.stderr
        assert "Traceback" not in b.log_text()
        filler.unlink()
        assert b.sovnet("fetch", second["cid"]).returncode == 0
        b.stop()


def test_a_mirror_whose_disk_fills_during_a_follow_fetch_resumes_it_once_there_is_room(
    cluster: Cluster, tmp_path: Path
) -> None:
    p = cluster.node("p")
    root = _publisher_root(p, tmp_path)
    p.start(SOVNET_UPLOAD_RATE_LIMIT=str(4 * MIB))
    with small_disk(cluster.root / "m", 64) as disk:
        m = cluster.node("m", trust_first=False)
        c = cluster.node("c", trust_first=False)
        m.sovnet("trust", "add", root, check=True)
        cid = _release(p, tmp_path, "1.0", seed=1, megabytes=40)
        m.start(SOVNET_FOLLOW="acme", SOVNET_METADATA_INTERVAL="1", SOVNET_RESUME_INTERVAL="0.5")
        m.sovnet("peers", "add", p.control, check=True)

        def under_way() -> bool:
            return any(f.get("resumable", 0) >= 8 * MIB for f in m.status()["fetches"])

        wait_for("the mirror's fetch to be under way", under_way, timeout=60, every=0.2)
        filler = _fill(disk, leave=1 * MIB)

        def failed() -> list[str]:
            return list(m.sovnet.json("mirror", "status")["followed"][0]["failed"])

        [why] = wait_for("the mirror's fetch to fail", failed, timeout=120)
        assert "disk" in why, why
        # Nothing half-written is served: not listed, not offered to peers as held.
        assert not m.has(cid)
        c.sovnet("trust", "add", root, check=True)
        c.start()
        c.sovnet("peers", "add", m.control, check=True)
        held = c.sovnet.json("ls", "--remote")
        assert all(m.control not in r.get("holders", []) for r in held["releases"]), held
        assert "Traceback" not in m.log_text()

        filler.unlink()  # room again: the next round resumes the fetch
        wait_for("the mirror to hold 1.0", lambda: m.has(cid), timeout=120)
        assert m.sovnet("verify", cid).returncode == 0
        [followed] = m.sovnet.json("mirror", "status")["followed"]
        assert (followed["held"], followed["failed"]) == (1, []), followed
        m.stop()
        c.stop()
