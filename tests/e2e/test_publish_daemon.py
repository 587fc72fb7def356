"""End to end: publishing through a real sovnetd when its disk is full."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SOVNET, assert_store_empty, cli_env
from tests.e2e.conftest import Cluster, make_model, wait_for
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


def _workers_of(pid: int) -> list[str]:
    found = subprocess.run(
        ["ps", "-o", "args=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [line for line in found.stdout.splitlines() if "publish_worker" in line]


def test_ctrl_c_on_publish_cancels_it_in_the_daemon(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.node("a").start()
    assert a.process is not None
    model = make_model(tmp_path / "big", megabytes=64)
    for i in range(7):  # 512 MiB in all: a copy that takes a while
        shutil.copyfile(model / "model.safetensors", model / f"shard{i}.safetensors")
    client = subprocess.Popen(
        [str(SOVNET), "publish", str(model), "--name", "acme/big", "--copy"],
        env=cli_env(a.state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The copy has begun: a temp file of the publish's is in the store.
        wait_for(
            "the copy to begin", lambda: any((a.state / "tmp").glob("*")), timeout=60, every=0.01
        )
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 130, (out, err)
    assert "Aborted." in err
    wait_for("the worker to end", lambda: not _workers_of(a.process.pid), timeout=30)
    wait_for("the temp files to go", lambda: not any((a.state / "tmp").glob("*")), timeout=30)
    assert a.ls() == [], "the publish went on after its client left"
    assert list((a.state / "blobs").glob("*")) == []
    assert "publish of acme/big cancelled" in a.log_text()
    # and the daemon publishes it when asked again
    assert a.sovnet("publish", model, "--name", "acme/big", check=True).stdout.strip()
    a.stop()


def test_publishes_through_the_daemon_leave_no_warning_in_its_log(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    a.start()
    for i in range(6):  # each worker's exit raced its reaping: about 1 in 3 warned
        model = make_model(tmp_path / f"m{i}", 1, seed=i)
        a.sovnet("publish", model, "--name", f"acme/m{i}", check=True)
    log = a.log_text()
    assert "Unknown child process" not in log and "WARNING" not in log, log[-2000:]
