"""sovnetd's parts, wired together: what the control plane and the local API serve.

A :class:`Node` is started with :meth:`Node.start`, which opens the store (and
repairs what a crash left), reads the network's identity, starts the swarm and
the control plane, seeds every stored model (seeder.py) and continues the
downloads an earlier run left unfinished (fetcher.py). It routes the swarm's
events to the fetch they concern, and implements the two services the daemon
offers: :class:`~sovnet.net.control.PeerService` to other nodes of the network,
:class:`~sovnet.api.server.NodeService` to local clients. Everything long-lived
it starts belongs to its :class:`~sovnet.daemon.supervisor.Supervisor`.

The work itself is elsewhere: seeding in seeder.py, fetching in fetcher.py (its
decisions in fetchstate.py and fetchplan.py), publishing in publisher.py, the
download area in store/partial.py, who is in which swarm in members.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

from tuf.api.exceptions import LengthOrHashMismatchError

from sovnet.api.messages import (
    Ban,
    FetchResult,
    GcResult,
    GcVictim,
    KnownPeer,
    Limits,
    MirrorStatus,
    NodeStatus,
    PeerRemoved,
    PublishRequest,
    PublishResult,
    Rejected,
    Releases,
    RemoteRelease,
    RemoveResult,
    SeedingStats,
)
from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.config import DaemonConfig
from sovnet.core.network import Membership
from sovnet.core.sizes import human_size
from sovnet.daemon import publisher
from sovnet.daemon.fetcher import Emit, Fetcher
from sovnet.daemon.fetchstate import Timings
from sovnet.daemon.members import SwarmMembers
from sovnet.daemon.mirror import Mirror
from sovnet.daemon.publisher_metadata import PublisherMetadata
from sovnet.daemon.publisher_upkeep import PublisherUpkeep
from sovnet.daemon.seeder import Seeder
from sovnet.daemon.supervisor import Supervisor
from sovnet.errors import InvalidInputError, SovnetError, StoreQuotaError, TrustError
from sovnet.net.control import AnnounceReply, ControlPlane, ManifestBytes, gather_bounded
from sovnet.net.control_listener import ServerLimits
from sovnet.net.control_plane import TlsControlPlane
from sovnet.net.peerbook import PeerBook
from sovnet.net.peerprobe import PeerChecker
from sovnet.net.rejections import Rejections
from sovnet.net.swarm import (
    LOOPBACK_NETWORKS,
    HashFailed,
    PeerBanned,
    RateLimits,
    ResumeSaved,
    Swarm,
    SwarmSettings,
    TorrentFailed,
)
from sovnet.store.atomicfile import write_atomic
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.networkfiles import NetworkFiles
from sovnet.store.partial import PartialDownload
from sovnet.store.publisherfiles import served_file
from sovnet.store.retention import Limits as Budget
from sovnet.store.retention import Retention
from sovnet.store.rootfiles import RootFiles
from sovnet.store.store import Store

if TYPE_CHECKING:
    from sovnet.api.messages import PublishEvent

log = logging.getLogger(__name__)

MAX_BANS = 100  # bans kept for `sovnet status`
STORE_BYTES_EVERY = 10.0  # s: how stale the store's size in /metrics may be


class SwarmHealth:
    """What the swarm reported that went wrong, over all torrents."""

    def __init__(self) -> None:
        self.hash_failures = 0
        self.banned: list[Ban] = []  # the latest MAX_BANS
        self.banned_total = 0

    def record(self, event: HashFailed | PeerBanned, cid: CID | None) -> None:
        if isinstance(event, HashFailed):
            self.hash_failures += 1
        else:
            self.banned_total += 1
            self.banned = [*self.banned[-(MAX_BANS - 1) :], Ban(event.peer, str(cid), event.reason)]


class Node:
    def __init__(
        self,
        *,
        config: DaemonConfig,
        store: Store,
        membership: Membership,
        swarm: Swarm,
        book: PeerBook,
        control: ControlPlane,
        seeder: Seeder,
        supervisor: Supervisor,
        rejections: Rejections | None = None,
    ) -> None:
        self.config = config
        # Connections the swarm and the control plane refused (`sovnet status`).
        self.rejections = rejections or Rejections(config.rejection_log_interval)
        self.store = store
        self.membership = membership
        self.swarm = swarm
        self.book = book
        self.seeder = seeder
        self.supervisor = supervisor
        self._control = control
        self.control_port = 0  # once the control plane listens
        self.metrics_address: PeerAddress | None = None  # /metrics, where main serves it
        self._members = SwarmMembers()
        self._health = SwarmHealth()
        self._started = time.time()
        # The pinned publishers' metadata, refreshed through the peers (TUF).
        # Failing peers are not asked (the background checks bring them back).
        self.publishers = PublisherMetadata(
            config.state_dir, control.client, book.live, config.peer_timeout, book.failed
        )
        self.fetcher = Fetcher(
            store=store,
            load_trust=NodeFiles(config.state_dir).load_trust,
            swarm=swarm,
            seeder=seeder,
            peers=control.client,
            book=book,
            identity=seeder.identity,
            control_port=lambda: self.control_port,
            timings=Timings(
                config.stall_timeout,
                config.refresh_interval,
                config.resume_interval,
                config.peer_timeout,
            ),
            supervisor=supervisor,
            make_room=self.make_room,
        )
        self.budget = Budget(config.max_store_bytes, config.min_disk_free)
        self._gc_lock = asyncio.Lock()
        self.stopping = False  # SIGTERM came: long work (a gc) ends at its next step
        self._store_bytes: int | None = None  # measured by _measure_store
        # A mirror: the publishers it follows, fetched and seeded unasked.
        self.mirror = Mirror(config.state_dir, store, self.fetcher, config.follow)
        self.upkeep = PublisherUpkeep(
            config.state_dir,
            self.publishers,
            config.metadata_interval,
            refreshed=self.mirror.refreshed,
            tell_peers=self._hint_peers,
        )

    @classmethod
    async def start(
        cls,
        config: DaemonConfig,
        swarm: Swarm,
        supervisor: Supervisor,
        control: ControlPlane | None = None,
        rejections: Rejections | None = None,
    ) -> Node:
        """Open the store, join the network's swarms and start listening; the control
        plane is HTTPS with the network's certificates unless another is given.
        ``rejections`` is where the swarm reports what it refused, if it does."""
        store = Store(config.state_dir).init()
        with store.locked():
            await asyncio.to_thread(store.repair, keep=PartialDownload.blobs_in_use(store))
        network = NetworkFiles(config.state_dir)
        membership = network.membership()
        seeder = Seeder(
            store, swarm, network.identity(), network.ca_pem(), active_seeds=config.active_seeds
        )
        book = PeerBook(
            config.state_dir / "peers.json", config.peers, retry_after=config.refresh_interval
        )
        rejections = rejections or Rejections(config.rejection_log_interval)
        if control is None:
            control = TlsControlPlane(
                network.tls_files(), config.peer_timeout, server_limits(config), rejections
            )
        node = cls(
            config=config,
            store=store,
            membership=membership,
            swarm=swarm,
            book=book,
            control=control,
            seeder=seeder,
            supervisor=supervisor,
            rejections=rejections,
        )
        try:
            await swarm.start()
            saved = saved_limits(config.state_dir)
            if saved is not None:  # `sovnet limits set` decided them after sovnetd.toml
                swarm.set_limits(saved)
            node.control_port = await control.serve(node, config.control_listen)
            book.exclude_self(node._own_control_addresses())
            for cid in store.cids():
                try:
                    await seeder.seed(cid, join=False)
                except SovnetError as exc:
                    seeder.damaged[str(cid)] = exc.message
                    log.error("not seeding %s: %s", cid, exc.message)
            supervisor.spawn(node._route_events(), "swarm events")
            # In the background: the API answers while thousands of torrents join.
            supervisor.spawn(seeder.join_all(), "seeds joining the swarm")
            supervisor.spawn(node._summaries(config.summary_interval), "transfer summaries")
            supervisor.spawn(node._measure_store(), "the store's size")
            checker = PeerChecker(book, control.client, config.peer_timeout)
            supervisor.spawn(checker.run(), "checks of learned peers")
            supervisor.spawn(seeder.watch(config.check_interval), "checks of seeded files")
            supervisor.spawn(seeder.keep_within(), "seeds leaving the swarm")
            supervisor.spawn(node.upkeep.run(), "publishers' metadata")
            supervisor.spawn(node.upkeep.hint_peers(), "hints to peers")
            node.fetcher.resume_all()
        except BaseException:
            await node.close()
            raise
        log.info(
            "node %s of network %s: swarm %s, control plane on port %d, seeding %d model(s)",
            membership.node_name,
            membership.network,
            f"on port {swarm.port}" if swarm.port else "NOT listening",
            node.control_port,
            len(seeder.seeding()),
        )
        return node

    async def _route_events(self) -> None:
        """Give each swarm event to the fetch it concerns (runs until cancelled)."""
        while True:
            event = await self.swarm.next_event()
            cid = self.seeder.cid_of(event.info_hash)
            if isinstance(event, HashFailed | PeerBanned):
                self._health.record(event, cid)
            taken = self.fetcher.on_event(event)
            if not taken and isinstance(event, TorrentFailed) and cid is not None:
                # A seeded file libtorrent could not read: check it at once, not at
                # the next round of checks.
                self.seeder.damaged[str(cid)] = event.message
                self.supervisor.spawn(self.seeder.check(cid), f"check {cid}")

    async def _summaries(self, interval: float) -> None:
        """One log line an interval in which bytes moved: what was uploaded (and to
        how many connections, the busiest models first) and downloaded."""
        last_down, last_up = self.swarm.totals()
        last: dict[bytes, int] = {}
        while True:
            await asyncio.sleep(interval)
            down, up = self.swarm.totals()
            if (down, up) == (last_down, last_up):
                continue
            statuses = self.swarm.statuses()
            moved = {k: s.session_uploaded - last.get(k, 0) for k, s in statuses.items()}
            last = {k: s.session_uploaded for k, s in statuses.items()}
            busiest = sorted((v, k) for k, v in moved.items() if v > 0)[::-1][:3]
            names = []
            for sent, key in busiest:
                cid = self.seeder.cid_of(key)
                names.append(f"{cid} {human_size(sent)}")
            log.info(
                "in the last %.0f s: uploaded %s to %d connection(s)%s; downloaded %s",
                interval, human_size(up - last_up),
                sum(s.peers for s in statuses.values()),
                f" ({', '.join(names)})" if names else "",
                human_size(down - last_down),
            )  # fmt: skip
            last_down, last_up = down, up

    async def close(self) -> None:
        """Stop fetches (keeping what they downloaded), save resume data, stop."""
        await self.mirror.close()
        await self.upkeep.close()
        await self.fetcher.close()
        await self.supervisor.close()
        await self.swarm.close()
        # close() posted ResumeSaved events for the downloads: write them.
        await self._drain_resume_events()
        await self._control.close()
        self.rejections.close()  # the counts not logged yet

    async def _drain_resume_events(self) -> None:
        while True:
            try:
                event = await asyncio.wait_for(self.swarm.next_event(), 0.01)
            except TimeoutError:
                return
            cid = self.seeder.cid_of(event.info_hash)
            if isinstance(event, ResumeSaved) and cid is not None:
                partial = PartialDownload(self.store, cid)
                await asyncio.to_thread(partial.keep_resume, event.data)

    def _own_control_addresses(self) -> set[PeerAddress]:
        hosts = {"127.0.0.1", "localhost", "::1", self.config.control_listen.host}
        return {PeerAddress(h, self.control_port) for h in hosts if h not in ("0.0.0.0", "::")}

    @property
    def banned_total(self) -> int:
        """Peers banned since start (status keeps only the latest)."""
        return self._health.banned_total

    # -- the control plane (PeerService) ---------------------------------------------

    def node_info(self) -> dict[str, object]:
        return {
            "name": self.membership.node_name,
            "swarm_port": self.swarm.port,
            "control_port": self.control_port,
            "version": _version(),
        }

    def held(self) -> list[tuple[CID, bool]]:
        found = [(cid, True) for cid in self.seeder.seeding()]
        return found + [(cid, False) for cid in self.fetcher.accepted_cids()]

    def manifest(self, cid: CID) -> ManifestBytes | None:
        if self.seeder.is_seeding(cid):
            try:
                raw = self.store.manifest_bytes(cid)
                bundle = self.store.bundle(cid)
            except SovnetError:
                return None
            return ManifestBytes(raw, bundle.to_bytes(), complete=True)
        accepted = self.fetcher.accepted(cid)
        if accepted is not None:
            return ManifestBytes(accepted.opened.raw, accepted.bundle.to_bytes(), False)
        return None

    async def announce(self, cid: CID, member: PeerAddress) -> AnnounceReply | None:
        try:
            complete = await self.seeder.join(cid)  # answered once the swarm takes peers
        except SovnetError as exc:
            log.error("not seeding %s: %s", cid, exc.message)
            complete = False
        if not complete and self.fetcher.accepted(cid) is None:
            return None
        others = self._members.announce(cid, member, time.monotonic())
        return AnnounceReply(
            holder=True, complete=complete, swarm_port=self.swarm.port, members=others
        )

    def known_peers(self) -> list[PeerAddress]:
        return self.book.listed()

    def hint(self, publisher: str, version: int) -> None:
        self.upkeep.hinted(publisher, version)

    async def _hint_peers(self, publisher: str, version: int) -> None:
        """Tell every known peer that this node hands on ``version`` of
        ``publisher``'s timestamp (what fails is only logged: a hint is a nudge)."""
        peers = self.book.listed()
        answers = await gather_bounded(
            [functools.partial(self._control.client.hint, p, publisher, version) for p in peers]
        )
        for peer, answer in zip(peers, answers, strict=True):
            if isinstance(answer, Exception):
                log.debug("hint to %s not taken: %s", peer, answer)

    def learn_peer(self, address: PeerAddress, name: str) -> None:
        self.book.learn(address, name)

    def publisher_file(self, publisher: str, name: str) -> bytes | None:
        """The publisher's own repository if this node publishes for it, else what it
        trusted of a root it pinned."""
        return served_file(self.config.state_dir, publisher, name)

    # -- the local API (NodeService) ------------------------------------------------------

    async def fetch(self, cid: CID, peers: Iterable[PeerAddress], emit: Emit) -> FetchResult:
        Retention(self.store).undrop(cid)  # asked for: a mirror may keep it again
        return await self.fetcher.fetch(cid, peers, emit)

    async def fetch_release(
        self, ref: str, peers: Iterable[PeerAddress], emit: Emit
    ) -> FetchResult:
        """Fetch what a pinned publisher's verified metadata names ``ref``
        (``ORG/MODEL``, ``:CHANNEL`` or ``@VERSION``), refreshed through the peers."""
        peers = list(peers)
        release, target = await self.publishers.resolve(ref, peers, self.store.has)
        log.info("%s is %s@%s, %s", ref, release.name, release.version, release.cid)
        Retention(self.store).undrop(release.cid)
        result = await self.fetcher.fetch(release.cid, peers, emit)
        if (result.name, result.version) not in (
            (release.name, release.version),
            (release.name, None),
        ):
            raise TrustError(
                f"{ref} is released as {release.name}@{release.version}, but {release.cid} "
                f"is the manifest of {result.name}@{result.version or '(no version)'}",
                hint="its publisher's release names another model: do not trust it",
            )
        try:
            target.verify_length_and_hashes(self.store.manifest_bytes(release.cid))
        except LengthOrHashMismatchError:
            raise TrustError(
                f"the release {release.path} names {release.cid} but the SHA-256 of other "
                "bytes: its publisher's metadata contradicts itself",
                hint="tell the publisher; `sovnet rm` the model if you do not want it",
            ) from None
        return result

    async def publish(
        self, request: PublishRequest, emit: Callable[[PublishEvent], None]
    ) -> PublishResult:
        """Publish in a worker process, then seed at once."""
        result = await publisher.publish(self.config.state_dir, request, emit)
        await self.seeder.seed(CID.parse(result.cid))
        return result

    async def remove(self, cid: CID) -> RemoveResult:
        """Stop fetching or seeding ``cid``, then remove it from the store."""
        await self.fetcher.cancel(cid, by="`sovnet rm`")
        await self.seeder.unseed(cid)
        partial = PartialDownload(self.store, cid)
        if not self.store.has(cid):
            if partial.path.is_dir():
                freed = await asyncio.to_thread(partial.remove)
                return RemoveResult(str(cid), freed, 0)
            self.store.require(cid)

        def remove_locked() -> RemoveResult:
            with self.store.locked():
                keep = PartialDownload.blobs_in_use(self.store, besides=cid)
                result = self.store.remove(cid, keep=keep)
            Retention(self.store).forget(cid)
            return RemoveResult(
                str(cid), result.freed_bytes, result.blobs_removed, result.held_bytes
            )

        return await asyncio.to_thread(remove_locked)

    async def releases(self) -> Releases:
        """What the pinned publisher roots released, refreshed through the peers, and
        which peers hold each (asked at once, each within the peer timeout)."""
        listed, problems = await self.publishers.listing()
        roots = RootFiles(self.config.state_dir)
        advised = {a.release: a for a in roots.advisories()}
        problems += roots.damaged()
        for pinned in roots.pinned():
            unheard = roots.unheard_advisories(pinned.publisher)
            if unheard is not None:
                problems.append(unheard)
        addresses = self.book.addresses()
        answers = await gather_bounded(
            [functools.partial(self._control.client.models, p) for p in addresses]
        )
        holders: dict[CID, list[str]] = {}
        for peer, answer in zip(addresses, answers, strict=True):
            if isinstance(answer, list):
                for cid, complete in answer:
                    if complete:
                        holders.setdefault(cid, []).append(str(peer))
        return Releases(
            tuple(
                RemoteRelease(
                    name=item.release.name,
                    version=item.release.version,
                    cid=str(item.release.cid),
                    channels=item.channels,
                    here=self.store.has(item.release.cid),
                    holders=tuple(holders.get(item.release.cid, ())),
                    advisory=advised[item.release].kind if item.release in advised else None,
                    advisory_text=(
                        advised[item.release].describe() if item.release in advised else None
                    ),
                )
                for item in listed
            ),
            tuple(problems),
        )

    async def make_room(self, cid: CID, name: str, wanted: int) -> None:
        """Room within the store's budget for ``wanted`` more bytes of ``cid``:
        unpinned models not in use collected, least recently used first; or the
        fetch refused before it downloads anything."""
        if not self.budget.any:
            return
        plan = await self.gc(needed=wanted, protect={cid}, reason=f"room for {name}")
        if not plan.enough:
            raise StoreQuotaError(
                f"fetching {name} ({cid}) would break this node's budget: {plan.problem}",
                hint="raise max_store_bytes or min_disk_free in sovnetd.toml, unpin "
                "models (`sovnet unpin`), or `sovnet rm` some",
            )

    async def gc(
        self,
        *,
        needed: int = 0,
        protect: Iterable[CID] = (),
        dry_run: bool = False,
        reason: str = "sovnet gc",
    ) -> GcResult:
        """Collect unpinned models, least recently used first, until the store is
        within its budget with ``needed`` more bytes; never a pinned one, one being
        fetched, nor ``protect``."""
        async with self._gc_lock:
            retention = Retention(self.store)
            busy = {*protect, *self.fetcher.accepted_cids()}
            plan = await asyncio.to_thread(retention.plan, self.budget, needed=needed, protect=busy)
            removed: list[RemoveResult] = []
            for victim in () if dry_run else plan.victims:
                if self.stopping:  # each removal is whole; the rest waits for the next gc
                    log.info(
                        "gc: stopped after %d of %d removal(s): sovnetd is stopping",
                        len(removed), len(plan.victims),
                    )  # fmt: skip
                    break
                log.info(
                    "gc: removing %s (%s, unpinned, least recently used) for %s",
                    victim.cid, victim.name, reason,
                )  # fmt: skip
                removed.append(await self.remove(victim.cid))
            return GcResult(
                planned=tuple(
                    GcVictim(str(v.cid), v.name, v.frees, v.last_used) for v in plan.victims
                ),
                removed=tuple(removed),
                freed_bytes=sum(r.freed_bytes for r in removed),
                store_bytes=plan.store_bytes,
                max_store_bytes=self.budget.max_store_bytes,
                min_disk_free=self.budget.min_disk_free,
                enough=plan.enough,
                problem=plan.problem,
            )

    def limits(self) -> Limits:
        found = self.swarm.limits()
        return Limits(
            found.upload,
            found.download,
            found.local_upload,
            found.local_download,
            swarm_settings(self.config).local_networks,
            (self.config.state_dir / LIMITS_FILE).is_file(),
        )

    def set_limits(self, changes: Mapping[str, int]) -> Limits:
        """Apply new rate limits at once and keep them (``<state>/limits.json``, over
        sovnetd.toml's at the next start)."""
        if not set(changes) <= set(_LIMIT_FIELDS) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31
            for v in changes.values()
        ):
            raise InvalidInputError(
                "limits are upload, download, local_upload, local_download: bytes/s, 0 = none"
            )
        limits = dataclasses.replace(self.swarm.limits(), **changes)
        self.swarm.set_limits(limits)
        write_atomic(
            self.config.state_dir / LIMITS_FILE,
            json.dumps(dataclasses.asdict(limits), sort_keys=True).encode(),
        )
        log.info("rate limits now %s (sovnet limits set)", dataclasses.asdict(limits))
        return self.limits()

    def store_bytes(self) -> int | None:
        """The store's size on disk as last measured (None: not yet)."""
        return self._store_bytes

    async def _measure_store(self) -> None:
        """Measure the store's size every few seconds, off the loop (runs until
        cancelled): a mirror's store is thousands of files, which a scrape must not
        walk (measured: 100 ms at 5,000 models, the whole budget of a scrape)."""
        while True:
            self._store_bytes = await asyncio.to_thread(Retention(self.store).store_bytes)
            await asyncio.sleep(STORE_BYTES_EVERY)

    def mirror_status(self) -> MirrorStatus:
        return self.mirror.status()

    def peers(self) -> list[KnownPeer]:
        return [KnownPeer(str(p.address), p.source, p.name, p.state) for p in self.book.all()]

    def add_peer(self, address: PeerAddress) -> KnownPeer:
        peer = self.book.add(address)
        return KnownPeer(str(peer.address), peer.source, state=peer.state)

    def remove_peer(self, address: PeerAddress) -> PeerRemoved:
        self.book.remove(address)
        return PeerRemoved(str(address))

    def status(self) -> NodeStatus:
        statuses = self.swarm.statuses()
        return NodeStatus(
            node=self.membership.node_name,
            node_id=str(self.membership.node_id),
            network=self.membership.network,
            network_id=self.membership.network_id,
            version=_version(),
            pid=os.getpid(),
            uptime=round(time.time() - self._started, 1),
            state_dir=str(self.config.state_dir),
            swarm_port=self.swarm.port,
            control_port=self.control_port,
            control_host=self.config.control_listen.host,
            seeding=len(self.seeder.seeding()),
            in_swarm=self.seeder.joined(),
            # Since start, the torrents taken out of the swarm too.
            uploaded=self.swarm.totals()[1],
            upload_rate=sum(s.upload_rate for s in statuses.values()),
            download_rate=sum(s.download_rate for s in statuses.values()),
            peers=len(self.book.all()),
            fetches=tuple(self.fetcher.under_way()),
            recent_fetches=tuple(self.fetcher.recent()),
            hash_failures=self._health.hash_failures,
            banned_peers=tuple(self._health.banned),
            damaged=dict(self.seeder.damaged),
            rejected=tuple(
                Rejected(r.plane, r.reason, r.count, r.last_from) for r in self.rejections.counts()
            ),
            publisher_alerts=tuple(self.publishers.alerts),
            swarm_problem=self.swarm.listen_problem,
            metrics=str(self.metrics_address) if self.metrics_address else None,
        )

    def seeding(self) -> dict[str, SeedingStats]:
        statuses = self.swarm.statuses()
        stats = {}
        for cid, spec in self.seeder.seeding().items():
            status = statuses.get(spec.info_hash)
            stats[str(cid)] = SeedingStats(
                uploaded=status.session_uploaded if status else 0,
                peers=status.peers if status else 0,
            )
        return stats


