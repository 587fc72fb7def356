"""Who announced themselves in each swarm this node holds, and for how long they count.

A node fetching a model announces itself to the holders it found (on their control
plane); each holder answers with the other members it heard from, newest first,
so that downloaders find each other and trade pieces. An announcement counts for
``ttl`` seconds; at most ``limit`` members are kept a swarm (the oldest go first).

Pure: ``now`` is an argument.
"""

from __future__ import annotations

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID

MEMBER_TTL = 600.0  # seconds an announce keeps a node listed in a swarm
MAX_MEMBERS = 500


class SwarmMembers:
    def __init__(self, ttl: float = MEMBER_TTL, limit: int = MAX_MEMBERS) -> None:
        self._ttl = ttl
        self._limit = limit
        self._seen: dict[CID, dict[PeerAddress, float]] = {}

    def announce(self, cid: CID, member: PeerAddress, now: float) -> tuple[PeerAddress, ...]:
        """Record ``member`` in the swarm of ``cid``; the others in it, newest first."""
        members = self._seen.setdefault(cid, {})
        for address, seen in list(members.items()):
            if now - seen > self._ttl:
                del members[address]
        members[member] = now
        if len(members) > self._limit:
            del members[min(members, key=members.__getitem__)]
        others = (a for a in members if a != member)
        return tuple(sorted(others, key=lambda a: -members[a]))

    def forget(self, cid: CID) -> None:
        self._seen.pop(cid, None)
