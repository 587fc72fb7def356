"""In-memory stand-ins for the daemon's two network seams, so that whole nodes run in
one test process in milliseconds: :class:`FakeSwarm` (the Swarm Protocol of
net/swarm.py) and :class:`LoopbackControlPlane` (net/control.py's ControlPlane).

They keep the contracts the daemon relies on, and no more: a download copies the
seeder's file bytes into the downloader's paths in blocks, as a swarm would, its
status and events (Finished, HashFailed, PeerBanned, ResumeSaved) follow what
happened, and resume data says which blocks are done. A seeder can be made to
send corrupt blocks (each one is a HashFailed, the third bans it). The real
libtorrent adapter and HTTPS control plane are tested by the e2e suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.manifest import ORG_PATTERN
from sovnet.core.network import TlsIdentity
from sovnet.core.torrent import TorrentSpec
from sovnet.net.control import (
    METADATA_NAME,
    AnnounceReply,
    PeerRequestError,
    PeerService,
    RemoteNode,
)
from sovnet.net.swarm import (
    Finished,
    HashFailed,
    PeerBanned,
    RateLimits,
    ResumeSaved,
    SwarmEvent,
    TransferStatus,
    VerifiedDownload,
)

BLOCK = 64 * 1024
BANNED_AFTER = 3  # corrupt blocks from one seeder before it is banned


@dataclass
class Network:
    """Every fake swarm and control plane of a test, by address."""

    swarms: dict[PeerAddress, FakeSwarm] = field(default_factory=dict)
    services: dict[PeerAddress, PeerService] = field(default_factory=dict)
    corrupt: set[PeerAddress] = field(default_factory=set)  # swarms that send bad blocks
    block_delay: float = 0.0  # seconds a block takes: > 0 to catch a download midway
    next_port: int = 20000

    def port(self) -> int:
        self.next_port += 1
        return self.next_port


@dataclass
class _Download:
    spec: TorrentSpec
    paths: Mapping[int, Path]
    wanted: list[int]  # file positions to download
    done: dict[int, int]  # bytes done of each wanted file
    peers: set[PeerAddress]
    task: asyncio.Task[None] | None = None
    finished: bool = False
    received: int = 0  # bytes downloaded in this process
    failures: dict[PeerAddress, int] = field(default_factory=dict)


class FakeSwarm:
    def __init__(self, network: Network) -> None:
        self._network = network
        self._port = 0
        self._seeding: dict[bytes, Mapping[int, Path]] = {}
        self._downloads: dict[bytes, _Download] = {}
        self._events: asyncio.Queue[SwarmEvent] = asyncio.Queue()
        self.uploaded = 0

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> PeerAddress:
        return PeerAddress("127.0.0.1", self._port)

    @property
    def listen_problem(self) -> str | None:
        return None  # the fake network has no ports to be taken

    def set_limits(self, limits: RateLimits) -> None:
        self._limits = limits

    def limits(self) -> RateLimits:
        return getattr(self, "_limits", RateLimits())

    def totals(self) -> tuple[int, int]:
        statuses = self.statuses().values()
        return sum(s.session_downloaded for s in statuses), sum(
            s.session_uploaded for s in statuses
        )

    def class_totals(self) -> Mapping[str, tuple[int, int]]:
        return {"local": self.totals(), "global": (0, 0)}  # every fake peer is on loopback

    async def start(self) -> None:
        self._port = self._network.port()
        self._network.swarms[self.address] = self

    async def close(self) -> None:
        for info_hash, download in list(self._downloads.items()):
            if not download.finished:
                self._events.put_nowait(ResumeSaved(info_hash, self._resume(download)))
            await self._stop(download)
        self._network.swarms.pop(self.address, None)

    async def add(
        self,
        spec: TorrentSpec,
        *,
        identity: TlsIdentity,
        paths: Mapping[int, Path],
        seeding: bool,
        layers: Mapping[bytes, bytes] | None = None,
        resume: bytes | None = None,
        skip: Iterable[int] = (),
        peers: Iterable[PeerAddress] = (),
    ) -> None:
        if seeding:
            self._seeding[spec.info_hash] = paths
            return
        skipped = set(skip)
        wanted = [k for k in range(len(spec.files)) if k not in skipped]
        done = {k: 0 for k in wanted}
        if resume:
            for key, value in json.loads(resume)["done"].items():
                done[int(key)] = int(value)
        download = _Download(spec, paths, wanted, done, set(peers))
        self._downloads[spec.info_hash] = download
        download.task = asyncio.create_task(self._transfer(download))

    async def remove(self, info_hash: bytes) -> None:
        self._seeding.pop(info_hash, None)
        download = self._downloads.pop(info_hash, None)
        if download is not None:
            await self._stop(download)

    def connect(self, info_hash: bytes, peers: Iterable[PeerAddress]) -> None:
        if info_hash in self._downloads:
            self._downloads[info_hash].peers.update(peers)

    def save_resume(self, info_hash: bytes) -> bool:
        download = self._downloads.get(info_hash)
        if download is None:
            return False
        self._events.put_nowait(ResumeSaved(info_hash, self._resume(download)))
        return True

    async def verified_download(self, info_hash: bytes, spec: TorrentSpec) -> VerifiedDownload:
        download = self._downloads.get(info_hash)
        resume = self._resume(download) if download is not None else None
        return VerifiedDownload({}, resume)  # no leaves: the fetch hashes every file in full

    def statuses(self) -> Mapping[bytes, TransferStatus]:
        found = {h: self._status(h, d) for h, d in self._downloads.items()}
        for info_hash in self._seeding:
            found.setdefault(
                info_hash, TransferStatus(info_hash, "seeding", 0, 0, 0, 0, 0, 0, 0, 0, 0)
            )
        return found

    async def status_now(self, info_hash: bytes) -> TransferStatus | None:
        return self.statuses().get(info_hash)

    async def next_event(self) -> SwarmEvent:
        return await self._events.get()

    # -- the transfer ----------------------------------------------------------------

    def _status(self, info_hash: bytes, download: _Download) -> TransferStatus:
        wanted = sum(download.spec.files[k].size for k in download.wanted)
        done = sum(download.done.values())
        state = "finished" if download.finished else "downloading"
        peers = len([p for p in download.peers if self._holder(p, info_hash)])
        return TransferStatus(
            info_hash, state, wanted, done, 0, 0, peers, peers, download.received, 0, 0
        )

    def _holder(self, peer: PeerAddress, info_hash: bytes) -> FakeSwarm | None:
        swarm = self._network.swarms.get(peer)
        return swarm if swarm is not None and info_hash in swarm._seeding else None

    def _resume(self, download: _Download) -> bytes:
        return json.dumps({"done": download.done}).encode()

    async def _stop(self, download: _Download) -> None:
        if download.task is not None:
            download.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await download.task

    async def _transfer(self, download: _Download) -> None:
        info_hash = download.spec.info_hash
        while True:
            source = next(
                (
                    (peer, swarm)
                    for peer in sorted(download.peers)
                    if (swarm := self._holder(peer, info_hash)) is not None
                    and download.failures.get(peer, 0) < BANNED_AFTER
                ),
                None,
            )
            pending = [k for k in download.wanted if download.done[k] < download.spec.files[k].size]
            if not pending:
                download.finished = True
                self._events.put_nowait(Finished(info_hash))
                return
            if source is None:
                await asyncio.sleep(0.01)  # nobody to download from: no progress
                continue
            peer, seeder = source
            k = pending[0]
            if peer in self._network.corrupt:
                download.failures[peer] = download.failures.get(peer, 0) + 1
                self._events.put_nowait(HashFailed(info_hash, 0))
                if download.failures[peer] == BANNED_AFTER:
                    self._events.put_nowait(PeerBanned(info_hash, str(peer), "corrupt pieces"))
                await asyncio.sleep(0)
                continue
            offset = download.done[k]
            with open(seeder._seeding[info_hash][k], "rb") as source_file:
                source_file.seek(offset)
                block = source_file.read(BLOCK)
            with open(download.paths[k], "r+b" if download.paths[k].exists() else "wb") as out:
                out.seek(offset)
                out.write(block)
            download.done[k] = offset + len(block)
            download.received += len(block)
            seeder.uploaded += len(block)
            await asyncio.sleep(self._network.block_delay)


class LoopbackControlPlane:
    """A node's control plane in the same process: calls go straight to the other
    node's PeerService, as the HTTPS server would make them."""

    def __init__(self, network: Network) -> None:
        self._network = network
        self.address: PeerAddress | None = None

    async def serve(self, service: PeerService, listen: PeerAddress) -> int:
        self.address = PeerAddress("127.0.0.1", self._network.port())
        self._network.services[self.address] = service
        return self.address.port

    @property
    def client(self) -> LoopbackControlPlane:
        return self

    async def close(self) -> None:
        if self.address is not None:
            self._network.services.pop(self.address, None)

    def _service(self, peer: PeerAddress) -> PeerService:
        service = self._network.services.get(peer)
        if service is None:
            raise PeerRequestError(f"{peer}: connection refused")
        return service

    async def manifest(self, peer: PeerAddress, cid: CID) -> tuple[bytes, bytes] | None:
        found = self._service(peer).manifest(cid)
        return None if found is None else (found.raw, found.bundle)

    async def announce(
        self, peer: PeerAddress, cid: CID, swarm_port: int, control_port: int
    ) -> AnnounceReply | None:
        service = self._service(peer)
        service.learn_peer(PeerAddress("127.0.0.1", control_port), "peer")
        return await service.announce(cid, PeerAddress("127.0.0.1", swarm_port))

    async def peers(self, peer: PeerAddress) -> list[PeerAddress]:
        return self._service(peer).known_peers()

    async def hint(self, peer: PeerAddress, publisher: str, version: int) -> None:
        self._service(peer).hint(publisher, version)

    async def publisher_file(self, peer: PeerAddress, publisher: str, name: str) -> bytes | None:
        # The route's own check (control_server.py): a name it refuses is never served.
        if not (ORG_PATTERN.fullmatch(publisher) and METADATA_NAME.fullmatch(name)):
            raise PeerRequestError(f"{peer} answered HTTP 400 for {publisher}/{name}")
        return self._service(peer).publisher_file(publisher, name)

    async def models(self, peer: PeerAddress) -> list[tuple[CID, bool]]:
        return self._service(peer).held()

    async def node(self, peer: PeerAddress) -> RemoteNode:
        info = self._service(peer).node_info()
        return RemoteNode(str(info["name"]), int(str(info["swarm_port"])), peer.port)
