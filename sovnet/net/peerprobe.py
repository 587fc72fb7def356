"""The background check of peers: a candidate joins the peer book only once it
answered, and a failing peer is asked again until it answers or is forgotten.

A check is ``GET /v1/node`` on the peer's control plane: TLS both ways with the
network's certificates, so an answer means a member of the network listens
there. At most ``concurrency`` checks run at once, each bounded by the control
plane's own timeout, so a thousand dead addresses cost a few connections at a
time in the background and never a fetch's time (peerbook.py says who is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sovnet.core.address import PeerAddress
from sovnet.net.control import PeerQueries, PeerRequestError
from sovnet.net.peerbook import PeerBook

log = logging.getLogger(__name__)

CONCURRENCY = 8
IDLE_POLL = 1.0  # s: how often an idle checker looks for failing peers due again


class PeerChecker:
    def __init__(
        self, book: PeerBook, queries: PeerQueries, timeout: float, concurrency: int = CONCURRENCY
    ) -> None:
        self._book = book
        self._queries = queries
        self._timeout = timeout
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._busy: set[PeerAddress] = set()

    async def run(self) -> None:
        """Check candidates and failing peers until cancelled."""
        self._book.on_candidate = self._wake.set
        try:
            async with asyncio.TaskGroup() as group:
                for number in range(self._concurrency):
                    group.create_task(self._worker(), name=f"peer check {number}")
        finally:
            self._book.on_candidate = None

    async def _worker(self) -> None:
        while True:
            address = self._next()
            if address is None:
                self._wake.clear()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can lose the
                # cancellation that stops the daemon, and this worker would not end.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_POLL):
                        await self._wake.wait()
                continue
            self._busy.add(address)
            try:
                await self.check(address)
            finally:
                self._busy.discard(address)

    def _next(self) -> PeerAddress | None:
        taken = self._book.take_candidates(1)
        if taken:
            return taken[0]
        for address in self._book.due_for_retry():
            if address not in self._busy:
                return address
        return None

    async def check(self, address: PeerAddress) -> bool:
        """Ask ``address`` who it is; record the outcome in the book."""
        try:
            async with asyncio.timeout(self._timeout):
                node = await self._queries.node(address)
        except (PeerRequestError, TimeoutError) as exc:
            log.debug("peer %s did not answer: %s", address, exc)
            self._book.failed(address)
            return False
        self._book.answered(address, node.name)
        return True
