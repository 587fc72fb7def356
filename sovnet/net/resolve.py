"""Host names to addresses, before they reach the swarm.

A peer may be given by name (`sovnet peers add alice.example.org:6880`), and the
swarm connects to IP endpoints only: libtorrent refuses a name outright (a
TypeError deep in a fetch, once). Each name is resolved, IPv4 and IPv6 alike,
within a time bound; one that does not resolve in time is left out and logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable

from sovnet.core.address import PeerAddress

log = logging.getLogger(__name__)


async def resolve(addresses: Iterable[PeerAddress], timeout: float) -> set[PeerAddress]:
    """Every address with its host as IP addresses: those given as IPs as they are,
    each name as all the addresses it resolves to within ``timeout`` seconds."""
    found: set[PeerAddress] = set()
    names: list[PeerAddress] = []
    for address in addresses:
        if address.is_ip:
            found.add(address)
        else:
            names.append(address)
    results = await asyncio.gather(*(_lookup(name, timeout) for name in names))
    for resolved in results:
        found.update(resolved)
    return found


async def _lookup(address: PeerAddress, timeout: float) -> set[PeerAddress]:
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError) as exc:  # socket.gaierror is an OSError
        log.warning("cannot resolve %s: %s", address, exc or "timed out")
        return set()
    return {PeerAddress(str(info[4][0]), address.port) for info in infos}
