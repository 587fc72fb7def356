"""The control plane between nodes: HTTPS with client certificates (aiohttp).

Both ends present a certificate issued by the network's CA and check the
other's against it, so only members of the network can ask anything or be
asked. Being a member makes a peer someone we talk to, never someone whose
content we believe: a manifest fetched here still goes through the trust gate
(trust.open_manifest) before anything acts on it.

    GET  /v1/node                        {"name", "swarm_port", "control_port", "version"}
    GET  /v1/models                      {"models": [{"cid", "complete"}]}
    GET  /v1/models/{cid}/manifest       the manifest's exact bytes (404 if not here)
    GET  /v1/models/{cid}/signatures     its signature bundle
    POST /v1/models/{cid}/announce       {"swarm_port", "control_port"} ->
                                         {"holder", "complete", "swarm_port", "members"}
    GET  /v1/peers                       {"peers": ["HOST:PORT", ...]} (control addresses)

Announcing says "I am in the swarm of this CID at this port"; the answer lists
the other nodes that said so recently, which is how the nodes fetching one
model find each other and share pieces. Every response is size-limited and
every request timed out; a peer that breaks either is simply skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.manifest import MAX_MANIFEST_BYTES
from sovnet.core.network import TlsFiles
from sovnet.core.signing import MAX_BUNDLE_BYTES
from sovnet.errors import InvalidCIDError, InvalidInputError

log = logging.getLogger("sovnet.net.control")

MAX_JSON_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024
MAX_LISTED_PEERS = 200
PROTOCOL_VERSION = 1


# -- TLS ------------------------------------------------------------------------------


def server_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED  # no certificate from our CA, no answer
    context.load_verify_locations(cadata=tls.ca_pem.decode("ascii"))
    context.load_cert_chain(tls.cert_path, tls.key_path)
    return context


def client_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # Nodes are named in their certificates, not by host names, and addresses
    # change; membership is what the CA attests, so that is what is checked.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata=tls.ca_pem.decode("ascii"))
    context.load_cert_chain(tls.cert_path, tls.key_path)
    return context


# -- the server ------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestBytes:
    raw: bytes
    bundle: bytes
    complete: bool


@dataclass(frozen=True)
class AnnounceReply:
    holder: bool
    complete: bool
    swarm_port: int
    members: tuple[PeerAddress, ...]


class PeerService(Protocol):
    """What the control plane serves; node.py implements it."""

    def node_info(self) -> dict[str, object]: ...

    def held(self) -> list[tuple[CID, bool]]: ...

    def manifest(self, cid: CID) -> ManifestBytes | None: ...

    def announce(self, cid: CID, member: PeerAddress) -> AnnounceReply | None: ...

    def known_peers(self) -> list[PeerAddress]: ...

    def learn_peer(self, address: PeerAddress, name: str) -> None: ...


class PeerQueries(Protocol):
    """What a node asks other nodes' control planes (:class:`PeerClient` does it)."""

    async def manifest(self, peer: PeerAddress, cid: CID) -> tuple[bytes, bytes] | None: ...

    async def announce(
        self, peer: PeerAddress, cid: CID, swarm_port: int, control_port: int
    ) -> AnnounceReply | None: ...

    async def peers(self, peer: PeerAddress) -> list[PeerAddress]: ...


class ControlPlane(Protocol):
    """The control plane as a node uses it: it serves a :class:`PeerService` and asks
    other nodes. :class:`TlsControlPlane` is the real one (HTTPS, client certificates);
    tests have one in memory."""

    async def serve(self, service: PeerService, listen: PeerAddress) -> int:
        """Start serving ``service``; the port it listens on."""
        ...

    @property
    def client(self) -> PeerQueries: ...

    async def close(self) -> None: ...


def _peer_name(request: web.Request) -> str:
    cert = request.transport.get_extra_info("peercert") if request.transport else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return "?"


def _cid(request: web.Request) -> CID:
    try:
        return CID.parse(request.match_info["cid"])
    except InvalidCIDError as exc:
        raise web.HTTPBadRequest(text=exc.message) from None


