"""End to end: publishing through a real sovnetd when its disk is full."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import assert_store_empty
from tests.e2e.conftest import Cluster, make_model
from tests.e2e.test_disk_full import small_disk


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as a full disk needs root")
def test_publish_copy_onto_a_full_disk_through_the_daemon_says_so(
    cluster: Cluster, tmp_path: Path
) -> None:
    model = make_model(tmp_path / "big", megabytes=16)
    with small_disk(cluster.root / "a", 8):
        a = cluster.node("a").start()
        done = a.sovnet("publish", model, "--name", "acme/big", "--copy")
        assert done.returncode == 7, done.stderr + a.log_text()[-3000:]
        [line] = [line for line in done.stderr.splitlines() if line.startswith("sovnet: error:")]
        assert "full" in line and "MiB" in line, done.stderr
        assert "nothing was published" in done.stderr
        assert "BufferError" not in a.log_text()
        assert a.ls() == []
        a.stop()
        assert_store_empty(a.state)
