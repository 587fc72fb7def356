"""The daemon's orchestration: store, swarm, control plane and fetches together.

A :class:`Node` seeds every model in its store, fetches what it is asked for
from peers of its network, and answers other nodes (peers.py) and the local
API (api.py). The decisions are made by pure code (fetchplan.py, torrent.py,
trust.py); this module wires them to I/O.

A fetch, in order:

1. ask known peers for the manifest; accept it only through the trust gate
   (fetchplan.choose_manifest): bytes that hash to the CID, signed by a trusted
   publisher. Nothing joins a swarm before that;
2. derive the torrent from the manifest (torrent.py), announce to the holders,
   connect to the swarm members they list, and download into ``partial/<cid>/``
   every file whose blob the store does not already have;
3. re-hash every downloaded file (BLAKE3 and pieces root) against the manifest,
   then commit blobs, manifest and signatures atomically and start seeding.

Resume data is saved after every twentieth of a download, by time while that is
cheap (fetchplan.resume_due) and at shutdown, each time after the files it
describes are fsynced (resumefile.py), so a killed daemon continues where it was
after a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sovnet.core import torrent
from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.config import DaemonConfig
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.core.network import Membership, TlsIdentity
from sovnet.core.signing import SignatureBundle
from sovnet.daemon.fetchplan import Accepted, Answer, Progress, choose_manifest, resume_due
from sovnet.errors import (
    IntegrityError,
    InvalidInputError,
    LocalStateError,
    SovnetError,
    TransferError,
    error_from_json,
)
from sovnet.net.control import (
    AnnounceReply,
    ManifestBytes,
    PeerClient,
    PeerRequestError,
    PeerServer,
    gather_bounded,
)
from sovnet.net.peerbook import PeerBook
from sovnet.net.swarm import (
    Finished,
    HashFailed,
    PeerBanned,
    ResumeSaved,
    Swarm,
    SwarmSettings,
    TorrentFailed,
)
from sovnet.store import filehash
from sovnet.store.atomicfile import write_atomic
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.networkfiles import NetworkFiles
from sovnet.store.resumefile import ResumeWriter, keep_resume
from sovnet.store.store import Store
from sovnet.trust.gate import open_manifest

log = logging.getLogger("sovnet.daemon.node")

Emit = Callable[[dict[str, Any]], None]
MEMBER_TTL = 600.0  # seconds an announce keeps a node listed in a swarm
PROGRESS_INTERVAL = 0.5  # seconds between a fetch's progress events
MAX_MEMBERS = 500


@dataclass
class FetchJob:
    """One fetch in progress: its state, and the API clients following it."""

    cid: CID
    listeners: list[Emit] = field(default_factory=list)
    accepted: Accepted | None = None
    spec: torrent.TorrentSpec | None = None
    progress: Progress | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    failure: str | None = None
    holders: set[PeerAddress] = field(default_factory=set)  # control addresses
    swarm_peers: set[PeerAddress] = field(default_factory=set)
    asked: set[PeerAddress] = field(default_factory=set)
    hash_failures: int = 0
    banned: list[str] = field(default_factory=list)
    resume: ResumeWriter | None = None  # while downloading
    resume_asked_at: int = 0  # bytes done when resume data was last asked for
    started: float = field(default_factory=time.monotonic)
    task: asyncio.Task[dict[str, Any]] | None = None

    def emit(self, event: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            listener(event)


class Node:
    def __init__(self, config: DaemonConfig, swarm: Swarm) -> None:
        self.config = config
        self.store = Store(config.state_dir)
        self.keys = NodeFiles(config.state_dir)
        self.network = NetworkFiles(config.state_dir)
        self.book = PeerBook(config.state_dir / "peers.json", config.peers)
        self.swarm = swarm
        self.membership: Membership | None = None
        self._identity: TlsIdentity | None = None
        self._ca_pem = b""
        self._server: PeerServer | None = None
        self._client: PeerClient | None = None
        self._seeding: dict[CID, torrent.TorrentSpec] = {}
        self._by_hash: dict[bytes, CID] = {}
        self._fetches: dict[CID, FetchJob] = {}
        self._members: dict[CID, dict[PeerAddress, float]] = {}
        self._hash_failures = 0
        self._banned: list[dict[str, str]] = []
        self._damaged: dict[str, str] = {}
        self._recent: list[dict[str, Any]] = []  # the last fetches that ended
        self._started = time.time()
        self._stopping = False

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, join the network's swarms and start listening."""
        self.store.init()
        with self.store.locked():
            await asyncio.to_thread(self.store.repair)
        self.membership = self.network.membership()
        self._identity = self.network.identity()
        self._ca_pem = self.network.ca_pem()
        await self.swarm.start()
        self._client = PeerClient(self.network.tls_files(), self.config.peer_timeout)
        await self._client.__aenter__()
        self._server = PeerServer(self, self.network.tls_files(), self.config.control_listen)
        await self._server.start()
        self.book.exclude_self(self._own_control_addresses())
        for cid in self.store.cids():
            try:
                await self._seed(cid)
            except SovnetError as exc:
                self._damaged[str(cid)] = exc.message
                log.error("not seeding %s: %s", cid, exc.message)
        for cid in self._resumable():
            self._start_fetch(cid, [], resume=True)
        log.info(
            "node %s of network %s: swarm on port %d, control plane on port %d, "
            "seeding %d model(s)",
            self.membership.node_name,
            self.membership.network,
            self.swarm.port,
            self._server.port,
            len(self._seeding),
        )

    async def run_events(self) -> None:
        """Route swarm events to the fetches they concern (runs until cancelled)."""
        while True:
            event = await self.swarm.next_event()
            cid = self._by_hash.get(event.info_hash)
            job = self._fetches.get(cid) if cid is not None else None
            if isinstance(event, Finished) and job is not None:
                job.finished.set()
            elif isinstance(event, ResumeSaved) and job is not None and job.resume is not None:
                # What was done when it was asked for: libtorrent's snapshot holds
                # that much at least (it is taken after the request).
                job.resume.offer(event.data, job.resume_asked_at)
            elif isinstance(event, HashFailed):
                self._hash_failures += 1
                if job is not None:
                    job.hash_failures += 1
            elif isinstance(event, PeerBanned):
                self._banned.append({"peer": event.peer, "cid": str(cid), "reason": event.reason})
                del self._banned[:-100]
                if job is not None:
                    job.banned.append(event.peer)
            elif isinstance(event, TorrentFailed):
                if job is not None:
                    job.failure = event.message
                    job.finished.set()
                elif cid is not None:
                    self._damaged[str(cid)] = event.message

    async def close(self) -> None:
        """Stop fetches (keeping what they downloaded), save resume data, stop."""
        self._stopping = True
        jobs = [job.task for job in self._fetches.values() if job.task is not None]
        for task in jobs:
            task.cancel()
        for task in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.close()
        await self.swarm.close()
        # close() posted ResumeSaved events for the downloads: write them.
        await self._drain_resume_events()
        if self._client is not None:
            await self._client.close()

    async def _drain_resume_events(self) -> None:
        while True:
            try:
                event = await asyncio.wait_for(self.swarm.next_event(), 0.01)
            except TimeoutError:
                return
            cid = self._by_hash.get(event.info_hash)
            if isinstance(event, ResumeSaved) and cid is not None:
                await asyncio.to_thread(keep_resume, self.store.partial / str(cid), event.data)

    def _own_control_addresses(self) -> set[PeerAddress]:
        port = self._server.port if self._server else 0
        hosts = {"127.0.0.1", "localhost", "::1", self.config.control_listen.host}
        return {PeerAddress(h, port) for h in hosts if h not in ("0.0.0.0", "::")}

    # -- seeding -----------------------------------------------------------------------

    def _spec(self, cid: CID, manifest: Manifest) -> torrent.TorrentSpec:
        spec = torrent.derive(cid, manifest, self._ca_pem)
        self._by_hash[spec.info_hash] = cid
        return spec

    def _layers(self, manifest: Manifest) -> dict[bytes, bytes]:
        """Every stored piece layer of a model, made again from its blob if missing."""
        layers: dict[bytes, bytes] = {}
        for entry in manifest.files:
            if entry.size <= manifest.piece_size:
                continue
            layer = self.store.layer(entry.blake3, manifest.piece_size)
            if layer is None or not filehash.layer_matches(
                layer, entry.size, manifest.piece_size, entry.pieces_root
            ):
                with ThreadPoolExecutor(2) as executor:
                    digest = filehash.hash_file(
                        self.store.blob_path(entry.blake3), executor, piece_size=manifest.piece_size
                    )
                if digest.pieces_root != entry.pieces_root:
                    raise IntegrityError(f"the stored blob of {entry.path} is damaged")
                layer = digest.piece_layer
                with self.store.locked():
                    self.store.put_layer(entry.blake3, manifest.piece_size, layer)
            layers[entry.pieces_root] = layer
        return layers

    async def _seed(self, cid: CID) -> None:
        if cid in self._seeding:
            return
        manifest = Manifest.from_bytes(self.store.manifest_bytes(cid))
        spec = self._spec(cid, manifest)
        self._seeding[cid] = spec
        if not spec.has_payload:
            return
        assert self._identity is not None
        layers = await asyncio.to_thread(self._layers, manifest)
        paths = {k: self.store.blob_path(f.blake3) for k, f in enumerate(spec.files)}
        await self.swarm.add(
            spec, identity=self._identity, paths=paths, seeding=True, layers=layers
        )

    # -- the control plane (PeerService) ---------------------------------------------

    def node_info(self) -> dict[str, object]:
        assert self.membership is not None and self._server is not None
        return {
            "name": self.membership.node_name,
            "swarm_port": self.swarm.port,
            "control_port": self._server.port,
            "version": _version(),
        }

    def held(self) -> list[tuple[CID, bool]]:
        found = [(cid, True) for cid in self._seeding]
        found += [(cid, False) for cid, job in self._fetches.items() if job.accepted]
        return found

    def manifest(self, cid: CID) -> ManifestBytes | None:
        if cid in self._seeding:
            try:
                raw = self.store.manifest_bytes(cid)
                bundle = self.store.bundle(cid)
            except SovnetError:
                return None
            return ManifestBytes(raw, bundle.to_bytes(), complete=True)
        job = self._fetches.get(cid)
        if job is not None and job.accepted is not None:
            return ManifestBytes(job.accepted.opened.raw, job.accepted.bundle.to_bytes(), False)
        return None

    def announce(self, cid: CID, member: PeerAddress) -> AnnounceReply | None:
        complete = cid in self._seeding
        job = self._fetches.get(cid)
        if not complete and (job is None or job.accepted is None):
            return None
        now = time.monotonic()
        members = self._members.setdefault(cid, {})
        for address, seen in list(members.items()):
            if now - seen > MEMBER_TTL:
                del members[address]
        members[member] = now
        if len(members) > MAX_MEMBERS:
            oldest = min(members, key=members.__getitem__)
            del members[oldest]
        others = tuple(sorted((a for a in members if a != member), key=lambda a: -members[a]))
        return AnnounceReply(
            holder=True, complete=complete, swarm_port=self.swarm.port, members=others
        )

    def known_peers(self) -> list[PeerAddress]:
        return self.book.addresses()

    def learn_peer(self, address: PeerAddress, name: str) -> None:
        self.book.learn(address, name)

    # -- fetching ------------------------------------------------------------------------

    def _resumable(self) -> list[CID]:
        found = []
        for path in sorted(self.store.partial.iterdir()) if self.store.partial.is_dir() else []:
            if (path / "manifest").is_file() and not (path / "failed").exists():
                try:
                    found.append(CID.parse(path.name))
                except SovnetError:
                    continue
        return found

    async def fetch(self, cid: CID, peers: Iterable[PeerAddress], emit: Emit) -> dict[str, Any]:
        """Fetch ``cid`` (or follow the fetch already under way), reporting to ``emit``."""
        if self.store.has(cid) and cid in self._seeding:
            manifest = Manifest.from_bytes(self.store.manifest_bytes(cid))
            return self._result(cid, manifest, already=True, downloaded=0)
        job = self._fetches.get(cid) or self._start_fetch(cid, list(peers), resume=False)
        job.listeners.append(emit)
        try:
            assert job.task is not None
            return await asyncio.shield(job.task)
        finally:
            with contextlib.suppress(ValueError):
                job.listeners.remove(emit)

    def _start_fetch(self, cid: CID, peers: list[PeerAddress], *, resume: bool) -> FetchJob:
        job = FetchJob(cid)
        self._fetches[cid] = job
        job.task = asyncio.create_task(self._run_fetch(job, peers, resume), name=f"fetch {cid}")
        # A fetch resumed at start-up may have nobody waiting for it: its failure is
        # logged by _run_fetch, and must not also be reported as never retrieved.
        job.task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return job

    async def _run_fetch(
        self, job: FetchJob, peers: list[PeerAddress], resume: bool
    ) -> dict[str, Any]:
        partial = self.store.partial / str(job.cid)
        # A failure reaches the API clients following the fetch as the exception of
        # this task (they await it); `emit` carries only progress.
        try:
            result = await self._fetch_steps(job, peers, resume, partial)
        except SovnetError as exc:
            log.warning("fetch %s failed: %s", job.cid, exc.message)
            if partial.is_dir():
                # Keep what arrived: `sovnet fetch` again continues from it.
                (partial / "failed").write_text(exc.message + "\n")
            await self._stop_download(job)
            raise
        except Exception as exc:
            log.exception("fetch %s failed unexpectedly", job.cid)
            error = SovnetError(f"fetch failed unexpectedly: {exc!r}", hint="see sovnetd's log")
            await self._stop_download(job)
            raise error from exc
        finally:
            try:
                if job.resume is not None:
                    await job.resume.close()
            finally:
                if self._fetches.get(job.cid) is job:
                    del self._fetches[job.cid]
        self._recent = [
            *self._recent[-19:],
            {**result, "seconds": round(time.monotonic() - job.started, 3)},
        ]
        return result

    async def _stop_download(self, job: FetchJob) -> None:
        if job.spec is not None and job.cid not in self._seeding:
            await self.swarm.remove(job.spec.info_hash)

    async def _fetch_steps(
        self, job: FetchJob, peers: list[PeerAddress], resume: bool, partial: Path
    ) -> dict[str, Any]:
        trust = self.keys.load_trust()
        if resume or (partial / "manifest").is_file():
            job.accepted = self._accepted_from_partial(job.cid, partial, trust)
        if job.accepted is None:
            job.accepted = await self._discover(job, peers, trust)
            partial.mkdir(mode=0o700, exist_ok=True)
            write_atomic(partial / "manifest", job.accepted.opened.raw, mode=0o600)
            write_atomic(partial / "signatures", job.accepted.bundle.to_bytes(), mode=0o600)
        (partial / "failed").unlink(missing_ok=True)
        manifest = job.accepted.opened.manifest
        spec = job.spec = self._spec(job.cid, manifest)
        job.emit(
            {
                "event": "manifest",
                "cid": str(job.cid),
                "name": manifest.name,
                "version": manifest.version,
                "size": manifest.total_size,
                "files": len(manifest.files),
                "signers": [
                    {"key_id": str(s.key_id), "trusted_as": s.trusted_as}
                    for s in job.accepted.opened.signers
                    if s.counts
                ],
            }
        )
        skip = self._already_here(spec.files)
        wanted = sum(f.size for k, f in enumerate(spec.files) if k not in skip)
        downloaded = 0
        leaves: dict[int, list[bytes]] = {}
        if wanted:
            downloaded, leaves = await self._download(job, spec, skip, wanted, partial)
            # Only once libtorrent has let go of the torrent are its writes all done:
            # checked while it still held them, a just-finished file sometimes read
            # other bytes than the ones libtorrent had verified.
            await self.swarm.remove(spec.info_hash)
        checked = await asyncio.to_thread(self._verify, job, spec, skip, partial, leaves)
        await asyncio.to_thread(self._commit, job, checked, partial)
        await self._seed(job.cid)
        return self._result(job.cid, manifest, already=False, downloaded=downloaded)

    def _accepted_from_partial(self, cid: CID, partial: Path, trust: Any) -> Accepted | None:
        try:
            raw = (partial / "manifest").read_bytes()
            bundle = SignatureBundle.from_bytes((partial / "signatures").read_bytes(), cid)
            opened = open_manifest(cid, raw, bundle, trust)
        except (OSError, SovnetError) as exc:
            log.warning("discarding the partial fetch of %s: %s", cid, exc)
            shutil.rmtree(partial, ignore_errors=True)
            return None
        return Accepted(opened, bundle, ())

    async def _ask(self, peers: Iterable[PeerAddress], cid: CID) -> list[Answer]:
        client = self._client
        assert client is not None
        targets = list(dict.fromkeys(peers))

        async def ask(peer: PeerAddress) -> Answer:
            try:
                got = await client.manifest(peer, cid)
            except PeerRequestError as exc:
                return Answer(peer, error=str(exc))
            if got is None:
                return Answer(peer)
            return Answer(peer, raw=got[0], bundle=got[1])

        return list(await asyncio.gather(*(ask(p) for p in targets)))

    async def _discover(self, job: FetchJob, extra: list[PeerAddress], trust: Any) -> Accepted:
        for peer in extra:
            self.book.learn(peer)
        targets = list(dict.fromkeys([*extra, *self.book.addresses()]))
        job.asked.update(targets)
        answers = await self._ask(targets, job.cid)
        accepted = choose_manifest(job.cid, answers, trust)
        job.holders.update(accepted.holders)
        return accepted

    def _already_here(self, files: tuple[FileEntry, ...]) -> set[int]:
        """Positions of files the store has (or that repeat an earlier file's bytes)."""
        skip: set[int] = set()
        seen: set[bytes] = set()
        for k, entry in enumerate(files):
            if entry.blake3 in seen or self.store.blob_path(entry.blake3).is_file():
                skip.add(k)
            seen.add(entry.blake3)
        return skip

    async def _refresh(self, job: FetchJob) -> None:
        """Find more holders and swarm members; connect to the new ones."""
        assert job.spec is not None
        new = await self._swarm_peers(job)
        if new:
            self.swarm.connect(job.spec.info_hash, new)

    async def _swarm_peers(self, job: FetchJob) -> set[PeerAddress]:
        """Find more holders and swarm members: the swarm addresses to connect to now
        (everyone known, while nobody is connected)."""
        client = self._client
        assert client is not None and job.spec is not None and self._server is not None
        fresh = [p for p in self.book.addresses() if p not in job.asked]
        if fresh:
            job.asked.update(fresh)
            for answer in await self._ask(fresh, job.cid):
                if answer.raw is not None and job.cid.matches(answer.raw):
                    job.holders.add(answer.peer)
        holders = list(job.holders)
        swarm_port, control_port = self.swarm.port, self._server.port
        replies, learned = await asyncio.gather(
            gather_bounded(
                [
                    functools.partial(client.announce, p, job.cid, swarm_port, control_port)
                    for p in holders
                ]
            ),
            gather_bounded([functools.partial(client.peers, p) for p in holders]),
        )
        found: set[PeerAddress] = set()
        for peer, reply in zip(holders, replies, strict=True):
            if isinstance(reply, AnnounceReply):
                if reply.holder:
                    found.add(PeerAddress(peer.host, reply.swarm_port))
                found.update(reply.members)
        for result in learned:
            if isinstance(result, list):
                for address in result:
                    self.book.learn(address)
        status = self.swarm.statuses().get(job.spec.info_hash)
        if status is not None and status.peers == 0:
            # Nobody connected (a first attempt can be refused, e.g. while the
            # seeder still holds our previous connection): try everyone again.
            new = found | job.swarm_peers
        else:
            new = found - job.swarm_peers
        job.swarm_peers.update(new)
        return new

    async def _download(
        self,
        job: FetchJob,
        spec: torrent.TorrentSpec,
        skip: set[int],
        wanted: int,
        partial: Path,
    ) -> tuple[int, dict[int, list[bytes]]]:
        """Download what is wanted; the bytes received, and the leaf hashes libtorrent
        checked them against."""
        assert self._identity is not None
        files_dir = partial / "files"
        files_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths = {k: files_dir / f"{k:05d}" for k in range(len(spec.files))}
        resume_path = partial / "resume"
        resume = resume_path.read_bytes() if resume_path.is_file() else None
        job.resume = ResumeWriter(partial)
        # Ask the holders for the swarm before joining it, so that libtorrent has
        # their addresses as the torrent starts.
        peers = await self._swarm_peers(job)
        await self.swarm.add(
            spec,
            identity=self._identity,
            paths=paths,
            seeding=False,
            resume=resume,
            skip=skip,
            peers=peers,
        )
        loop = asyncio.get_running_loop()
        job.progress = Progress(wanted, self.config.stall_timeout, loop.time())
        next_refresh = loop.time() + self.config.refresh_interval
        next_resume = loop.time() + self.config.resume_interval
        next_event = loop.time()
        while not job.finished.is_set():
            # Often enough to ask for resume data every twentieth of a fast download.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.finished.wait(), 0.1)
            now = loop.time()
            status = self.swarm.statuses().get(spec.info_hash)
            if status is not None:
                job.progress.update(status.wanted_done, now)
                if now >= next_event:
                    next_event = now + PROGRESS_INTERVAL
                    job.emit(self._progress_event(job, status.peers))
                if status.wanted_done >= status.wanted > 0 and status.state in (
                    "finished",
                    "seeding",
                ):
                    job.finished.set()
            if job.failure:
                raise TransferError(f"the transfer of {job.cid} failed: {job.failure}")
            if job.progress.stalled(now):
                raise TransferError(self._stall_message(job), hint=self._stall_hint(job))
            due = resume_due(
                done=job.progress.done,
                asked_at=job.resume_asked_at,
                total=wanted,
                now=now,
                next_time=next_resume,
            )
            if due and self.swarm.save_resume(spec.info_hash):
                next_resume = now + self.config.resume_interval
                job.resume_asked_at = job.progress.done
            if now >= next_refresh:
                next_refresh = now + self.config.refresh_interval
                await self._refresh(job)
        # Resume files end here: the verification fsyncs every file itself, and
        # no resume write may race the commit (close() returns once what was
        # offered is written).
        await job.resume.close()
        status = await self.swarm.status_now(spec.info_hash)
        downloaded = status.session_downloaded if status else 0
        job.progress.update(wanted, loop.time())
        job.emit(self._progress_event(job, status.peers if status else 0))
        leaves = await self.swarm.verified_leaves(spec.info_hash, spec)
        return downloaded, leaves

    def _stall_message(self, job: FetchJob) -> str:
        assert job.progress is not None
        parts = [
            f"the transfer of {job.cid} made no progress for "
            f"{self.config.stall_timeout:.0f} s ({job.progress.done} of "
            f"{job.progress.total} bytes)"
        ]
        if job.hash_failures:
            parts.append(f"{job.hash_failures} piece(s) failed their hash check")
        if job.banned:
            parts.append("banned for corrupt data: " + ", ".join(sorted(set(job.banned))))
        if not job.swarm_peers:
            parts.append("no peer in the swarm could be reached")
        return "; ".join(parts)

    def _stall_hint(self, job: FetchJob) -> str:
        if job.hash_failures:
            return "the peers that hold it sent corrupt data; ask an honest holder to seed it"
        return "check that a node holding it is running and reachable (`sovnet peers ls`)"

    def _progress_event(self, job: FetchJob, peers: int) -> dict[str, Any]:
        assert job.progress is not None
        return {
            "event": "progress",
            "done": job.progress.done,
            "total": job.progress.total,
            "rate": round(job.progress.rate()),
            "eta": job.progress.eta(),
            "peers": peers,
            "hash_failures": job.hash_failures,
        }

    def _verify(
        self,
        job: FetchJob,
        spec: torrent.TorrentSpec,
        skip: set[int],
        partial: Path,
        leaves: dict[int, list[bytes]],
    ) -> list[tuple[Path, filehash.FileDigest]]:
        """Check what arrived against the manifest, and make it durable.

        Every file's BLAKE3 is computed again. Its SHA-256 tree is not, when the swarm
        handed over the leaf hashes it checked each block against: the piece layer
        is then made from those leaves and checked against the signed pieces root.
        """
        assert job.accepted is not None
        manifest = job.accepted.opened.manifest
        piece_size = manifest.piece_size
        checked: list[tuple[Path, filehash.FileDigest]] = []
        with ThreadPoolExecutor(3) as executor:
            for k, entry in enumerate(spec.files):
                if k in skip:
                    continue
                path = partial / "files" / f"{k:05d}"
                if entry.size == 0:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    # On disk before its name appears under blobs/: a crash must never
                    # leave a blob whose bytes are not the verified ones. The kernel
                    # writes while we hash.
                    synced = executor.submit(os.fsync, fd)
                    try:
                        digest = self._check_file(fd, entry, piece_size, leaves.get(k), executor)
                    finally:
                        synced.result()
                finally:
                    os.close(fd)
                if digest is None:
                    path.unlink(missing_ok=True)
                    raise IntegrityError(
                        f"{entry.path} of {job.cid} does not match its manifest after download",
                        hint="the publisher's hashes disagree with each other; do not trust it",
                    )
                checked.append((path, digest))
        return checked

    @staticmethod
    def _check_file(
        fd: int,
        entry: FileEntry,
        piece_size: int,
        leaves: list[bytes] | None,
        executor: ThreadPoolExecutor,
    ) -> filehash.FileDigest | None:
        """The digest of the file at ``fd`` if it is ``entry``'s bytes, else None.

        A file of one piece has no piece layer: libtorrent checked its one piece
        against the pieces root itself, and the BLAKE3 suffices.
        """
        if leaves is not None or entry.size <= piece_size:
            size, blake3 = filehash.blake3_fd(fd)
            if (size, blake3) != (entry.size, entry.blake3):
                return None
            layer = filehash.layer_from_leaves(leaves or [], size, piece_size)
            if filehash.layer_matches(layer, size, piece_size, entry.pieces_root):
                return filehash.FileDigest(size, blake3, entry.pieces_root, layer)
            log.warning("the swarm's leaf hashes of %s do not add up: hashing it", entry.path)
        digest = filehash.hash_fd(fd, executor, piece_size=piece_size)
        if (digest.size, digest.blake3, digest.pieces_root) != (
            entry.size,
            entry.blake3,
            entry.pieces_root,
        ):
            return None
        return digest

    def _commit(
        self, job: FetchJob, checked: list[tuple[Path, filehash.FileDigest]], partial: Path
    ) -> None:
        """Move checked files into the store and the model into view, atomically."""
        assert job.accepted is not None
        manifest = job.accepted.opened.manifest
        with self.store.locked():
            for path, digest in checked:
                self.store.adopt_blob(path, digest.blake3)
                self.store.put_layer(digest.blake3, manifest.piece_size, digest.piece_layer)
            for entry in manifest.files:
                if not self.store.blob_path(entry.blake3).is_file():
                    raise LocalStateError(f"the blob of {entry.path} vanished during the fetch")
            self.store.commit(manifest, job.accepted.opened.raw, job.accepted.bundle)
        shutil.rmtree(partial, ignore_errors=True)

    def _result(
        self, cid: CID, manifest: Manifest, *, already: bool, downloaded: int
    ) -> dict[str, Any]:
        return {
            "cid": str(cid),
            "name": manifest.name,
            "version": manifest.version,
            "size": manifest.total_size,
            "files": len(manifest.files),
            "already_here": already,
            "downloaded": downloaded,
            "path": str(self.store.model_dir(cid)),
        }

    # -- publishing and removing -----------------------------------------------------------

    async def publish(self, request: dict[str, Any], emit: Emit) -> dict[str, Any]:
        """Publish in a worker process (hashing a file we do not own must not be able
        to crash the daemon, and keeps its GIL free), then seed at once."""
        path = request.get("path")
        name = request.get("name")
        if not isinstance(path, str) or not isinstance(name, str):
            raise InvalidInputError("publish needs a path and a name")
        argv = [
            sys.executable,
            "-m",
            "sovnet.daemon.publish_worker",
            "publish",
            "--state-dir",
            str(self.config.state_dir),
            "--name",
            name,
        ]
        for option in ("version", "license"):
            value = request.get(option)
            if isinstance(value, str):
                argv += [f"--{option}", value]
        if request.get("copy"):
            argv.append("--copy")
        argv += ["--", str(Path(path))]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
        result: dict[str, Any] | None = None
        error: SovnetError | None = None
        assert process.stdout is not None
        try:
            async for line in process.stdout:
                event = json.loads(line)
                if event.get("event") == "result":
                    result = event
                elif event.get("event") == "error":
                    error = error_from_json(event.get("error"))
                else:
                    emit(event)
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
            await process.wait()
        if error is not None:
            raise error
        if result is None:
            raise SovnetError(f"the publish worker exited {process.returncode} without a result")
        await self._seed(CID.parse(str(result["cid"])))
        return result

    async def remove(self, cid: CID) -> dict[str, Any]:
        job = self._fetches.get(cid)
        if job is not None and job.task is not None:
            job.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job.task
        spec = self._seeding.pop(cid, None)
        if spec is not None:
            await self.swarm.remove(spec.info_hash)
        partial = self.store.partial / str(cid)
        if not self.store.has(cid):
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
                return {"removed": str(cid), "freed_bytes": 0, "blobs_removed": 0}
            self.store.require(cid)

        def remove_locked() -> dict[str, Any]:
            with self.store.locked():
                result = self.store.remove(cid)
            return {
                "removed": str(cid),
                "freed_bytes": result.freed_bytes,
                "blobs_removed": result.blobs_removed,
            }

        return await asyncio.to_thread(remove_locked)

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        assert self.membership is not None and self._server is not None
        statuses = self.swarm.statuses()
        uploaded = sum(s.session_uploaded for s in statuses.values())
        fetches = []
        for cid, job in self._fetches.items():
            entry: dict[str, Any] = {"cid": str(cid), "state": "finding peers"}
            if job.progress is not None:
                entry.update(
                    state="downloading",
                    done=job.progress.done,
                    total=job.progress.total,
                    rate=round(job.progress.rate()),
                    resumable=job.resume.saved_at if job.resume is not None else 0,
                    hash_failures=job.hash_failures,
                    swarm_peers=len(job.swarm_peers),
                )
                if job.spec is not None and job.spec.info_hash in statuses:
                    entry["session_downloaded"] = statuses[job.spec.info_hash].session_downloaded
            fetches.append(entry)
        return {
            "node": self.membership.node_name,
            "node_id": str(self.membership.node_id),
            "network": self.membership.network,
            "network_id": self.membership.network_id,
            "version": _version(),
            "pid": os.getpid(),
            "uptime": round(time.time() - self._started, 1),
            "state_dir": str(self.config.state_dir),
            "swarm_port": self.swarm.port,
            "control_port": self._server.port,
            "seeding": len(self._seeding),
            "uploaded": uploaded,
            "upload_rate": sum(s.upload_rate for s in statuses.values()),
            "download_rate": sum(s.download_rate for s in statuses.values()),
            "peers": len(self.book.all()),
            "fetches": fetches,
            "recent_fetches": list(self._recent),
            "hash_failures": self._hash_failures,
            "banned_peers": list(self._banned),
            "damaged": dict(self._damaged),
        }

    def seeding_stats(self) -> dict[str, dict[str, int]]:
        statuses = self.swarm.statuses()
        stats = {}
        for cid, spec in self._seeding.items():
            status = statuses.get(spec.info_hash)
            stats[str(cid)] = {
                "uploaded": status.session_uploaded if status else 0,
                "peers": status.peers if status else 0,
            }
        return stats


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sovnet")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def swarm_settings(config: DaemonConfig) -> SwarmSettings:
    return SwarmSettings(
        listen=config.swarm_listen,
        upload_rate_limit=config.upload_rate_limit,
        download_rate_limit=config.download_rate_limit,
    )
