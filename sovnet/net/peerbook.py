"""The peers a node knows: from its configuration, added by hand, or learned.

    <state>/peers.json    peers added with `sovnet peers add` (canonical JSON)

Configured peers come from sovnetd's configuration and cannot be removed at run
time. Added peers persist across restarts. Learned peers are those other
members of the network told this node about (or that announced themselves to
it); they are kept in memory only, at most :data:`MAX_LEARNED`, and re-learned
after a restart from the configured and added ones.

Every address here is a control-plane address (HOST:PORT of a node's HTTPS
port); a node's swarm port is learned by asking it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sovnet.core.address import PeerAddress
from sovnet.errors import InvalidInputError, NotFoundError
from sovnet.store.peerfile import read_added, write_added

MAX_LEARNED = 1000


@dataclass(frozen=True)
class KnownPeer:
    address: PeerAddress
    source: str  # "config", "added" or "learned"
    name: str | None = None  # the node name in its certificate, once it talked to us


class PeerBook:
    def __init__(self, path: Path, configured: tuple[PeerAddress, ...]) -> None:
        self._path = path
        self._configured = list(configured)
        self._added = read_added(path)
        self._learned: dict[PeerAddress, str | None] = {}
        self._names: dict[PeerAddress, str] = {}
        self._self: set[PeerAddress] = set()

    def exclude_self(self, addresses: set[PeerAddress]) -> None:
        """This node's own control addresses, never to be asked."""
        self._self = set(addresses)

    def all(self) -> list[KnownPeer]:
        seen: dict[PeerAddress, KnownPeer] = {}
        for source, addresses in (
            ("config", self._configured),
            ("added", self._added),
            ("learned", list(self._learned)),
        ):
            for address in addresses:
                if address not in seen and address not in self._self:
                    seen[address] = KnownPeer(address, source, self._names.get(address))
        return list(seen.values())

    def addresses(self) -> list[PeerAddress]:
        return [p.address for p in self.all()]

    def add(self, address: PeerAddress) -> KnownPeer:
        if address not in self._added:
            self._added.append(address)
            write_added(self._path, self._added)
        return KnownPeer(address, "added", self._names.get(address))

    def remove(self, address: PeerAddress) -> None:
        if address in self._added:
            self._added.remove(address)
            write_added(self._path, self._added)
        elif address in self._learned:
            del self._learned[address]
        elif address in self._configured:
            raise InvalidInputError(
                f"{address} is in sovnetd's configuration",
                hint="remove it from the config file (or SOVNET_PEERS) and restart sovnetd",
            )
        else:
            raise NotFoundError(f"{address} is not a known peer", hint="`sovnet peers ls`")

    def learn(self, address: PeerAddress, name: str | None = None) -> None:
        if address in self._self:
            return
        if name:
            self._names[address] = name
        if address in self._configured or address in self._added:
            return
        if address not in self._learned and len(self._learned) >= MAX_LEARNED:
            self._learned.pop(next(iter(self._learned)))  # forget the oldest
        self._learned[address] = name
