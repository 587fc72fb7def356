"""The peers a node knows: from its configuration, added by hand, or learned.

    <state>/peers.json    peers added with `sovnet peers add` (canonical JSON)

Configured peers come from sovnetd's configuration and cannot be removed at run
time. Added peers persist across restarts. Learned peers are those other members
of the network told this node about (or that announced themselves to it); they
are kept in memory only, at most :data:`MAX_LEARNED`, and re-learned after a
restart from the configured and added ones.

What another member says is only a *candidate*: any member can announce a port
nobody listens on, or list a thousand dead addresses, and every fetch would then
wait for all of them. A candidate waits in a bounded queue (:data:`MAX_CANDIDATES`,
:data:`MAX_CANDIDATES_PER_HOST`) until it is checked (net/peerprobe.py asks its
control plane, where only a member of the network gets through TLS) and joins the
book only if it answered. Every answer and failure is recorded: a peer that failed
since it last answered is *failing*, and fetches do not wait for it; a learned one
that failed :data:`FORGET_AFTER_FAILURES` times in a row, or kept failing for
:data:`FORGET_AFTER_SECONDS`, is forgotten. Configured and added peers are never
forgotten (the operator named them), only asked again in the background with a
growing interval, until they answer.

Every address here is a control-plane address (HOST:PORT of a node's HTTPS
port); a node's swarm port is learned by asking it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sovnet.core.address import PeerAddress
from sovnet.errors import InvalidInputError, NotFoundError
from sovnet.store.peerfile import read_added, write_added

MAX_LEARNED = 1000
MAX_CANDIDATES = 256  # addresses waiting to be checked; the newest are dropped beyond
MAX_CANDIDATES_PER_HOST = 16  # one member announcing every port of its host fills no more
FORGET_AFTER_FAILURES = 3
FORGET_AFTER_SECONDS = 600.0
RETRY_MAX = 300.0  # the longest wait before a failing peer is asked again

VERIFIED = "verified"  # answered since this node started, and not failed since
UNVERIFIED = "unverified"  # configured or added, not asked yet
FAILING = "failing"  # failed since it last answered (or never answered)


@dataclass(frozen=True)
class KnownPeer:
    address: PeerAddress
    source: str  # "config", "added" or "learned"
    name: str | None = None  # the node name in its certificate, once it talked to us
    state: str = UNVERIFIED


@dataclass
class _Health:
    failures: int = 0  # in a row, since the last answer
    failing_since: float = 0.0
    retry_at: float = 0.0  # when the background check asks a failing peer again
    answered: bool = False


class PeerBook:
    def __init__(
        self,
        path: Path,
        configured: tuple[PeerAddress, ...],
        *,
        retry_after: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._configured = list(configured)
        self._added = read_added(path)
        self._learned: dict[PeerAddress, None] = {}  # ordered: the oldest first
        self._candidates: dict[PeerAddress, None] = {}
        self._names: dict[PeerAddress, str] = {}
        self._health: dict[PeerAddress, _Health] = {}
        self._self: set[PeerAddress] = set()
        self._retry_after = retry_after
        self._clock = clock
        self.on_candidate: Callable[[], None] | None = None  # wakes the background check

    def exclude_self(self, addresses: set[PeerAddress]) -> None:
        """This node's own control addresses, never to be asked."""
        self._self = set(addresses)
        for address in addresses:
            self._candidates.pop(address, None)

    # -- what is known ---------------------------------------------------------------

    def all(self) -> list[KnownPeer]:
        seen: dict[PeerAddress, KnownPeer] = {}
        for source, addresses in (
            ("config", self._configured),
            ("added", self._added),
            ("learned", list(self._learned)),
        ):
            for address in addresses:
                if address not in seen and address not in self._self:
                    seen[address] = KnownPeer(
                        address, source, self._names.get(address), self.state(address)
                    )
        return list(seen.values())

    def addresses(self) -> list[PeerAddress]:
        return [p.address for p in self.all()]

    def state(self, address: PeerAddress) -> str:
        health = self._health.get(address)
        if health is None:
            return UNVERIFIED
        if health.failures:
            return FAILING
        return VERIFIED if health.answered else UNVERIFIED

    def live(self) -> list[PeerAddress]:
        """The peers a fetch asks and waits for: all but the failing."""
        return [p.address for p in self.all() if p.state != FAILING]

    def failing(self) -> list[PeerAddress]:
        """Known peers that failed since they last answered: not waited for."""
        return [p.address for p in self.all() if p.state == FAILING]

    def listed(self) -> list[PeerAddress]:
        """What this node tells other members it knows (``GET /v1/peers``): never a
        peer that is failing, nor one it was told of and did not check."""
        return self.live()

    # -- changed by hand -----------------------------------------------------------------

    def add(self, address: PeerAddress) -> KnownPeer:
        if address not in self._added:
            self._added.append(address)
            write_added(self._path, self._added)
        self._candidates.pop(address, None)
        return KnownPeer(address, "added", self._names.get(address), self.state(address))

    def remove(self, address: PeerAddress) -> None:
        if address in self._added:
            self._added.remove(address)
            write_added(self._path, self._added)
        elif address in self._learned:
            self._forget(address)
        elif address in self._configured:
            raise InvalidInputError(
                f"{address} is in sovnetd's configuration",
                hint="remove it from the config file (or SOVNET_PEERS) and restart sovnetd",
            )
        else:
            raise NotFoundError(f"{address} is not a known peer", hint="`sovnet peers ls`")

    # -- what other members say, and what was checked --------------------------------------

    def learn(self, address: PeerAddress, name: str | None = None) -> bool:
        """Another member named ``address``: a candidate, checked before it is kept.
        Whether it was queued (False: known already, this node, or the queue is full)."""
        if address in self._self or address in self._candidates or self._known(address):
            return False
        if len(self._candidates) >= MAX_CANDIDATES:
            return False
        same_host = sum(1 for c in self._candidates if c.host == address.host)
        if same_host >= MAX_CANDIDATES_PER_HOST:
            return False
        self._candidates[address] = None
        if self.on_candidate is not None:
            self.on_candidate()
        return True

    def pending_candidates(self) -> int:
        """Candidates not yet taken to be checked."""
        return len(self._candidates)

    def take_candidates(self, count: int) -> list[PeerAddress]:
        """Up to ``count`` candidates to check, the oldest first (they leave the queue)."""
        taken = list(self._candidates)[:count]
        for address in taken:
            del self._candidates[address]
        return taken

    def due_for_retry(self) -> list[PeerAddress]:
        """Failing peers whose next background check is due."""
        now = self._clock()
        return [address for address in self.failing() if self._health[address].retry_at <= now]

    def answered(self, address: PeerAddress, name: str | None = None) -> None:
        """``address`` answered on the control plane (so it holds a certificate of this
        network): kept, as a learned peer unless it is configured or added."""
        if address in self._self:
            return
        self._candidates.pop(address, None)
        if name:
            self._names[address] = name[:64]
        if not self._known(address):
            if len(self._learned) >= MAX_LEARNED:
                self._forget(next(iter(self._learned)))  # the oldest
            self._learned[address] = None
        self._health[address] = _Health(answered=True)

    def failed(self, address: PeerAddress) -> None:
        """``address`` could not be asked (unreachable, timed out, refused TLS, ...).
        A learned peer that failed too often or too long is forgotten; a candidate
        that failed its check is simply dropped."""
        if not self._known(address):
            return
        now = self._clock()
        health = self._health.setdefault(address, _Health())
        if not health.failures:
            health.failing_since = now
        health.failures += 1
        wait = min(self._retry_after * 2 ** (health.failures - 1), RETRY_MAX)
        health.retry_at = now + wait
        if address in self._learned and (
            health.failures >= FORGET_AFTER_FAILURES
            or now - health.failing_since >= FORGET_AFTER_SECONDS
        ):
            self._forget(address)

    def _known(self, address: PeerAddress) -> bool:
        return address in self._configured or address in self._added or address in self._learned

    def _forget(self, address: PeerAddress) -> None:
        self._learned.pop(address, None)
        self._health.pop(address, None)
        self._names.pop(address, None)
