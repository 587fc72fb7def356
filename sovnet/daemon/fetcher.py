"""Fetches: a model by CID from the peers of this node's network, to a verified,
committed, seeded model in the store.

A fetch, in order:

1. ask known peers for the manifest; accept it only through the trust gate
   (fetchplan.choose_manifest): bytes that hash to the CID, signed by a trusted
   publisher. Nothing joins a swarm before that;
2. derive the torrent from the manifest (core/torrent.py), announce to the holders,
   connect to the swarm members they list, and download into ``partial/<cid>/``
   (store/partial.py) every file whose blob the store does not already have; the
   download's decisions (progress, resume data, more peers, stall, done) are made by
   a :class:`~sovnet.daemon.fetchstate.FetchState`;
3. re-hash every downloaded file (BLAKE3, and its piece layer from the leaf hashes
   the swarm checked) against the manifest, then commit blobs, manifest and
   signatures atomically and start seeding.

One fetch of a CID runs at a time; a second request follows the first. A fetch
that fails keeps what arrived (``partial/<cid>/failed`` says why), so the next
request continues from it; a daemon that restarts continues every fetch that had
not failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import NoReturn

from sovnet.api.messages import (
    FetchEvent,
    FetchProgress,
    FetchResult,
    FetchUnderWay,
    FetchVerifying,
    ManifestAccepted,
    RecentFetch,
    Signer,
)
from sovnet.core import torrent
from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.core.network import TlsIdentity
from sovnet.core.sizes import human_size
from sovnet.daemon.discovery import Found, PeerFinder
from sovnet.daemon.fetchplan import Accepted
from sovnet.daemon.fetchstate import (
    Action,
    Fail,
    FetchState,
    Finish,
    Refresh,
    ReportProgress,
    SaveResume,
    Timings,
)
from sovnet.daemon.resume_writer import ResumeWriter
from sovnet.daemon.seeder import Seeder
from sovnet.daemon.supervisor import Supervisor
from sovnet.errors import (
    DiskFullError,
    FetchCancelledError,
    InternalError,
    SovnetError,
    TransferError,
)
from sovnet.net.control import PeerQueries
from sovnet.net.peerbook import PeerBook
from sovnet.net.swarm import ResumeSaved, Swarm, SwarmEvent, VerifiedDownload
from sovnet.store import diskspace
from sovnet.store.partial import PartialDownload
from sovnet.store.store import Store
from sovnet.trust.keys import TrustStore

log = logging.getLogger(__name__)

Emit = Callable[[FetchEvent], None]
# Room in the store's budget for ``wanted`` more bytes of the fetch of CID (ORG/MODEL),
# or StoreQuotaError.
MakeRoom = Callable[[CID, str, int], Awaitable[None]]
RECENT = 20  # fetches that ended, kept for `sovnet status`


@dataclass
class FetchTally:
    """Fetches since the daemon started, for /metrics: started, and ended by result
    ("ok", or the error's code: not-found, not-trusted, disk-full, ...)."""

    started: int = 0
    ended: dict[str, int] = field(default_factory=dict)

    def end(self, result: str) -> None:
        self.ended[result] = self.ended.get(result, 0) + 1


@dataclass
class Fetch:
    """One fetch in progress: what it found, and the API clients following it."""

    cid: CID
    outcome: asyncio.Future[FetchResult]
    listeners: list[Emit] = field(default_factory=list)
    accepted: Accepted | None = None
    spec: torrent.TorrentSpec | None = None
    state: FetchState | None = None  # while downloading
    found: Found = field(default_factory=Found)
    resume: ResumeWriter | None = None  # while downloading
    pending: list[Action] = field(default_factory=list)  # decided on swarm events
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # one was decided
    task: asyncio.Task[None] | None = None
    started: float = field(default_factory=time.monotonic)
    cancelled_by: str | None = None  # the command that stopped it, told to its followers

    def emit(self, event: FetchEvent) -> None:
        for listener in list(self.listeners):
            listener(event)


class Fetcher:
    def __init__(
        self,
        *,
        store: Store,
        load_trust: Callable[[], TrustStore],
        swarm: Swarm,
        seeder: Seeder,
        peers: PeerQueries,
        book: PeerBook,
        identity: TlsIdentity,
        control_port: Callable[[], int],
        timings: Timings,
        supervisor: Supervisor,
        make_room: MakeRoom | None = None,
    ) -> None:
        self._store = store
        self._load_trust = load_trust
        self._swarm = swarm
        self._seeder = seeder
        self._finder = PeerFinder(peers, book, swarm, control_port, timings.peer_timeout)
        self._identity = identity
        self._timings = timings
        self._supervisor = supervisor
        self._fetches: dict[CID, Fetch] = {}
        self._recent: list[RecentFetch] = []
        self.tally = FetchTally()
        # The store's budget: models collected, or the fetch refused before it begins.
        self._make_room = make_room

    # -- what the rest of the daemon asks -----------------------------------------------

    def start(self, cid: CID, peers: Iterable[PeerAddress] = (), *, resume: bool = False) -> Fetch:
        """The fetch of ``cid``: the one under way, or a new one."""
        fetch = self._fetches.get(cid)
        if fetch is None:
            fetch = Fetch(cid, asyncio.get_running_loop().create_future())
            self._fetches[cid] = fetch
            fetch.task = self._supervisor.spawn(
                self._run(fetch, list(peers), resume), f"fetch {cid}"
            )
        return fetch

    async def fetch(self, cid: CID, peers: Iterable[PeerAddress], emit: Emit) -> FetchResult:
        """Fetch ``cid`` (or follow the fetch already under way), reporting to ``emit``."""
        if self._store.has(cid) and cid not in self._fetches:
            # Here already: intact (say so), or damaged (fetch the damaged files again).
            damaged = await self._seeder.check(cid)
            if damaged:
                log.info("%s is damaged: fetching %d file(s) again", cid, len(damaged))
                await asyncio.to_thread(self._discard, damaged)
            elif self._seeder.is_seeding(cid):
                manifest = Manifest.from_bytes(self._store.manifest_bytes(cid))
                repaired = await asyncio.to_thread(self._repair_view, cid, manifest)
                if repaired:
                    log.info("%s: put back %d file(s) of its view", cid, len(repaired))
                return self._result(
                    cid, manifest, already=True, downloaded=0, repaired=len(repaired)
                )
        fetch = self.start(cid, peers)
        fetch.listeners.append(emit)
        try:
            return await asyncio.shield(fetch.outcome)
        finally:
            with contextlib.suppress(ValueError):
                fetch.listeners.remove(emit)

    def _repair_view(self, cid: CID, manifest: Manifest) -> tuple[str, ...]:
        with self._store.locked():
            return self._store.repair_view(cid, manifest)

    def _discard(self, blobs: Iterable[bytes]) -> None:
        with self._store.locked():
            self._store.discard_blobs(blobs)

    def resume_all(self) -> None:
        """Continue every download an earlier run of the daemon left unfinished."""
        for cid in PartialDownload.resumable(self._store):
            self.start(cid, resume=True)

    async def cancel(self, cid: CID, by: str) -> None:
        """Stop the fetch of ``cid``, if any, and take its download out of the swarm
        (its files stay in ``partial/`` for whoever removes them); whoever follows it
        is told it was cancelled ``by`` a command."""
        fetch = self._fetches.get(cid)
        if fetch is None:
            return
        fetch.cancelled_by = by
        await self._stop(fetch)
        await self._stop_download(fetch)

    async def _stop(self, fetch: Fetch) -> None:
        if fetch.task is not None:
            fetch.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetch.task

    def accepted(self, cid: CID) -> Accepted | None:
        """The manifest a fetch under way accepted (it is served to other nodes)."""
        fetch = self._fetches.get(cid)
        return fetch.accepted if fetch is not None else None

    def accepted_cids(self) -> list[CID]:
        return [cid for cid, fetch in self._fetches.items() if fetch.accepted is not None]

    def on_event(self, event: SwarmEvent) -> bool:
        """Give a swarm event to the download it concerns; False if none does."""
        cid = self._seeder.cid_of(event.info_hash)
        fetch = self._fetches.get(cid) if cid is not None else None
        if fetch is None or fetch.state is None:
            return False
        if isinstance(event, ResumeSaved):
            if fetch.resume is not None:
                # What was done when it was asked for: libtorrent's snapshot holds
                # that much at least (it is taken after the request).
                fetch.resume.offer(event.data, fetch.state.resume_asked_at)
            return True
        fetch.pending.extend(fetch.state.on_event(event))
        fetch.wake.set()
        return True

    def under_way(self) -> list[FetchUnderWay]:
        statuses = self._swarm.statuses()
        out = []
        for cid, fetch in self._fetches.items():
            state = fetch.state
            if state is None:
                out.append(FetchUnderWay(str(cid), "finding peers"))
                continue
            status = statuses.get(fetch.spec.info_hash) if fetch.spec is not None else None
            out.append(
                FetchUnderWay(
                    str(cid),
                    "downloading",
                    done=state.progress.done,
                    total=state.progress.total,
                    rate=round(state.progress.rate()),
                    resumable=fetch.resume.saved_at if fetch.resume is not None else 0,
                    hash_failures=state.hash_failures,
                    swarm_peers=len(fetch.found.swarm_peers),
                    session_downloaded=status.session_downloaded if status else None,
                )
            )
        return out

    def recent(self) -> list[RecentFetch]:
        return list(self._recent)

    async def close(self) -> None:
        """Stop every fetch where it is: its download stays in the swarm, whose own
        close saves its resume data, and in ``partial/`` for the next start."""
        for fetch in list(self._fetches.values()):
            await self._stop(fetch)

    # -- one fetch ----------------------------------------------------------------------------

    async def _run(self, fetch: Fetch, peers: list[PeerAddress], resume: bool) -> None:
        partial = PartialDownload(self._store, fetch.cid)
        self.tally.started += 1
        log.info("fetch %s started%s", fetch.cid, " (continuing a download)" if resume else "")
        # The outcome reaches the API clients following the fetch through its future;
        # events carry only progress.
        try:
            result = await self._steps(fetch, peers, resume, partial)
        except SovnetError as exc:
            self.tally.end(exc.code)
            log.warning(
                "fetch %s failed after %.1f s, %s from %d peer(s): %s",
                fetch.cid,
                time.monotonic() - fetch.started,
                human_size(self._downloaded(fetch)),
                len(fetch.found.swarm_peers),
                exc.message,
            )
            await asyncio.to_thread(partial.mark_failed, exc.message)
            await self._stop_download(fetch)
            fetch.outcome.set_exception(exc)
        except asyncio.CancelledError:
            self.tally.end("cancelled")
            log.info("fetch %s stopped (%s)", fetch.cid, fetch.cancelled_by or "sovnetd stops")
            if fetch.cancelled_by is None:
                fetch.outcome.cancel()  # the daemon is stopping
            else:
                fetch.outcome.set_exception(
                    FetchCancelledError(
                        f"the fetch of {fetch.cid} was cancelled by {fetch.cancelled_by}"
                    )
                )
                if not fetch.listeners:
                    fetch.outcome.exception()  # nobody follows it: nothing to tell
            raise
        except Exception as exc:
            await self._stop_download(fetch)
            error = self._unexpected(fetch, partial, exc)
            self.tally.end(error.code)
            error.__cause__ = exc
            fetch.outcome.set_exception(error)
        else:
            fetch.outcome.set_result(result)
            seconds = round(time.monotonic() - fetch.started, 3)
            self.tally.end("ok")
            log.info(
                "fetch %s done: %s %s, %s, %s downloaded in %.1f s from %d peer(s)",
                fetch.cid,
                f"{result.name}@{result.version}" if result.version else result.name,
                "was already here" if result.already_here else "verified and seeding",
                human_size(result.size),
                human_size(result.downloaded),
                seconds,
                len(fetch.found.swarm_peers),
            )
            self._recent = [
                *self._recent[-(RECENT - 1) :],
                RecentFetch(**vars(result), seconds=seconds),
            ]
        finally:
            try:
                if fetch.resume is not None:
                    await fetch.resume.close()
            finally:
                if self._fetches.get(fetch.cid) is fetch:
                    del self._fetches[fetch.cid]
        if fetch.outcome.done() and not fetch.outcome.cancelled() and not fetch.listeners:
            fetch.outcome.exception()  # nobody follows it: its failure is in the log

    def _downloaded(self, fetch: Fetch) -> int:
        """Payload bytes the swarm gave this fetch in this daemon's life."""
        status = self._swarm.statuses().get(fetch.spec.info_hash) if fetch.spec else None
        return status.session_downloaded if status is not None else 0

    def _unexpected(self, fetch: Fetch, partial: PartialDownload, exc: Exception) -> SovnetError:
        """A fetch's failure nobody raised on purpose: a full disk (a write before
        the room was checked, or of the small files) is said so, anything else logged."""
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            log.warning("fetch %s failed: the disk is full", fetch.cid)
            free = human_size(diskspace.free_bytes(self._store.root))
            return DiskFullError(
                f"the disk of {self._store.root} is full ({free} free): the fetch of "
                f"{fetch.cid} stopped",
                hint=f"free some space there, then run `sovnet fetch {fetch.cid}` again",
            )
        log.exception("fetch %s failed unexpectedly", fetch.cid)
        return InternalError(f"fetch failed unexpectedly: {exc!r}", hint="see sovnetd's log")

    async def _stop_download(self, fetch: Fetch) -> None:
        if fetch.spec is not None and not self._seeder.is_seeding(fetch.cid):
            await self._swarm.remove(fetch.spec.info_hash)

    async def _steps(
        self, fetch: Fetch, peers: list[PeerAddress], resume: bool, partial: PartialDownload
    ) -> FetchResult:
        trust = self._load_trust()
        if resume or partial.path.is_dir():
            earlier = await asyncio.to_thread(partial.accepted, trust)
            if earlier is not None:
                fetch.accepted = Accepted(earlier[0], earlier[1], ())
        if fetch.accepted is None:
            fetch.accepted = await self._finder.manifest(fetch.cid, peers, trust, fetch.found)
            await asyncio.to_thread(
                partial.keep_accepted, fetch.accepted.opened.raw, fetch.accepted.bundle
            )
        partial.clear_failed()
        opened = fetch.accepted.opened
        manifest = opened.manifest
        spec = fetch.spec = self._seeder.derive(fetch.cid, manifest)
        fetch.emit(
            ManifestAccepted(
                cid=str(fetch.cid),
                name=manifest.name,
                version=manifest.version,
                size=manifest.total_size,
                files=len(manifest.files),
                signers=tuple(
                    Signer(str(s.key_id), s.trusted_as) for s in opened.signers if s.counts
                ),
                released_as=opened.released_as,
            )
        )
        skip = self._already_here(spec.files)
        wanted = sum(f.size for k, f in enumerate(spec.files) if k not in skip)
        downloaded = 0
        ended = VerifiedDownload({}, None)
        if wanted:
            if self._make_room is not None:
                await self._make_room(fetch.cid, manifest.name, wanted)
            await asyncio.to_thread(self._check_room, fetch, skip, wanted, partial)
            # Room for the resume data of a disk that fills up (see _disk_filled).
            await asyncio.to_thread(partial.reserve, diskspace.resume_reserve(wanted))
            downloaded, ended = await self._download(fetch, spec, skip, wanted, partial)
            # Only once the swarm has let go of the torrent are its writes all done:
            # checked while it still held them, a just-finished file sometimes read
            # other bytes than the ones libtorrent had verified.
            await self._swarm.remove(spec.info_hash)
        checking = [f for k, f in enumerate(spec.files) if k not in skip]
        fetch.emit(FetchVerifying(len(checking), sum(f.size for f in checking)))
        verified = await asyncio.to_thread(
            partial.verify, spec.files, skip, manifest.piece_size, ended.leaves
        )
        if ended.resume is not None:
            # Every file is verified and durable: say so in the resume file, so that a
            # crash during the commit downloads nothing again.
            await asyncio.to_thread(partial.keep_resume, ended.resume, synced=True)
        await asyncio.to_thread(partial.commit, opened, fetch.accepted.bundle, verified)
        await self._seeder.seed(fetch.cid)
        return self._result(fetch.cid, manifest, already=False, downloaded=downloaded)

    async def _stop_for_room(
        self,
        fetch: Fetch,
        spec: torrent.TorrentSpec,
        partial: PartialDownload,
        skip: set[int],
        wanted: int,
        otherwise: SovnetError,
    ) -> NoReturn:
        """End a download the disk has no more room for, keeping what arrived: a
        DiskFullError saying how much is needed, or ``otherwise`` if room came back
        meanwhile (the resume writer is closed: the download cannot go on)."""
        await self._disk_filled(fetch, spec, partial)
        await asyncio.to_thread(self._check_room, fetch, skip, wanted, partial, filled=True)
        raise otherwise

    async def _disk_filled(
        self, fetch: Fetch, spec: torrent.TorrentSpec, partial: PartialDownload
    ) -> None:
        """Keep what arrived before the disk filled up. The periodic resume saves
        have been failing for want of room too, so the resume file is behind the
        download: the reserve made for this moment is freed, and resume data taken
        now (the torrent is paused) is written in its place."""
        assert fetch.resume is not None
        await fetch.resume.close()
        await asyncio.to_thread(partial.release_reserve)
        now = await self._swarm.verified_download(spec.info_hash, spec)
        if now.resume is not None:
            try:
                await asyncio.to_thread(partial.keep_resume, now.resume)
            except OSError as exc:
                log.warning("cannot save the resume data of %s: %s", fetch.cid, exc.strerror)

    def _check_room(
        self,
        fetch: Fetch,
        skip: set[int],
        wanted: int,
        partial: PartialDownload,
        *,
        filled: bool = False,
    ) -> None:
        """DiskFullError unless the disk has room for what is still to download."""
        assert fetch.spec is not None and fetch.accepted is not None
        paths = partial.file_paths(len(fetch.spec.files))
        already = diskspace.written(p for k, p in paths.items() if k not in skip)
        found = diskspace.room(partial.path, wanted, already)
        if not found.enough:
            label = fetch.accepted.opened.manifest.name
            raise diskspace.disk_full_error(
                label, self._store.root, found, str(fetch.cid), filled=filled
            )

    def _already_here(self, files: tuple[FileEntry, ...]) -> set[int]:
        """Positions of files the store has (or that repeat an earlier file's bytes)."""
        skip: set[int] = set()
        seen: set[bytes] = set()
        for k, entry in enumerate(files):
            if entry.blake3 in seen or self._store.blob_path(entry.blake3).is_file():
                skip.add(k)
            seen.add(entry.blake3)
        return skip

    async def _download(
        self,
        fetch: Fetch,
        spec: torrent.TorrentSpec,
        skip: set[int],
        wanted: int,
        partial: PartialDownload,
    ) -> tuple[int, VerifiedDownload]:
        """Download what is wanted; the bytes received, the leaf hashes the swarm
        checked them against and its final resume data."""
        paths = await asyncio.to_thread(partial.file_paths, len(spec.files))
        resume_data = await asyncio.to_thread(partial.resume_data)
        fetch.resume = ResumeWriter(partial, self._supervisor.spawn)
        # Ask the holders for the swarm before joining it, so that the swarm has
        # their addresses as the torrent starts.
        peers = await self._finder.swarm_peers(fetch.cid, spec.info_hash, fetch.found)
        loop = asyncio.get_running_loop()
        # Before the torrent is added: its first events may come while it is.
        state = fetch.state = FetchState(str(fetch.cid), wanted, self._timings, loop.time())
        low_water = diskspace.low_water(spec.manifest.piece_size)
        await self._swarm.add(
            spec,
            identity=self._identity,
            paths=paths,
            seeding=False,
            resume=resume_data,
            skip=skip,
            peers=peers,
        )
        while True:
            actions, fetch.pending = fetch.pending, []
            now = loop.time()
            state.swarm_peers = len(fetch.found.swarm_peers)  # for a stall's message
            actions += state.on_status(self._swarm.statuses().get(spec.info_hash), now)
            for action in actions:
                if isinstance(action, ReportProgress):
                    fetch.emit(FetchProgress(**vars(action)))
                    if diskspace.free_bytes(partial.path) < low_water:
                        # Stopped before a write fails: a write that fails loses the
                        # pieces in flight, a stop here loses nothing.
                        low = DiskFullError(
                            f"the disk of {self._store.root} has less than "
                            f"{human_size(low_water)} free: the fetch of {fetch.cid} stopped",
                            hint=f"free some space there, then run `sovnet fetch {fetch.cid}` "
                            "again: it continues from what arrived",
                        )
                        await self._stop_for_room(fetch, spec, partial, skip, wanted, low)
                elif isinstance(action, SaveResume):
                    if self._swarm.save_resume(spec.info_hash):
                        state.resume_asked(now)
                elif isinstance(action, Refresh):
                    new = await self._finder.swarm_peers(fetch.cid, spec.info_hash, fetch.found)
                    if new:
                        self._swarm.connect(spec.info_hash, new)
                elif isinstance(action, Fail) and action.disk_full:
                    failed = TransferError(action.message, hint=action.hint)
                    await self._stop_for_room(fetch, spec, partial, skip, wanted, failed)
                elif isinstance(action, Fail):
                    raise TransferError(action.message, hint=action.hint)
            if any(isinstance(action, Finish) for action in actions):
                break
            fetch.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(fetch.wake.wait(), state.next_wakeup(now) - now)
        # Every byte is here: said at once, before the resume writer's last write (it
        # may be fsyncing the download) and the swarm's final figures.
        state.progress.update(wanted, loop.time())
        last = self._swarm.statuses().get(spec.info_hash)
        fetch.emit(FetchProgress(**vars(state.report(last.peers if last else 0))))
        # Resume files end here: the verification fsyncs every file itself, and no
        # resume write may race the commit (close() returns once what was offered
        # is written).
        await fetch.resume.close()
        status = await self._swarm.status_now(spec.info_hash)
        return (status.session_downloaded if status else 0), await self._swarm.verified_download(
            spec.info_hash, spec
        )

    def _result(
        self, cid: CID, manifest: Manifest, *, already: bool, downloaded: int, repaired: int = 0
    ) -> FetchResult:
        return FetchResult(
            cid=str(cid),
            name=manifest.name,
            version=manifest.version,
            size=manifest.total_size,
            files=len(manifest.files),
            already_here=already,
            downloaded=downloaded,
            path=str(self._store.model_dir(cid)),
            repaired=repaired,
        )