LIMITS_FILE = "limits.json"
_LIMIT_FIELDS = tuple(f.name for f in dataclasses.fields(RateLimits))


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def saved_limits(state_dir: Path) -> RateLimits | None:
    """The limits `sovnet limits set` kept, if any (a damaged file is said and left)."""
    try:
        value = json.loads((state_dir / LIMITS_FILE).read_bytes())
        return RateLimits(**{k: int(value[k]) for k in _LIMIT_FIELDS})
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("ignoring %s: %s", state_dir / LIMITS_FILE, exc)
        return None


def _version() -> str:
    try:
        return version("sovnet")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def server_limits(config: DaemonConfig) -> ServerLimits:
    return ServerLimits(
        handshake_timeout=config.control_handshake_timeout,
        header_timeout=config.control_header_timeout,
        request_timeout=config.control_request_timeout,
        max_connections=config.control_max_connections,
        max_connections_per_peer=config.control_max_connections_per_peer,
    )


def swarm_settings(config: DaemonConfig) -> SwarmSettings:
    return SwarmSettings(
        listen=config.swarm_listen,
        limits=RateLimits(
            config.upload_rate_limit,
            config.download_rate_limit,
            # Left out, the local class gets the same limits (a budget of its own): a
            # limit set for uploads limits them on a LAN and on loopback too.
            _or(config.local_upload_rate_limit, config.upload_rate_limit),
            _or(config.local_download_rate_limit, config.download_rate_limit),
        ),
        local_networks=(*LOOPBACK_NETWORKS, *config.local_networks),
    )