def build_app(service: PeerService) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    routes = web.RouteTableDef()

    @routes.get("/v1/node")
    async def node(request: web.Request) -> web.Response:
        return web.json_response({**service.node_info(), "protocol": PROTOCOL_VERSION})

    @routes.get("/v1/models")
    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {"models": [{"cid": str(c), "complete": done} for c, done in service.held()]}
        )

    def held_manifest(request: web.Request) -> ManifestBytes:
        found = service.manifest(_cid(request))
        if found is None:
            raise web.HTTPNotFound(text="not here")
        return found

    @routes.get("/v1/models/{cid}/manifest")
    async def manifest(request: web.Request) -> web.Response:
        body = held_manifest(request).raw
        return web.Response(body=body, content_type="application/octet-stream")

    @routes.get("/v1/models/{cid}/signatures")
    async def signatures(request: web.Request) -> web.Response:
        body = held_manifest(request).bundle
        return web.Response(body=body, content_type="application/octet-stream")

    @routes.post("/v1/models/{cid}/announce")
    async def announce(request: web.Request) -> web.Response:
        cid = _cid(request)
        try:
            body = await request.json()
            swarm_port = body["swarm_port"]
            control_port = body["control_port"]
            if not all(
                isinstance(p, int) and not isinstance(p, bool) and 0 < p < 65536
                for p in (swarm_port, control_port)
            ):
                raise ValueError("ports")
        except (ValueError, KeyError, TypeError):
            raise web.HTTPBadRequest(text="expected {swarm_port, control_port}") from None
        host = request.remote or ""
        try:
            member = PeerAddress(host, swarm_port)
            service.learn_peer(PeerAddress(host, control_port), _peer_name(request))
        except InvalidInputError:
            raise web.HTTPBadRequest(text="bad address") from None
        reply = service.announce(cid, member)
        if reply is None:
            raise web.HTTPNotFound(text="not here")
        return web.json_response(
            {
                "holder": reply.holder,
                "complete": reply.complete,
                "swarm_port": reply.swarm_port,
                "members": [str(m) for m in reply.members[:MAX_LISTED_PEERS]],
            }
        )

    @routes.get("/v1/peers")
    async def peers(request: web.Request) -> web.Response:
        listed = service.known_peers()[:MAX_LISTED_PEERS]
        return web.json_response({"peers": [str(p) for p in listed]})

    app.add_routes(routes)
    return app


class PeerServer:
    """The control plane's HTTPS listener."""

    def __init__(self, service: PeerService, tls: TlsFiles, listen: PeerAddress) -> None:
        self._app = build_app(service)
        self._tls = tls
        self._listen = listen
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._listen.host,
            self._listen.port,
            ssl_context=server_context(self._tls),
            shutdown_timeout=1.0,
        )
        await site.start()
        server = site._server  # aiohttp exposes the bound port only here
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self._listen.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# -- the client ------------------------------------------------------------------------


class PeerRequestError(Exception):
    """A peer could not be asked (unreachable, refused our certificate, timed out,
    or answered outside the protocol). Never about content: that is the gate's job."""


@dataclass(frozen=True)
class RemoteNode:
    name: str
    swarm_port: int
    control_port: int


