"""Who holds a CID, and who else is in its swarm: asked of the control planes of the
peers this node knows.

A fetch first asks every known peer for the manifest (the holders are those that
sent the accepted one), then, before joining the swarm and every
``refresh_interval`` after, announces itself to the holders and asks them for the
swarm's other members and for more peers. :class:`Found` is what one fetch has
learned so far.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.daemon.fetchplan import Accepted, Answer, choose_manifest
from sovnet.net.control import AnnounceReply, PeerQueries, PeerRequestError, gather_bounded
from sovnet.net.peerbook import PeerBook
from sovnet.net.resolve import resolve
from sovnet.net.swarm import Swarm
from sovnet.trust.keys import TrustStore


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
        self._peers = peers
        self._book = book
        self._swarm = swarm
        self._control_port = control_port

    async def manifest(
        self, cid: CID, extra: list[PeerAddress], trust: TrustStore, found: Found
    ) -> Accepted:
        """Ask every known peer (and ``extra``) for the manifest; the one accepted."""
        for peer in extra:
            self._book.learn(peer)
        targets = list(dict.fromkeys([*extra, *self._book.addresses()]))
        found.asked.update(targets)
        accepted = choose_manifest(cid, await self._ask(targets, cid), trust)
        found.holders.update(accepted.holders)
        return accepted

    async def swarm_peers(self, cid: CID, info_hash: bytes, found: Found) -> set[PeerAddress]:
        """Find more holders and swarm members: the swarm addresses to connect to now
        (everyone known, while nobody is connected)."""
        fresh = [p for p in self._book.addresses() if p not in found.asked]
        if fresh:
            found.asked.update(fresh)
            for answer in await self._ask(fresh, cid):
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
            if isinstance(reply, AnnounceReply):
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

    async def _ask(self, peers: Iterable[PeerAddress], cid: CID) -> list[Answer]:
        async def ask(peer: PeerAddress) -> Answer:
            try:
                got = await self._peers.manifest(peer, cid)
            except PeerRequestError as exc:
                return Answer(peer, error=str(exc))
            if got is None:
                return Answer(peer)
            return Answer(peer, raw=got[0], bundle=got[1])

        return list(await asyncio.gather(*(ask(p) for p in dict.fromkeys(peers))))
