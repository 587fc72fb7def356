"""Payload bytes by peer class: each torrent's exact bytes, shared out among the
classes of the peers that moved them.

libtorrent counts payload bytes per torrent (exactly) and per connection, not per
peer class (its classes carry limits, not counters). So each torrent's bytes are
given, as they grow, to the classes of its peers: ``local`` (loopback and
``local_networks``, libtorrent's local class) or ``global`` (everyone else).

What grew since the last update goes to the classes in proportion to what each
class's connections moved meanwhile, as sampled (``peer_info`` totals, compared
with the previous sample); when no sample saw it (a fetch shorter than the time
between samples, or a peer gone before it was sampled), to the classes of the
connections the torrent had (said by :meth:`PeerBytes.connected`), in equal
shares; with none known, to ``global``. So the classes add up to the swarm's
totals exactly, a torrent with peers of one class only (the usual case) is
counted exactly, and no class's count ever goes back.

Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

LOCAL = "local"
GLOBAL = "global"
CLASSES = (LOCAL, GLOBAL)


@dataclass(frozen=True)
class Connection:
    """One connection's totals since it opened, as sampled."""

    info_hash: bytes
    host: str
    port: int
    downloaded: int
    uploaded: int


@dataclass
class _Torrent:
    seen: set[str] = field(default_factory=set)  # classes of its connections
    sampled: dict[str, list[int]] = field(default_factory=dict)  # class: [down, up]
    given_sampled: dict[str, list[int]] = field(default_factory=dict)  # at the last update
    given_exact: list[int] = field(default_factory=lambda: [0, 0])


class PeerBytes:
    def __init__(self, local_networks: Iterable[str]) -> None:
        self._local = [ipaddress.ip_network(n, strict=False) for n in local_networks]
        self._torrents: dict[bytes, _Torrent] = {}
        self._last: dict[tuple[bytes, str, int], tuple[int, int]] = {}
        self._totals = {name: [0, 0] for name in CLASSES}

    def peer_class(self, host: str) -> str:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return GLOBAL
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return LOCAL if any(address in network for network in self._local) else GLOBAL

    def connected(self, info_hash: bytes, host: str) -> None:
        """A connection of ``info_hash`` to a peer at ``host`` opened."""
        self._torrents.setdefault(info_hash, _Torrent()).seen.add(self.peer_class(host))

    def sample(self, connections: Iterable[Connection], torrents: Iterable[bytes]) -> None:
        """What each connection moved since the previous sample, by class. ``torrents``:
        those whose connections were all sampled (a connection of one of them not
        listed has closed; the others' are kept for their next sample)."""
        sampled = set(torrents)
        seen = {k: v for k, v in self._last.items() if k[0] not in sampled}
        for c in connections:
            key = (c.info_hash, c.host, c.port)
            if key in seen:
                continue  # listed twice: counted once
            before = self._last.get(key, (0, 0))
            if c.downloaded < before[0] or c.uploaded < before[1]:
                before = (0, 0)  # a new connection from the same address and port
            name = self.peer_class(c.host)
            torrent = self._torrents.setdefault(c.info_hash, _Torrent())
            torrent.seen.add(name)
            moved = torrent.sampled.setdefault(name, [0, 0])
            moved[0] += max(0, c.downloaded - before[0])
            moved[1] += max(0, c.uploaded - before[1])
            seen[key] = (max(c.downloaded, 0), max(c.uploaded, 0))
        self._last = seen

    def update(self, exact: Mapping[bytes, tuple[int, int]]) -> None:
        """Share out what each torrent's exact (downloaded, uploaded) grew by since
        the last update (see the module)."""
        for info_hash, totals in exact.items():
            torrent = self._torrents.get(info_hash)
            if torrent is None:
                if not any(totals):
                    continue  # nothing moved yet: no state kept for it
                torrent = self._torrents[info_hash] = _Torrent()
            for way in (0, 1):
                grown = totals[way] - torrent.given_exact[way]
                if grown <= 0:
                    # The exact count lags the samples (libtorrent adds a torrent's
                    # bytes up once a second): what was sampled weighs the next growth.
                    continue
                torrent.given_exact[way] = totals[way]
                weights = {}
                for name, moved in torrent.sampled.items():
                    given = torrent.given_sampled.setdefault(name, [0, 0])
                    if moved[way] > given[way]:
                        weights[name] = moved[way] - given[way]
                    given[way] = moved[way]
                if not weights:
                    weights = dict.fromkeys(torrent.seen or {GLOBAL}, 1)
                self._share(grown, weights, way)

    def _share(self, grown: int, weights: Mapping[str, int], way: int) -> None:
        total = sum(weights.values())
        given = 0
        names = sorted(weights, key=weights.__getitem__)
        for name in names[:-1]:
            share = grown * weights[name] // total
            self._totals[name][way] += share
            given += share
        self._totals[names[-1]][way] += grown - given  # the largest takes the rounding

    def forget(self, info_hash: bytes) -> None:
        """The torrent left the swarm (after its last :meth:`update`)."""
        self._torrents.pop(info_hash, None)
        self._last = {k: v for k, v in self._last.items() if k[0] != info_hash}

    def totals(self) -> dict[str, tuple[int, int]]:
        """Payload bytes (downloaded, uploaded) by class."""
        return {name: (down, up) for name, (down, up) in self._totals.items()}
