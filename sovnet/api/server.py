"""The local API: HTTP on a Unix socket (mode 0600), for the CLI and local tools.

    GET    /v1/status                  the node: network, ports, fetches, bans, ...
    GET    /v1/models                  stored models with what they uploaded
    POST   /v1/models                  publish {path, name, version?, license?, copy?}  (stream)
    DELETE /v1/models/{cid}            stop seeding and remove
    POST   /v1/fetch                   fetch {cid or ORG/MODEL[:CH|@V], peers?}     (stream)
    GET    /v1/releases                what pinned publisher roots released, and holders
    GET    /v1/peers                   known peers
    POST   /v1/peers                   {address}
    DELETE /v1/peers/{address}

The server serves a :class:`NodeService` (daemon/node.py implements it), and
speaks the messages of messages.py.

Streams are NDJSON: progress objects (``{"event": ...}``), then one
``{"event": "result", ...}`` or ``{"event": "error", "error": {...}}``. Other
errors are ``{"error": {code, exit_code, message, hint}}`` with an HTTP status.
The socket's permissions are the access control: only the daemon's user (and
root) can connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from aiohttp import web

from sovnet.api.messages import (
    FetchEvent,
    FetchResult,
    GcResult,
    KnownPeer,
    Limits,
    MalformedMessage,
    MirrorStatus,
    NodeStatus,
    PeerRemoved,
    PublishEvent,
    PublishRequest,
    PublishResult,
    Releases,
    RemoveResult,
    SeedingStats,
    event_json,
    parse,
    to_json,
)
from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.errors import (
    DaemonError,
    InternalError,
    InvalidInputError,
    LocalStateError,
    SovnetError,
    unexpected,
)

log = logging.getLogger("sovnet.api.server")

MAX_REQUEST_BYTES = 64 * 1024
_STATUS = {3: 404, 4: 400, 5: 409, 6: 403, 7: 500, 8: 502, 9: 503}


def _error_response(error: SovnetError) -> web.Response:
    return web.json_response({"error": error.to_json()}, status=_STATUS.get(error.exit_code, 500))


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except SovnetError as exc:
        return _error_response(exc)
    except web.HTTPException:
        raise
    except Exception as exc:
        error = unexpected(exc)
        if isinstance(error, InternalError):
            log.exception("API %s %s failed", request.method, request.path)
        return _error_response(error)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        value = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        raise InvalidInputError("the request body is not JSON") from None
    if not isinstance(value, dict):
        raise InvalidInputError("the request body must be a JSON object")
    return value


class NodeService(Protocol):
    """What the local API serves; daemon/node.py implements it."""

    def status(self) -> NodeStatus: ...

    def seeding(self) -> dict[str, SeedingStats]: ...

    async def publish(
        self, request: PublishRequest, emit: Callable[[PublishEvent], None]
    ) -> PublishResult: ...

    async def remove(self, cid: CID) -> RemoveResult: ...

    async def fetch(
        self, cid: CID, peers: Iterable[PeerAddress], emit: Callable[[FetchEvent], None]
    ) -> FetchResult: ...

    async def fetch_release(
        self, ref: str, peers: Iterable[PeerAddress], emit: Callable[[FetchEvent], None]
    ) -> FetchResult: ...

    def peers(self) -> list[KnownPeer]: ...

    async def releases(self) -> Releases: ...

    def mirror_status(self) -> MirrorStatus: ...

    def limits(self) -> Limits: ...

    def set_limits(self, changes: Mapping[str, int]) -> Limits: ...

    async def gc(self, *, dry_run: bool = False) -> GcResult: ...

    def add_peer(self, address: PeerAddress) -> KnownPeer: ...

    def remove_peer(self, address: PeerAddress) -> PeerRemoved: ...


def _json(message: object) -> web.Response:
    return web.json_response(to_json(message))


async def _stream(
    request: web.Request,
    work: Callable[[Callable[[object], None]], Awaitable[object]],
    *,
    ends_with_client: bool = False,
) -> web.StreamResponse:
    """Run ``work``, streaming the events it emits and then its result (or error).
    If the client goes away first, ``work`` goes on (a fetch: others may follow it),
    or, ``ends_with_client``, is cancelled (a publish: its user pressed Ctrl-C)."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def run() -> None:
        try:
            result = await work(lambda event: queue.put_nowait(event_json(event)))
            queue.put_nowait({"event": "result", **to_json(result)})
        except SovnetError as exc:
            queue.put_nowait({"event": "error", "error": exc.to_json()})
        except asyncio.CancelledError:
            queue.put_nowait(
                {"event": "error", "error": DaemonError("sovnetd is stopping").to_json()}
            )
            raise
        except Exception as exc:
            error = unexpected(exc)
            if isinstance(error, InternalError):
                log.exception("API %s failed", request.path)
            queue.put_nowait({"event": "error", "error": error.to_json()})
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(run())
    try:
        while (event := await queue.get()) is not None:
            await response.write((json.dumps(event) + "\n").encode())
    except (ConnectionResetError, asyncio.CancelledError):
        # The client went away.
        if ends_with_client and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)  # its worker stopped, its temp files removed
            if task.cancelled():
                return response  # no one is left to answer
    if task.done():
        await task
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


