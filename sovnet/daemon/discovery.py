"""Who holds a CID, and who else is in its swarm: asked of the control planes of the
peers this node knows.

A fetch first asks every known peer for the manifest (the holders are those that
sent the accepted one), then, before joining the swarm and every
``refresh_interval`` after, announces itself to the holders and asks them for the
swarm's other members and for more peers. :class:`Found` is what one fetch has
learned so far.

A fetch waits only for peers that are not known to be failing (peerbook.py), and
once a trusted manifest is in hand, only a moment longer for the rest
(:func:`straggler_grace`): a peer that dies stops costing anything after the first
fetch that finds it dead, and hundreds of dead addresses cost none. Every answer
and failure is recorded in the book; addresses other peers name are only
candidates there until the background check (net/peerprobe.py) heard from them.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.daemon.fetchplan import Accepted, Answer, choose_manifest
from sovnet.errors import SovnetError
from sovnet.net.control import (
    MAX_CONCURRENT_REQUESTS,
    AnnounceReply,
    PeerQueries,
    PeerRequestError,
    gather_bounded,
)
from sovnet.net.peerbook import PeerBook
from sovnet.net.resolve import resolve
from sovnet.net.swarm import Swarm
from sovnet.trust.keys import TrustStore

MIN_GRACE = 0.5  # s a fetch that has its manifest still gives the other peers
FAILING_BUDGET = 2.0  # s for peers known to be failing, when nobody else had it


def straggler_grace(elapsed: float, timeout: float) -> float:
    """How long to wait for the remaining peers once a trusted manifest arrived after
    ``elapsed`` s: twice that (a peer as far as the first one answers in time),
    at least :data:`MIN_GRACE`, at most the request timeout."""
    return min(timeout, max(MIN_GRACE, 2 * elapsed))


@dataclass
class Found:
    """What one fetch learned of the network: holders, swarm members, peers asked."""

    holders: set[PeerAddress] = field(default_factory=set)  # control addresses
    swarm_peers: set[PeerAddress] = field(default_factory=set)  # swarm addresses tried
    asked: set[PeerAddress] = field(default_factory=set)


class PeerFinder:
    def __init__(
        self,
        peers: PeerQueries,
        book: PeerBook,
        swarm: Swarm,
        control_port: Callable[[], int],
        resolve_timeout: float,
    ) -> None:
        self._resolve_timeout = resolve_timeout
        self._timeout = resolve_timeout  # the control plane's request timeout too
        self._peers = peers
        self._book = book
        self._swarm = swarm
        self._control_port = control_port

    async def manifest(
        self, cid: CID, extra: list[PeerAddress], trust: TrustStore, found: Found
    ) -> Accepted:
        """Ask every known peer (and ``extra``) for the manifest; the one accepted."""
        waited = list(dict.fromkeys([*extra, *self._book.live()]))
        failing = [p for p in self._book.failing() if p not in waited]
        found.asked.update(waited, failing)
        if not waited:  # only peers known to be failing: they are all there is
            waited, failing = failing, []
        answers = await self._gather_manifests(cid, waited, failing, trust)
        accepted = choose_manifest(cid, answers, trust)
        found.holders.update(accepted.holders)
        return accepted

    async def swarm_peers(self, cid: CID, info_hash: bytes, found: Found) -> set[PeerAddress]:
        """Find more holders and swarm members: the swarm addresses to connect to now
        (everyone known, while nobody is connected)."""
        fresh = [p for p in self._book.live() if p not in found.asked]
        if fresh:
            found.asked.update(fresh)
            for answer in await self._gather_manifests(cid, fresh, [], None):
                if answer.raw is not None and cid.matches(answer.raw):
                    found.holders.add(answer.peer)
        holders = list(found.holders)
        swarm_port, control_port = self._swarm.port, self._control_port()
        replies, learned = await asyncio.gather(
            gather_bounded(
                [
                    functools.partial(self._peers.announce, p, cid, swarm_port, control_port)
                    for p in holders
                ]
            ),
            gather_bounded([functools.partial(self._peers.peers, p) for p in holders]),
        )
        named: set[PeerAddress] = set()
        for peer, reply in zip(holders, replies, strict=True):
            if isinstance(reply, PeerRequestError):
                self._book.failed(peer)
            elif isinstance(reply, AnnounceReply):
                if reply.holder:
                    named.add(PeerAddress(peer.host, reply.swarm_port))
                named.update(reply.members)
        # A holder known by name (`peers add alice.example.org:6880`): the swarm
        # connects to IP addresses only.
        new = await resolve(named, self._resolve_timeout)
        for result in learned:
            if isinstance(result, list):
                for address in result:
                    self._book.learn(address)
        status = self._swarm.statuses().get(info_hash)
        if status is not None and status.peers == 0:
            # Nobody connected (a first attempt can be refused, e.g. while the
            # seeder still holds our previous connection): try everyone again.
            new |= found.swarm_peers
        else:
            new -= found.swarm_peers
        found.swarm_peers.update(new)
        return new

    async def _gather_manifests(
        self,
        cid: CID,
        waited: list[PeerAddress],
        failing: list[PeerAddress],
        trust: TrustStore | None,
    ) -> list[Answer]:
        """Ask ``waited`` and ``failing`` for the manifest, at most
        :data:`MAX_CONCURRENT_REQUESTS` at a time; the answers that arrived.

        Waits for every peer of ``waited``, unless a manifest ``trust`` accepts is in
        hand: then only :func:`straggler_grace` longer. ``failing`` peers are asked
        alongside but never waited for, except :data:`FAILING_BUDGET` when nobody
        else had it. A peer still asking when the wait ends counts as failed."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        slots = asyncio.Semaphore(MAX_CONCURRENT_REQUESTS)
        tasks = {
            asyncio.ensure_future(self._ask_one(peer, cid, slots)): peer
            for peer in dict.fromkeys([*waited, *failing])
        }
        must = {t for t, p in tasks.items() if p in set(waited)}
        answers: list[Answer] = []
        pending = set(tasks)
        deadline: float | None = None
        try:
            while pending:
                if deadline is None and not (must & pending):
                    # Everyone waited for answered; the failing get a short budget,
                    # and only if nobody had the manifest.
                    has_it = any(a.raw is not None for a in answers)
                    deadline = loop.time() + (0 if has_it else FAILING_BUDGET)
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                done, pending = await asyncio.wait(
                    pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    break
                answers += [task.result() for task in done]
                if deadline is None and trust is not None and _acceptable(cid, answers, trust):
                    grace = straggler_grace(loop.time() - started, self._timeout)
                    deadline = loop.time() + grace
        finally:
            for task in pending:
                task.cancel()
                self._book.failed(tasks[task])  # not answered in time: as good as dead
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return answers

    async def _ask_one(self, peer: PeerAddress, cid: CID, slots: asyncio.Semaphore) -> Answer:
        async with slots:
            try:
                got = await self._peers.manifest(peer, cid)
            except PeerRequestError as exc:
                self._book.failed(peer)
                return Answer(peer, error=str(exc))
        self._book.answered(peer)
        if got is None:
            return Answer(peer)
        return Answer(peer, raw=got[0], bundle=got[1])


def _acceptable(cid: CID, answers: list[Answer], trust: TrustStore) -> bool:
    """Whether the answers so far hold a manifest ``trust`` accepts."""
    if not any(a.raw is not None and cid.matches(a.raw) for a in answers):
        return False
    try:
        choose_manifest(cid, answers, trust)
    except SovnetError:
        return False
    return True
