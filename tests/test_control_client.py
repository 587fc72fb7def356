"""The control plane's client against a real server, HTTPS on 127.0.0.1 with the
network's certificates: what it reads, how much, and what it says when a peer is
slow or sends too much (issue #12: manifests over ~64 KiB were cut short)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.net.control import (
    AnnounceReply,
    ManifestBytes,
    PeerRequestError,
    client_context,
    server_context,
)
from sovnet.net.control_client import PeerClient
from sovnet.net.control_server import PeerServer
from sovnet.store.networkfiles import NetworkFiles

LOOPBACK = PeerAddress("127.0.0.1", 0)


class Holder:
    """A PeerService that holds one manifest of the given bytes."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.cid = CID.of(raw)
        self.metadata: dict[str, bytes] = {}  # a publisher's files, by "ORG/NAME"
        self.hints: list[tuple[str, int]] = []

    def node_info(self) -> dict[str, object]:
        return {"name": "holder", "swarm_port": 1, "control_port": 2, "version": "0"}

    def held(self) -> list[tuple[CID, bool]]:
        return [(self.cid, True)]

    def manifest(self, cid: CID) -> ManifestBytes | None:
        return ManifestBytes(self.raw, b"", True) if cid == self.cid else None

    async def announce(self, cid: CID, member: PeerAddress) -> AnnounceReply | None:
        return None

    def known_peers(self) -> list[PeerAddress]:
        return []

    def hint(self, publisher: str, version: int) -> None:
        self.hints.append((publisher, version))

    def learn_peer(self, address: PeerAddress, name: str) -> None:
        pass

    def publisher_file(self, publisher: str, name: str) -> bytes | None:
        return self.metadata.get(f"{publisher}/{name}")


@pytest.fixture
def network(tmp_path: Path) -> NetworkFiles:
    files = NetworkFiles(tmp_path / "node")
    files.create("lab", "node")
    return files


@pytest.fixture
async def client(network: NetworkFiles) -> AsyncIterator[PeerClient]:
    async with PeerClient(network.tls_files(), timeout=2.0) as peer_client:
        yield peer_client


async def _serving(network: NetworkFiles, service: Holder) -> tuple[PeerServer, PeerAddress]:
    server = PeerServer(service, network.tls_files(), LOOPBACK)
    await server.start()
    return server, PeerAddress("127.0.0.1", server.port)


@pytest.mark.parametrize("size", [1024, 64 * 1024 + 1, 1024 * 1024])
async def test_a_manifest_of_any_size_within_the_limit_arrives_whole(
    network: NetworkFiles, client: PeerClient, size: int
) -> None:
    holder = Holder(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    server, address = await _serving(network, holder)
    try:
        got = await client.manifest(address, holder.cid)
    finally:
        await server.close()
    assert got is not None
    assert got[0] == holder.raw  # every byte: it hashes to the CID


async def _raw_server(
    network: NetworkFiles, handler: object, path: str = "/v1/models/{cid}/manifest"
) -> tuple[web.AppRunner, PeerAddress]:
    app = web.Application()
    app.router.add_get(path, handler)  # type: ignore[arg-type]
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(network.tls_files()))
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, PeerAddress("127.0.0.1", port)


async def test_a_reply_over_the_limit_is_refused_as_too_large(
    network: NetworkFiles, client: PeerClient
) -> None:
    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(20):  # 20 MiB, more than a manifest may be
            await response.write(b"\0" * (1024 * 1024))
        return response

    runner, address = await _raw_server(network, huge)
    try:
        with pytest.raises(PeerRequestError, match="sent more than 8388608 bytes"):
            await client.manifest(address, CID.of(b"x"))
    finally:
        await runner.cleanup()