def build_app(node: NodeService) -> web.Application:
    app = web.Application(client_max_size=MAX_REQUEST_BYTES, middlewares=[_errors])
    routes = web.RouteTableDef()

    @routes.get("/v1/status")
    async def status(request: web.Request) -> web.Response:
        return _json(node.status())

    @routes.get("/v1/models")
    async def models(request: web.Request) -> web.Response:
        seeding = {cid: to_json(stats) for cid, stats in node.seeding().items()}
        return web.json_response({"seeding": seeding})

    @routes.post("/v1/models")
    async def publish(request: web.Request) -> web.StreamResponse:
        body = from_request(PublishRequest, await _body(request))
        return await _stream(request, lambda emit: node.publish(body, emit), ends_with_client=True)

    @routes.delete("/v1/models/{cid}")
    async def remove(request: web.Request) -> web.Response:
        return _json(await node.remove(CID.parse(request.match_info["cid"])))

    @routes.post("/v1/fetch")
    async def fetch(request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        ref = str(body.get("cid", ""))
        peers = [PeerAddress.parse(str(p)) for p in body.get("peers") or []]
        if "/" in ref:  # ORG/MODEL[:CHANNEL|@VERSION]: a release of a pinned root
            return await _stream(request, lambda emit: node.fetch_release(ref, peers, emit))
        cid = CID.parse(ref)
        return await _stream(request, lambda emit: node.fetch(cid, peers, emit))

    @routes.get("/v1/releases")
    async def releases(request: web.Request) -> web.Response:
        return _json(await node.releases())

    @routes.post("/v1/gc")
    async def gc(request: web.Request) -> web.Response:
        body = await _body(request)
        return _json(await node.gc(dry_run=body.get("dry_run") is True))

    @routes.get("/v1/limits")
    async def limits(request: web.Request) -> web.Response:
        return _json(node.limits())

    @routes.post("/v1/limits")
    async def set_limits(request: web.Request) -> web.Response:
        return _json(node.set_limits(await _body(request)))

    @routes.get("/v1/mirror")
    async def mirror(request: web.Request) -> web.Response:
        return _json(node.mirror_status())

    @routes.get("/v1/peers")
    async def peers(request: web.Request) -> web.Response:
        return web.json_response({"peers": [to_json(p) for p in node.peers()]})

    @routes.post("/v1/peers")
    async def add_peer(request: web.Request) -> web.Response:
        address = PeerAddress.parse(str((await _body(request)).get("address", "")))
        return _json(node.add_peer(address))

    @routes.delete("/v1/peers/{address}")
    async def remove_peer(request: web.Request) -> web.Response:
        return _json(node.remove_peer(PeerAddress.parse(request.match_info["address"])))

    app.add_routes(routes)
    return app


M = TypeVar("M")


def from_request(cls: type[M], body: dict[str, Any]) -> M:
    """A request body as a message; InvalidInputError (400) if it does not fit."""
    try:
        return parse(cls, body)
    except MalformedMessage as exc:
        raise InvalidInputError(f"the request is a malformed {cls.__name__}: {exc}") from None


def claim_socket(path: Path) -> None:
    """Remove a stale socket file; refuse if a daemon answers on it."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # left by a daemon that died
        return
    except OSError as exc:
        raise LocalStateError(f"cannot use the API socket {path}: {exc.strerror}") from exc
    finally:
        probe.close()
    raise LocalStateError(
        f"another sovnetd is already running with the API socket {path}",
        hint="stop it first, or give this one another --state-dir / --socket",
    )


class ApiServer:
    def __init__(self, node: NodeService, path: Path) -> None:
        self._app = build_app(node)
        self._path = path
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if len(os.fsencode(self._path)) > 107:
            raise LocalStateError(
                f"the API socket path is too long for a Unix socket: {self._path}",
                hint="set a shorter one with --socket or SOVNET_SOCKET",
            )
        self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        claim_socket(self._path)
        self._runner = web.AppRunner(
            self._app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        # The process umask (0077, set by daemon.py) already makes the socket 0600
        # at bind; the chmod states it.
        await web.UnixSite(self._runner, str(self._path)).start()
        os.chmod(self._path, 0o600)

    async def close(self) -> None:
        if self._runner is None:
            return  # never bound: the socket (if any) is another daemon's
        await self._runner.cleanup()
        self._runner = None
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
