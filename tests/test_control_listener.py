"""The control plane's listener against slow and greedy clients (issue #12, defect 9):
a real HTTPS server on 127.0.0.1 with the network's certificates, and clients that
connect and say nothing, drip a request's body, idle, or open too many connections.
tests/e2e/test_hostile_traffic.py has the same against a whole sovnetd."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sovnet.core.address import PeerAddress
from sovnet.net.control_client import PeerClient
from sovnet.net.control_listener import ServerLimits
from sovnet.net.control_server import PeerServer
from sovnet.net.rejections import Rejections
from sovnet.store.networkfiles import NetworkFiles
from tests.test_control_client import Holder

LOOPBACK = PeerAddress("127.0.0.1", 0)


@pytest.fixture
def network(tmp_path: Path) -> NetworkFiles:
    files = NetworkFiles(tmp_path / "node")
    files.create("lab", "node")
    return files


@pytest.fixture
async def serving(network: NetworkFiles) -> AsyncIterator[PeerServer]:
    limits = ServerLimits(
        handshake_timeout=1, header_timeout=1, request_timeout=1, max_connections_per_peer=4
    )
    server = PeerServer(Holder(b"x"), network.tls_files(), LOOPBACK, limits, Rejections())
    await server.start()
    try:
        yield server
    finally:
        await server.close()


def member(network: NetworkFiles) -> ssl.SSLContext:
    tls = network.tls_files()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(tls.cert_path, tls.key_path)
    return context


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(seconds):
        return await reader.read()


def reasons(server: PeerServer) -> dict[str, int]:
    return {r.reason: r.count for r in server.rejections.counts()}


async def test_a_connection_that_never_starts_its_handshake_is_cut_off(
    serving: PeerServer,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", serving.port)
    assert await closed_within(reader, 10) == b""
    writer.close()
    assert reasons(serving) == {"TLS handshake timed out": 1}


async def test_an_idle_connection_is_closed_and_not_counted_a_dripped_body_is(
    serving: PeerServer, network: NetworkFiles
) -> None:
    context = member(network)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", serving.port, ssl=context, server_hostname="x"
    )
    writer.write(b"GET /v1/node HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await closed_within(reader, 10)  # answered, then closed once idle
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200")
    assert reasons(serving) == {}

    reader, writer = await asyncio.open_connection(
        "127.0.0.1", serving.port, ssl=context, server_hostname="x"
    )
    cid = Holder(b"x").cid
    writer.write(
        f"POST /v1/models/{cid}/announce HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
    )
    dripping = asyncio.create_task(_drip(writer))
    try:
        answer = await closed_within(reader, 10)
    finally:
        dripping.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408")
    assert reasons(serving) == {"request not complete within 1 s": 1}


async def _drip(writer: asyncio.StreamWriter) -> None:
    while True:
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(0.2)


async def test_connections_over_the_limit_from_one_address_are_refused(
    serving: PeerServer, network: NetworkFiles
) -> None:
    held = [await asyncio.open_connection("127.0.0.1", serving.port) for _ in range(4)]
    reader, writer = await asyncio.open_connection("127.0.0.1", serving.port)
    assert await closed_within(reader, 0.9) == b""  # at once, not at the handshake's end
    writer.close()
    assert reasons(serving) == {"too many connections from one address": 1}
    for _, held_writer in held:
        held_writer.close()
    await asyncio.sleep(0.1)
    async with PeerClient(network.tls_files(), timeout=5) as client:
        assert (await client.node(PeerAddress("127.0.0.1", serving.port))).name == "holder"
