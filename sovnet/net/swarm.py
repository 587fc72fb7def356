"""The swarm as the daemon sees it: what it can ask of BitTorrent, and what it hears.

:class:`Swarm` is the interface the daemon programs against; net/libtorrent/ is its
one implementation (the only code that imports libtorrent). The value types
here are plain data copied out of libtorrent, so nothing above this layer ever
holds a libtorrent object or waits on its threads.

A torrent is addressed by its v2 info-hash (32 bytes). Files are addressed by
their position in :attr:`sovnet.torrent.TorrentSpec.files` (torrent order), so
callers never see libtorrent's internal pad files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from sovnet.core.address import PeerAddress
from sovnet.core.network import TlsIdentity
from sovnet.core.torrent import TorrentSpec


@dataclass(frozen=True)
class RateLimits:
    """Payload bytes a second, 0 = none: for peers on the local networks, and for
    everyone else (each class its own budget, over all torrents)."""

    upload: int = 0
    download: int = 0
    local_upload: int = 0
    local_download: int = 0


# Always local: a node's own machine.
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")


@dataclass(frozen=True)
class SwarmSettings:
    listen: PeerAddress
    limits: RateLimits = RateLimits()
    # Peers in these networks (CIDR) are "local": limited by the local_* rates.
    local_networks: tuple[str, ...] = LOOPBACK_NETWORKS


@dataclass(frozen=True)
class TransferStatus:
    info_hash: bytes
    state: str  # checking, downloading, finished, seeding, paused, error
    wanted: int  # bytes this node wants (files it already had are not wanted)
    wanted_done: int
    download_rate: int  # payload bytes/s
    upload_rate: int
    peers: int
    seeds: int
    session_downloaded: int  # payload bytes since the torrent was added in this process
    session_uploaded: int
    failed_bytes: int  # bytes that failed a hash check
    error: str | None = None


@dataclass(frozen=True)
class Finished:
    """Every wanted piece is downloaded and passed its hash check."""

    info_hash: bytes


@dataclass(frozen=True)
class ResumeSaved:
    info_hash: bytes
    data: bytes  # opaque; give it back to :meth:`Swarm.add` after a restart


@dataclass(frozen=True)
class HashFailed:
    info_hash: bytes
    piece: int


@dataclass(frozen=True)
class PeerBanned:
    info_hash: bytes
    peer: str
    reason: str


@dataclass(frozen=True)
class TorrentFailed:
    info_hash: bytes
    message: str
    disk_full: bool = False  # the disk had no room for a write (ENOSPC)


@dataclass(frozen=True)
class VerifiedDownload:
    """What a finished download leaves: the leaves the swarm checked each file's blocks
    against (files it kept none of are left out), and resume data saying every
    piece is here (None if the swarm could not make it)."""

    leaves: dict[int, list[bytes]]
    resume: bytes | None


SwarmEvent = Finished | ResumeSaved | HashFailed | PeerBanned | TorrentFailed


class Swarm(Protocol):
    @property
    def port(self) -> int:
        """The port the swarm listens on (after :meth:`start`; 0 while it cannot)."""
        ...

    @property
    def listen_problem(self) -> str | None:
        """Why the swarm does not listen now (its port is another process's: it
        tries again), or None."""
        ...

    def set_limits(self, limits: RateLimits) -> None:
        """Apply ``limits`` at once, to every torrent and connection."""
        ...

    def limits(self) -> RateLimits:
        """The limits in force (as the swarm reports them)."""
        ...

    def totals(self) -> tuple[int, int]:
        """Payload bytes downloaded and uploaded since :meth:`start`, every torrent
        counted, those removed since too."""
        ...

    def class_totals(self) -> Mapping[str, tuple[int, int]]:
        """Payload bytes (downloaded, uploaded) since :meth:`start` by peer class,
        ``local`` and ``global``: :meth:`totals` shared out (net/peerbytes.py)."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Save resume data of every download (as ResumeSaved events), then stop."""
        ...

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
        """Share ``spec``: file ``i`` lives at ``paths[i]`` (an absolute path).

        ``seeding``: this node has every file, already verified (needs ``layers``,
        the piece layers by pieces root). Otherwise it downloads every file not in
        ``skip``, continuing from ``resume`` when given, and connects to ``peers``
        as it starts (sooner than :meth:`connect` right after it would).
        """
        ...

    async def remove(self, info_hash: bytes) -> None: ...

    def connect(self, info_hash: bytes, peers: Iterable[PeerAddress]) -> None: ...

    def save_resume(self, info_hash: bytes) -> bool:
        """Ask for a ResumeSaved event for a download; False if one is still on its
        way (or the torrent is not here)."""
        ...

    async def verified_download(self, info_hash: bytes, spec: TorrentSpec) -> VerifiedDownload:
        """For a finished download: its final resume data and, by file of ``spec``, the
        SHA-256 leaf hashes the swarm checked every block against. The files are
        complete only once the torrent is removed."""
        ...

    def statuses(self) -> Mapping[bytes, TransferStatus]:
        """The latest status of every torrent (refreshed about once a second)."""
        ...

    async def status_now(self, info_hash: bytes) -> TransferStatus | None:
        """The status of one torrent as of now (for final figures)."""
        ...

    async def next_event(self) -> SwarmEvent: ...
