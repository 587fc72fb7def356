"""End to end: a command given one node's state dir and another node's socket."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Cluster, make_model


def test_a_socket_of_another_node_than_the_state_dir_is_refused(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    b.start()
    socket = str(b.state / "sovnetd.sock")
    model = make_model(tmp_path / "m", megabytes=1)
    # A SOVNET_SOCKET left in the environment must not publish under b's identity
    # what the user meant for a.
    published = a.sovnet("publish", model, "--name", "acme/x", env={"SOVNET_SOCKET": socket})
    assert published.returncode == 4, published.stderr
    assert str(b.state) in published.stderr and str(a.state) in published.stderr
    assert b.ls() == []
    # Named together, they agree: that works.
    assert b.sovnet("status", env={"SOVNET_SOCKET": socket}).returncode == 0
