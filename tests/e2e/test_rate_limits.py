"""End to end: rate limits changed on a running node (issue #14). Peers on loopback
are in the local class; `sovnet limits set` changes its limit at once, without a
restart, and the change is kept over a restart."""

from __future__ import annotations

import time
from pathlib import Path

from tests.e2e.conftest import Cluster, make_model

MIB = 1024 * 1024


def test_limits_set_on_a_running_node_take_effect_and_are_kept(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    a.start()
    b.start()
    before = a.sovnet.json("limits")
    assert before["local_upload"] == 0 and not before["persisted"]
    assert "127.0.0.0/8" in before["local_networks"]

    set_ = a.sovnet.json("limits", "set", "--local-upload", "2MiB")
    assert set_["local_upload"] == 2 * MIB and set_["persisted"]  # as libtorrent reports it
    model = make_model(tmp_path / "m", 12)
    cid = a.sovnet.json("publish", model, "--name", "acme/big")["cid"]
    b.sovnet("peers", "add", a.control, check=True)
    started = time.monotonic()
    b.sovnet("fetch", cid, check=True)
    took = time.monotonic() - started
    # 12 MiB at 2 MiB/s: a limit never makes a transfer faster, whatever the machine.
    assert took >= 3.0, took

    a.stop()
    a.start()
    assert a.sovnet.json("limits")["local_upload"] == 2 * MIB  # kept over the restart
    bad = a.sovnet("limits", "set", "--upload", "fast")
    assert bad.returncode == 4 and "--upload 'fast'" in bad.stderr