async def test_a_peer_that_drips_is_refused_as_timed_out(
    network: NetworkFiles, client: PeerClient
) -> None:
    async def drip(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(100):
            await response.write(b"{")
            await asyncio.sleep(0.1)
        return response

    runner, address = await _raw_server(network, drip)
    try:
        with pytest.raises(PeerRequestError, match=r"127\.0\.0\.1:\d+: no answer within"):
            await client.manifest(address, CID.of(b"x"))
    finally:
        await runner.cleanup()


NESTED = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's parser recurses


async def test_json_nested_deeper_than_python_goes_is_malformed_not_a_crash(
    network: NetworkFiles, client: PeerClient
) -> None:
    async def nested(request: web.Request) -> web.Response:
        return web.Response(body=NESTED, content_type="application/json")

    runner, address = await _raw_server(network, nested, "/v1/peers")
    try:
        with pytest.raises(PeerRequestError, match="sent malformed JSON"):
            await client.peers(address)
    finally:
        await runner.cleanup()


async def test_a_member_announcing_nested_json_gets_400_and_no_traceback(
    network: NetworkFiles, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder(b"{}")
    server, address = await _serving(network, holder)
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(network.tls_files()))
        ) as session:
            url = f"https://{address}/v1/models/{holder.cid}/announce"
            # 10 KB: within the request size a member may send, and too deep
            body = b"[" * 5000 + b"]" * 5000
            async with session.post(url, data=body) as response:
                assert response.status == 400
    finally:
        await server.close()
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


async def test_a_publisher_s_metadata_files_are_served_by_their_tuf_names(
    network: NetworkFiles, client: PeerClient
) -> None:
    holder = Holder(b"{}")
    holder.metadata = {"acme/1.root.json": b'{"root": 1}', "acme/timestamp.json": b"{}"}
    server, address = await _serving(network, holder)
    try:
        assert await client.publisher_file(address, "acme", "1.root.json") == b'{"root": 1}'
        assert await client.publisher_file(address, "acme", "timestamp.json") == b"{}"
        assert await client.publisher_file(address, "acme", "2.root.json") is None
        assert await client.publisher_file(address, "other", "1.root.json") is None
        for name in ("0.root.json", "root.json", "1.keys.json", "-1.root.json"):
            with pytest.raises(PeerRequestError):  # 400: not a name a TUF client asks for
                await client.publisher_file(address, "acme", name)
        assert await client.publisher_file(address, "..", "1.root.json") is None
    finally:
        await server.close()


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:9/v1/node",  # another address, plain HTTP: not followed
        "https://" + "a" * 300 + ".example/",  # a host name idna refuses: not a crash
    ],
)
async def test_a_peer_that_redirects_is_a_failed_request_never_followed(
    network: NetworkFiles, client: PeerClient, location: str
) -> None:
    asked: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        asked.append(request.path)
        raise web.HTTPFound(location)

    runner, address = await _raw_server(network, elsewhere, "/v1/node")
    try:
        with pytest.raises(PeerRequestError, match="answered HTTP 302"):
            await client.node(address)
    finally:
        await runner.cleanup()
    assert asked == ["/v1/node"]


async def test_a_hint_reaches_the_service_and_a_malformed_one_is_refused(
    network: NetworkFiles, client: PeerClient
) -> None:
    holder = Holder(b"{}")
    server, address = await _serving(network, holder)
    try:
        await client.hint(address, "acme", 7)
        assert holder.hints == [("acme", 7)]
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_context(network.tls_files()))
        ) as session:
            for path, body in [
                ("/v1/hints/acme", b'{"version": "7"}'),
                ("/v1/hints/acme", b'{"version": true}'),
                ("/v1/hints/acme", b'{"version": 0}'),
                ("/v1/hints/acme", b"[" * 5000 + b"]" * 5000),
                ("/v1/hints/ac%2Fme", b'{"version": 7}'),
                ("/v1/hints/-acme", b'{"version": 7}'),
            ]:
                async with session.post(f"https://{address}{path}", data=body) as response:
                    assert response.status in (400, 404), (path, body)
    finally:
        await server.close()
    assert holder.hints == [("acme", 7)]  # nothing malformed reached the service
