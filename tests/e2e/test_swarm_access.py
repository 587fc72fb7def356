"""Only members of the network get bytes from a seeder's swarm.

A BitTorrent client that knows everything public about the model (the manifest
and the network's CA certificate, so it derives the same torrent) still gets
nothing from a sovnet seeder unless its certificate was issued by that CA. The
same client with a member's certificate downloads, which shows the harness can
see a transfer when there is one.
"""

from __future__ import annotations

import datetime
import socket
import ssl
import time
from pathlib import Path

import libtorrent as lt
import pytest

from sovnet.core import network, torrent
from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from tests.conftest import loopback_session
from tests.e2e.conftest import Cluster, Node, make_model

NOW = datetime.datetime.now(datetime.UTC)
BT_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8) + bytes(20) + b"-SV0000-testtesttest"


def _foreign_member() -> tuple[bytes, bytes]:
    ca = network.create_network("foreign", NOW)
    key = network.new_key()
    return key, network.issue_node_certificate(ca, network.node_request(key, "intruder"), NOW)


def _member_of(node: Node) -> tuple[bytes, bytes]:
    ca = network.CertificateAuthority(
        key_pem=(node.state / "network" / "ca.key").read_bytes(),
        cert_pem=(node.state / "network" / "ca.pem").read_bytes(),
    )
    key = network.new_key()
    return key, network.issue_node_certificate(ca, network.node_request(key, "guest"), NOW)


def _download(seeder: Node, cid: str, cert: tuple[bytes, bytes], into: Path, seconds: float) -> int:
    """Join the seeder's swarm as a bare libtorrent client; payload bytes received."""
    manifest = Manifest.from_bytes(seeder.sovnet("show", cid, "--raw", text=False).stdout)
    spec = torrent.derive(CID.parse(cid), manifest, (seeder.state / "network/ca.pem").read_bytes())
    # An "s" port: the SSL listen socket SSL torrents need.
    session = loopback_session("127.0.0.1:0s")
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(spec.torrent_file({}))
    params.save_path = str(into)
    handle = session.add_torrent(params)
    key, certificate = cert
    handle.set_ssl_certificate_buffer(
        certificate.decode(), key.decode(), network.dh_params_pem().decode()
    )
    handle.connect_peer(("127.0.0.1", seeder.status()["swarm_port"]))
    deadline = time.monotonic() + seconds
    received = 0
    while time.monotonic() < deadline:
        status = handle.status()
        received = status.total_payload_download
        if status.is_seeding:
            break
        time.sleep(0.2)
    session.remove_torrent(handle)
    return int(received)


@pytest.fixture
def seeder(cluster: Cluster, tmp_path: Path) -> tuple[Node, str, int]:
    a = cluster.node("a")
    a.start()
    model = make_model(tmp_path / "m", megabytes=6)
    cid = a.sovnet.json("publish", model, "--name", "acme/x")["cid"]
    return a, cid, sum(p.stat().st_size for p in model.iterdir())


def test_a_foreign_certificate_gets_no_byte(seeder: tuple[Node, str, int], tmp_path: Path):
    node, cid, _ = seeder
    assert _download(node, cid, _foreign_member(), tmp_path / "x", seconds=6) == 0
    time.sleep(1)  # let the seeder's counters refresh
    assert node.status()["uploaded"] == 0


def test_a_member_certificate_downloads(seeder: tuple[Node, str, int], tmp_path: Path):
    node, cid, size = seeder
    assert _download(node, cid, _member_of(node), tmp_path / "x", seconds=30) == size


def test_no_certificate_no_bittorrent(seeder: tuple[Node, str, int]) -> None:
    node, _, _ = seeder
    port = node.status()["swarm_port"]
    # TLS without a client certificate: the handshake fails, no peer protocol.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)),
        context.wrap_socket(raw, server_hostname="sovnet") as tls,
    ):
        tls.sendall(BT_HANDSHAKE)
        reply = tls.recv(68)
        if not reply:
            raise ConnectionError("closed")
        raise AssertionError(f"got {reply!r} without a certificate")
    # Plain BitTorrent on the TLS port: nothing that looks like a peer answers.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:
        plain.sendall(BT_HANDSHAKE)
        try:
            reply = plain.recv(68)
        except (ConnectionError, TimeoutError):
            reply = b""
        assert not reply.startswith(b"\x13BitTorrent")
    assert node.status()["uploaded"] == 0


def test_the_api_socket_is_private(cluster: Cluster) -> None:
    a = cluster.node("a")
    a.start()
    mode = (a.state / "sovnetd.sock").stat().st_mode & 0o777
    assert mode == 0o600


def test_a_request_nested_too_deeply_is_400_not_a_traceback(cluster: Cluster) -> None:
    import http.client
    import json

    a = cluster.node("a")
    a.start()
    body = b"[" * 5000 + b"]" * 5000  # 10 KB, deeper than Python's parser recurses
    connection = http.client.HTTPConnection("localhost", timeout=10)
    connection.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.sock.connect(str(a.state / "sovnetd.sock"))
    connection.request("POST", "/v1/fetch", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    error = json.loads(response.read())["error"]
    connection.close()
    assert response.status == 400
    assert (error["code"], error["exit_code"]) == ("invalid-input", 4)
    assert "Traceback" not in a.log_text() and "RecursionError" not in a.log_text()
