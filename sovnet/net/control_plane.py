"""The real control plane: HTTPS between the members of a network (server and client)."""

from __future__ import annotations

from sovnet.core.address import PeerAddress
from sovnet.core.network import TlsFiles
from sovnet.net.control import PeerService
from sovnet.net.control_client import PeerClient
from sovnet.net.control_listener import ServerLimits
from sovnet.net.control_server import PeerServer
from sovnet.net.rejections import Rejections


class TlsControlPlane:
    """HTTPS between the members of a network, both ways certified by its CA."""

    def __init__(
        self,
        tls: TlsFiles,
        timeout: float,
        limits: ServerLimits | None = None,
        rejections: Rejections | None = None,
    ) -> None:
        self._tls = tls
        self._limits = limits
        self._rejections = rejections
        self._client = PeerClient(tls, timeout)
        self._server: PeerServer | None = None

    async def serve(self, service: PeerService, listen: PeerAddress) -> int:
        await self._client.__aenter__()
        self._server = PeerServer(service, self._tls, listen, self._limits, self._rejections)
        await self._server.start()
        return self._server.port

    @property
    def client(self) -> PeerClient:
        return self._client

    async def close(self) -> None:
        if self._server is not None:
            await self._server.close()
        await self._client.close()