class PeerClient:
    """Asks other nodes, each request bounded in time and size."""

    def __init__(self, tls: TlsFiles, timeout: float) -> None:
        self._context = client_context(tls)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PeerClient:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._context, limit=64),
            timeout=self._timeout,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        peer: PeerAddress,
        path: str,
        limit: int,
        body: Mapping[str, object] | None = None,
    ) -> bytes | None:
        """The response body (None on 404); PeerRequestError on anything else."""
        if self._session is None:
            raise RuntimeError("PeerClient used outside 'async with'")
        host = f"[{peer.host}]" if ":" in peer.host else peer.host
        url = f"https://{host}:{peer.port}{path}"
        try:
            async with self._session.request(method, url, json=body) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise PeerRequestError(f"{peer} answered HTTP {response.status}")
                data = await response.content.read(limit + 1)
                if len(data) > limit:
                    raise PeerRequestError(f"{peer} sent more than {limit} bytes")
                return data
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PeerRequestError(f"{peer}: its certificate is not from this network") from exc
        except aiohttp.ClientSSLError as exc:
            raise PeerRequestError(f"{peer}: TLS failed ({exc})") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise PeerRequestError(f"{peer}: {exc or type(exc).__name__}") from exc
        except TimeoutError as exc:
            raise PeerRequestError(f"{peer}: no answer within the timeout") from exc

    async def _json(
        self, method: str, peer: PeerAddress, path: str, body: Mapping[str, object] | None = None
    ) -> dict[str, Any] | None:
        data = await self._request(method, peer, path, MAX_JSON_BYTES, body)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except ValueError as exc:
            raise PeerRequestError(f"{peer} sent malformed JSON") from exc
        if not isinstance(value, dict):
            raise PeerRequestError(f"{peer} sent JSON that is not an object")
        return value

    async def node(self, peer: PeerAddress) -> RemoteNode:
        value = await self._json("GET", peer, "/v1/node")
        try:
            assert value is not None
            return RemoteNode(
                name=str(value["name"])[:64],
                swarm_port=_port(value["swarm_port"]),
                control_port=_port(value["control_port"]),
            )
        except (AssertionError, KeyError, ValueError) as exc:
            raise PeerRequestError(f"{peer} sent a malformed node description") from exc

    async def manifest(self, peer: PeerAddress, cid: CID) -> tuple[bytes, bytes] | None:
        raw = await self._request("GET", peer, f"/v1/models/{cid}/manifest", MAX_MANIFEST_BYTES)
        if raw is None:
            return None
        bundle = await self._request("GET", peer, f"/v1/models/{cid}/signatures", MAX_BUNDLE_BYTES)
        return raw, bundle or b""

    async def announce(
        self, peer: PeerAddress, cid: CID, swarm_port: int, control_port: int
    ) -> AnnounceReply | None:
        value = await self._json(
            "POST",
            peer,
            f"/v1/models/{cid}/announce",
            {"swarm_port": swarm_port, "control_port": control_port},
        )
        if value is None:
            return None
        try:
            members = value["members"]
            if not isinstance(members, list):
                raise ValueError("members")
            return AnnounceReply(
                holder=bool(value["holder"]),
                complete=bool(value["complete"]),
                swarm_port=_port(value["swarm_port"]),
                members=tuple(PeerAddress.parse(str(m)) for m in members[:MAX_LISTED_PEERS]),
            )
        except (KeyError, ValueError, InvalidInputError) as exc:
            raise PeerRequestError(f"{peer} sent a malformed announce reply") from exc

    async def peers(self, peer: PeerAddress) -> list[PeerAddress]:
        value = await self._json("GET", peer, "/v1/peers")
        found: list[PeerAddress] = []
        for item in (value or {}).get("peers", [])[:MAX_LISTED_PEERS]:
            try:
                found.append(PeerAddress.parse(str(item)))
            except InvalidInputError:
                continue
        return found


def _port(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"bad port {value!r}")
    return value


async def gather_bounded(
    calls: list[Callable[[], Awaitable[Any]]],
) -> list[Any | PeerRequestError]:
    """Run ``calls`` concurrently; a PeerRequestError becomes a result, not a crash."""

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await call()
        except PeerRequestError as exc:
            return exc

    return list(await asyncio.gather(*(one(c) for c in calls)))


class TlsControlPlane:
    """HTTPS between the members of a network, both ways certified by its CA."""

    def __init__(self, tls: TlsFiles, timeout: float) -> None:
        self._tls = tls
        self._client = PeerClient(tls, timeout)
        self._server: PeerServer | None = None

    async def serve(self, service: PeerService, listen: PeerAddress) -> int:
        await self._client.__aenter__()
        self._server = PeerServer(service, self._tls, listen)
        await self._server.start()
        return self._server.port

    @property
    def client(self) -> PeerClient:
        return self._client

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
        await self._client.close()
