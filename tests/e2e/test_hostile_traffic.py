"""Hostile traffic is seen and cut off (issue #12, defect 9), against a real sovnetd.

Connections refused at the TLS handshake (no certificate, or one another network's
CA issued), on the control plane and on the swarm port, are counted in `sovnet
status` and logged at INFO, one line per source per interval with a count. A
member's connections that drip their request headers are closed after the
header timeout, while a member asking normally is still answered.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from pathlib import Path

from tests.e2e.conftest import Cluster, Node, wait_for
from tests.e2e.test_swarm_access import _foreign_member, _member_of


def _client_context(tmp: Path, cert: tuple[bytes, bytes] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert is not None:
        key, certificate = cert
        (tmp / "c.key").write_bytes(key)
        (tmp / "c.pem").write_bytes(certificate)
        context.load_cert_chain(tmp / "c.pem", tmp / "c.key")
    return context


def _knock(port: int, context: ssl.SSLContext) -> None:
    """A TLS handshake and one request; whatever the server does, it is over."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            context.wrap_socket(raw, server_hostname="sovnet") as tls,
        ):
            tls.sendall(b"GET /v1/node HTTP/1.1\r\nHost: x\r\n\r\n")
            tls.recv(100)
    except (OSError, ssl.SSLError):
        pass


def _rejected(node: Node, plane: str) -> int:
    return sum(r["count"] for r in node.status().get("rejected", []) if r["plane"] == plane)


def test_refused_handshakes_are_counted_and_logged_once_per_source(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    a.start(SOVNET_REJECTION_LOG_INTERVAL="10")
    status = a.status()
    foreign = _client_context(tmp_path, _foreign_member())
    nothing = _client_context(tmp_path, None)
    for port in (status["control_port"], status["swarm_port"]):
        for _ in range(10):
            _knock(port, foreign)
            _knock(port, nothing)

    wait_for("the control plane's count", lambda: _rejected(a, "control") >= 20)
    wait_for("the swarm's count", lambda: _rejected(a, "swarm") >= 20)
    assert (_rejected(a, "control"), _rejected(a, "swarm")) == (20, 20)
    reasons = {(r["plane"], r["reason"]) for r in a.status()["rejected"]}
    assert ("control", "no member certificate") in reasons
    assert ("control", "a certificate of another network") in reasons
    assert all(r["last_from"] == "127.0.0.1" for r in a.status()["rejected"])
    human = a.sovnet("status").stdout
    assert "rejected:" in human and "control plane" in human

    def lines(plane: str) -> list[str]:
        return [
            line
            for line in a.log_text().splitlines()
            if "INFO" in line and "rejected" in line and plane in line
        ]

    control = wait_for("the control plane's log line", lambda: lines("to the control plane"), 40)
    swarm = wait_for("the swarm's log line", lambda: lines("to the swarm"), 40)
    time.sleep(1)
    assert len(lines("to the control plane")) == 1, control
    assert len(lines("to the swarm")) == 1, swarm
    assert re.search(
        r"INFO .*rejected 20 connections from 127\.0\.0\.1 to the control plane "
        r"in the last 10 s: ",
        control[0],
    )
    assert "no member certificate (10)" in control[0]
    assert "a certificate of another network (10)" in control[0]
    assert "rejected 20 connections from 127.0.0.1 to the swarm" in swarm[0]


async def _drip(port: int, context: ssl.SSLContext, closed: list[float]) -> None:
    """Open a member's connection and send its request's headers a byte at a time,
    forever; note when the server closes it."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="sovnet"
    )
    started = time.monotonic()
    try:
        writer.write(b"GET /v1/node HTTP/1.1\r\nHost: x\r\n")
        while True:
            writer.write(b"X")
            await writer.drain()
            try:
                async with asyncio.timeout(0.5):
                    if not await reader.read(100):
                        break
            except TimeoutError:
                continue
    except (OSError, ssl.SSLError):
        pass
    finally:
        closed.append(time.monotonic() - started)
        writer.close()


async def test_connections_dripping_headers_are_closed_and_members_still_answered(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    await asyncio.to_thread(a.start, SOVNET_CONTROL_HEADER_TIMEOUT="2")
    port = (await asyncio.to_thread(a.status))["control_port"]
    member = _client_context(tmp_path, _member_of(a))
    closed: list[float] = []
    drips = [asyncio.create_task(_drip(port, member, closed)) for _ in range(60)]
    try:
        await asyncio.sleep(1)
        # Meanwhile a member asks, and is answered.
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=member, server_hostname="sovnet"
        )
        writer.write(b"GET /v1/node HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 200")
        # Every dripping connection is closed, long before anyone would give up.
        async with asyncio.timeout(30):
            await asyncio.gather(*drips)
        assert len(closed) == 60
    finally:
        for task in drips:
            task.cancel()
        await asyncio.gather(*drips, return_exceptions=True)
    assert any(
        r["reason"].startswith("request headers")
        for r in (await asyncio.to_thread(a.status))["rejected"]
    )


def test_a_bittorrent_peer_of_another_network_is_counted_by_the_swarm(
    cluster: Cluster, tmp_path: Path
) -> None:
    from tests.e2e.conftest import make_model
    from tests.e2e.test_swarm_access import _download

    a = cluster.node("a")
    a.start()
    cid = a.sovnet.json("publish", make_model(tmp_path / "m", megabytes=1), "--name", "acme/x")[
        "cid"
    ]
    # It asks for the swarm by its name, as a member would, with another CA's certificate.
    assert _download(a, cid, _foreign_member(), tmp_path / "x", seconds=4) == 0
    wait_for("the swarm's count", lambda: _rejected(a, "swarm") >= 1)
    reasons = {r["reason"] for r in a.status()["rejected"] if r["plane"] == "swarm"}
    assert reasons == {"a certificate of another network"}, reasons
