"""`sovnet network invite` with sovnetd running names an address its control plane
listens on (#12): a loopback listener is named by its loopback address, not by a
host name other machines would try in vain."""

from __future__ import annotations

from sovnet.core.address import PeerAddress
from sovnet.core.network import Invite
from tests.e2e.conftest import Cluster


def test_an_invite_names_the_loopback_address_the_control_plane_listens_on(
    cluster: Cluster,
) -> None:
    owner = cluster.node("owner").start(host="127.0.0.1")
    port = int(owner.status()["control_port"])
    invite = cluster.root / "new.invite"
    result = owner.sovnet("network", "invite", "--new-node", "new", "-o", invite, check=True)
    assert Invite.from_bytes(invite.read_bytes()).peers == (PeerAddress("127.0.0.1", port),)
    assert f"It names 127.0.0.1:{port} as this node's address" in result.stderr
    assert "listens on 127.0.0.1 only" in result.stderr
    # The node it admits keeps that address as a peer to start from.
    joined = cluster.node("new", network=None)
    joined.sovnet("network", "join", invite, check=True)
    assert f"127.0.0.1:{port}" in (joined.state / "peers.json").read_text()
