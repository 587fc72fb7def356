"""The control plane's listening socket: TLS handshakes, connection limits and slow
clients are dealt with here, before aiohttp sees a connection. (The metrics
listener uses it without TLS, for its limits: plain HTTP, plane ``metrics``.)

aiohttp's own listener (``TCPSite``) hands TLS to asyncio, which drops a failed
handshake without a word and waits up to a minute for one that never ends; and
nothing limits how many connections one peer holds. Here each accepted
connection is admitted against :class:`ServerLimits` (in total and per source
address), upgraded with ``loop.start_tls`` under a timeout, and only then given
to aiohttp's request handler. What is refused or cut off is reported to
:class:`~sovnet.net.rejections.Rejections`:

- a TLS handshake that failed (no certificate, another network's, not TLS at all)
  or did not end within ``handshake_timeout``;
- a connection over ``max_connections`` or ``max_connections_per_peer``;
- a request whose headers were still arriving ``header_timeout`` after the
  connection opened or its previous response went out (aiohttp's keep-alive
  timer closes it; a connection that merely idles is closed the same way, and
  not counted);
- a request not handled within ``request_timeout`` (its body too slow), by the
  middleware of :func:`request_deadline`.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from sovnet.net.rejections import CONTROL, Rejections, handshake_reason


@dataclass(frozen=True)
class ServerLimits:
    handshake_timeout: float = 10.0
    header_timeout: float = 10.0
    request_timeout: float = 30.0
    max_connections: int = 512
    max_connections_per_peer: int = 64


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return handshake_reason("timed out")
    if isinstance(exc, ConnectionError) and not str(exc):
        return handshake_reason("connection lost")
    return handshake_reason(f"{getattr(exc, 'reason', '') or ''} {exc}".strip())


def request_deadline(listener: GatedListener) -> Middleware:
    """aiohttp middleware: a request (body included) handled within its deadline."""

    @web.middleware
    async def deadline(
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        listener.request_boundary(request.transport)
        try:
            async with asyncio.timeout(listener.limits.request_timeout):
                return await handler(request)
        except TimeoutError:
            listener.rejections.record(
                listener.plane,
                request.remote or "?",
                f"request not complete within {listener.limits.request_timeout:g} s",
            )
            response = web.Response(status=408, text="too slow")
            response.force_close()  # what is left of its body is not waited for
            return response
        finally:
            listener.request_boundary(request.transport)

    return deadline


class GatedListener:
    """Listens on HOST:PORT; hands each admitted, TLS-upgraded connection to
    ``handler_factory`` (an aiohttp ``web.Server``)."""

    def __init__(
        self,
        context: ssl.SSLContext | None,
        limits: ServerLimits,
        rejections: Rejections,
        plane: str = CONTROL,
    ) -> None:
        self.handler_factory: Callable[[], asyncio.Protocol] | None = None  # set by start()
        self.context = context  # None: plain TCP, no handshake
        self.plane = plane  # what refusals are counted under
        self.limits = limits
        self.rejections = rejections
        self.per_peer: dict[str, int] = {}
        self.total = 0
        self.gates: set[_Gate] = set()
        self._by_transport: dict[int, _Gate] = {}  # id(TLS transport) -> its gate
        self._server: asyncio.Server | None = None

    def request_boundary(self, transport: asyncio.BaseTransport | None) -> None:
        """A request began or ended on ``transport``: what arrives from now on
        belongs to the next one."""
        gate = self._by_transport.get(id(transport))
        if gate is not None:
            gate.partial = 0

    async def start(
        self, handler_factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> int:
        self.handler_factory = handler_factory
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Gate(self), host or None, port, reuse_address=True
        )
        sockets: tuple[Any, ...] = tuple(self._server.sockets or ())
        return int(sockets[0].getsockname()[1]) if sockets else port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        # Connections still in their handshake go now; the others are aiohttp's,
        # which lets their requests finish within its shutdown timeout.
        for gate in list(self.gates):
            if not gate.handed_over:
                gate.abort()

    def admit(self, source: str) -> bool:
        if self.total >= self.limits.max_connections:
            self.rejections.record(self.plane, source, "too many connections in total")
            return False
        if self.per_peer.get(source, 0) >= self.limits.max_connections_per_peer:
            self.rejections.record(self.plane, source, "too many connections from one address")
            return False
        self.total += 1
        self.per_peer[source] = self.per_peer.get(source, 0) + 1
        return True

    def release(self, source: str) -> None:
        self.total -= 1
        left = self.per_peer.get(source, 1) - 1
        if left > 0:
            self.per_peer[source] = left
        else:
            self.per_peer.pop(source, None)


class _Gate(asyncio.Protocol):
    """One connection: admitted, TLS-upgraded, then a relay to aiohttp's handler
    (which sees the TLS transport as its own)."""

    def __init__(self, listener: GatedListener) -> None:
        self._listener = listener
        self._raw: asyncio.Transport | None = None
        self._tls: asyncio.Transport | None = None
        self._inner: asyncio.Protocol | None = None
        self._source = "?"
        self._admitted = False
        self._early: list[bytes] = []
        self.partial = 0  # bytes received since the last request began or ended
        self._eof = False  # the client closed its side
        self._aborted = False  # closed from here (shutdown, refused)
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._raw is not None:
            return  # start_tls's SSL transport: the relay begins in _upgrade
        assert isinstance(transport, asyncio.Transport)
        self._raw = transport
        peer = transport.get_extra_info("peername")
        self._source = str(peer[0]) if peer else "?"
        if not self._listener.admit(self._source):
            transport.abort()
            return
        self._admitted = True
        self._listener.gates.add(self)
        # Nothing is read before the TLS layer is in place to read it.
        transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._upgrade())

    async def _upgrade(self) -> None:
        assert self._raw is not None
        listener = self._listener
        loop = asyncio.get_running_loop()
        if listener.context is None:  # plain: this relay stays the socket's protocol
            tls: asyncio.Transport | None = self._raw
            self._raw.resume_reading()
        else:
            try:
                tls = await loop.start_tls(
                    self._raw,
                    self,
                    listener.context,
                    server_side=True,
                    ssl_handshake_timeout=listener.limits.handshake_timeout,
                )
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                listener.rejections.record(listener.plane, self._source, _reason(exc))
                self.abort()
                return
        if tls is None or tls.is_closing():
            self.abort()
            return
        self._tls = tls
        listener._by_transport[id(tls)] = self
        assert listener.handler_factory is not None
        self._inner = listener.handler_factory()
        self._inner.connection_made(tls)
        early, self._early = self._early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            self._early.append(data)
            return
        self.partial += len(data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        # The client closed first (not: it answered our close with its own).
        self._eof = self._tls is None or not self._tls.is_closing()
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._admitted:
            return
        self._admitted = False
        self._listener.gates.discard(self)
        self._listener.release(self._source)
        if self._tls is not None:
            self._listener._by_transport.pop(id(self._tls), None)
        if self._inner is not None:
            if self.partial and exc is None and not self._eof and not self._aborted:
                # aiohttp's keep-alive timer closed it while a request's headers
                # were still arriving: a slow (or hostile) client cut off.
                self._listener.rejections.record(
                    self._listener.plane,
                    self._source,
                    "request headers not complete within "
                    f"{self._listener.limits.header_timeout:g} s",
                )
            self._inner.connection_lost(exc)

    @property
    def handed_over(self) -> bool:
        return self._inner is not None

    def abort(self) -> None:
        self._aborted = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
        transport = self._tls or self._raw
        if transport is not None:
            transport.abort()
        if self._inner is None:  # nobody else will hear of it: release it now
            self.connection_lost(None)
