"""The control plane between nodes: HTTPS with client certificates.

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

This module holds what both ends share: the protocols a node serves and asks
through, the values that cross, and the TLS contexts. control_server.py answers
(aiohttp.web), control_client.py asks (aiohttp), control_plane.py joins the two.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.network import TlsFiles

MAX_JSON_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024
MAX_LISTED_PEERS = 200
MAX_METADATA_BYTES = 8 * 1024 * 1024  # a publisher's metadata file (targets is the largest)
# The names a publisher's metadata files have (TUF's, with consistent snapshots).
METADATA_NAME = re.compile(
    r"(?:[1-9][0-9]{0,8}\.(?:root|snapshot|targets|advisories)|timestamp)\.json"
)
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


# -- what is asked and answered ----------------------------------------------------------


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

    async def announce(self, cid: CID, member: PeerAddress) -> AnnounceReply | None: ...

    def known_peers(self) -> list[PeerAddress]: ...

    def learn_peer(self, address: PeerAddress, name: str) -> None: ...

    def hint(self, publisher: str, version: int) -> None:
        """A peer hands on ``version`` of ``publisher``'s timestamp now (a nudge to
        refresh; never trusted)."""
        ...

    def publisher_file(self, publisher: str, name: str) -> bytes | None:
        """A file of a publisher's TUF metadata (``N.root.json``, ``timestamp.json``,
        ``N.snapshot.json``, ``N.targets.json``) this node holds, unverified by the
        asker: the TUF client that fetches it verifies it from the root it pinned."""
        ...


class PeerQueries(Protocol):
    """What a node asks other nodes' control planes (:class:`PeerClient` does it)."""

    async def manifest(self, peer: PeerAddress, cid: CID) -> tuple[bytes, bytes] | None: ...

    async def announce(
        self, peer: PeerAddress, cid: CID, swarm_port: int, control_port: int
    ) -> AnnounceReply | None: ...

    async def peers(self, peer: PeerAddress) -> list[PeerAddress]: ...

    async def node(self, peer: PeerAddress) -> RemoteNode:
        """Who listens at ``peer`` (answering at all proves it is a member)."""
        ...

    async def publisher_file(self, peer: PeerAddress, publisher: str, name: str) -> bytes | None:
        """A publisher's metadata file from ``peer`` (None: it has none by that name)."""
        ...

    async def hint(self, peer: PeerAddress, publisher: str, version: int) -> None:
        """Tell ``peer`` this node hands on ``version`` of ``publisher``'s timestamp."""
        ...

    async def models(self, peer: PeerAddress) -> list[tuple[CID, bool]]:
        """The models ``peer`` holds, and whether each is complete there."""
        ...


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


class PeerRequestError(Exception):
    """A peer could not be asked (unreachable, refused our certificate, timed out,
    or answered outside the protocol). Never about content: that is the gate's job."""


@dataclass(frozen=True)
class RemoteNode:
    name: str
    swarm_port: int
    control_port: int


MAX_CONCURRENT_REQUESTS = 32  # to other peers at once, from one round of asking


async def gather_bounded(
    calls: list[Callable[[], Awaitable[Any]]], limit: int = MAX_CONCURRENT_REQUESTS
) -> list[Any | PeerRequestError]:
    """Run ``calls`` concurrently, at most ``limit`` at a time; a PeerRequestError
    becomes a result, not a crash."""
    slots = asyncio.Semaphore(limit)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with slots:
            try:
                return await call()
            except PeerRequestError as exc:
                return exc

    return list(await asyncio.gather(*(one(c) for c in calls)))
