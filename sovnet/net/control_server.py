"""The control plane's server: answers the other members of the network (see control.py)."""

from __future__ import annotations

import logging

from aiohttp import web

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.manifest import ORG_PATTERN
from sovnet.core.network import TlsFiles
from sovnet.errors import InvalidCIDError, InvalidInputError
from sovnet.net.control import (
    MAX_LISTED_PEERS,
    MAX_REQUEST_BYTES,
    METADATA_NAME,
    PROTOCOL_VERSION,
    ManifestBytes,
    PeerService,
    server_context,
)
from sovnet.net.control_listener import GatedListener, ServerLimits, request_deadline
from sovnet.net.rejections import Rejections

log = logging.getLogger(__name__)


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


def build_app(service: PeerService, listener: GatedListener | None = None) -> web.Application:
    middlewares = [request_deadline(listener)] if listener is not None else []
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=middlewares)
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
        except (ValueError, KeyError, TypeError, RecursionError):  # a member may send anything
            raise web.HTTPBadRequest(text="expected {swarm_port, control_port}") from None
        host = request.remote or ""
        try:
            member = PeerAddress(host, swarm_port)
            service.learn_peer(PeerAddress(host, control_port), _peer_name(request))
        except InvalidInputError:
            raise web.HTTPBadRequest(text="bad address") from None
        reply = await service.announce(cid, member)
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

    @routes.get("/v1/publishers/{publisher}/{name}")
    async def publisher_file(request: web.Request) -> web.Response:
        publisher, name = request.match_info["publisher"], request.match_info["name"]
        if not (ORG_PATTERN.fullmatch(publisher) and METADATA_NAME.fullmatch(name)):
            raise web.HTTPBadRequest(text="expected /v1/publishers/ORG/N.ROLE.json")
        body = service.publisher_file(publisher, name)
        if body is None:
            raise web.HTTPNotFound(text="not here")
        return web.Response(body=body, content_type="application/json")

    @routes.post("/v1/hints/{publisher}")
    async def hint(request: web.Request) -> web.Response:
        publisher = request.match_info["publisher"]
        try:
            version = (await request.json())["version"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError("version")
        except (ValueError, KeyError, TypeError, RecursionError):  # a member may send anything
            raise web.HTTPBadRequest(text="expected {version}") from None
        if not ORG_PATTERN.fullmatch(publisher):
            raise web.HTTPBadRequest(text="expected /v1/hints/ORG")
        service.hint(publisher, version)
        return web.Response(status=200)

    @routes.get("/v1/peers")
    async def peers(request: web.Request) -> web.Response:
        listed = service.known_peers()[:MAX_LISTED_PEERS]
        return web.json_response({"peers": [str(p) for p in listed]})

    app.add_routes(routes)
    return app


class PeerServer:
    """The control plane's HTTPS listener (TLS, limits and timeouts in
    control_listener.py)."""

    def __init__(
        self,
        service: PeerService,
        tls: TlsFiles,
        listen: PeerAddress,
        limits: ServerLimits | None = None,
        rejections: Rejections | None = None,
    ) -> None:
        self.limits = limits or ServerLimits()
        self.rejections = rejections or Rejections()
        self._listener = GatedListener(server_context(tls), self.limits, self.rejections)
        self._app = build_app(service, self._listener)
        self._listen = listen
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            # A connection gets this long for a request's headers, from when it
            # opened or its last response went out (aiohttp's keep-alive timer).
            keepalive_timeout=self.limits.header_timeout,
            handler_cancellation=True,  # a client gone: its handler stops
            # A body left unread (a refused or timed-out request) is drained for at
            # most this long before the connection closes: a drip is not 10 s more.
            lingering_time=1.0,
        )
        await self._runner.setup()
        assert self._runner.server is not None
        self.port = await self._listener.start(
            self._runner.server, self._listen.host, self._listen.port
        )

    async def close(self) -> None:
        await self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
