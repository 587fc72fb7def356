"""What sovnetd does for publishers while it runs, every ``metadata_interval``:

- for each publisher whose TUF repository this node serves (store/publisherfiles.py),
  sign its snapshot and timestamp again before they expire (within half their
  lifetime), with this node's key, the root's online key. Without it every node
  would see the publisher frozen a day after its last release;
- for each publisher root this node pinned, refresh its metadata through the
  peers (daemon/publisher_metadata.py), so that new releases, moved channels and
  advisories are heard without anyone asking. A failure is logged and the next
  round tries again; what was trusted before stays trusted.

Between rounds, hints: when what this node hands on of a publisher grows (its
publisher's node renewed or released; a refresh trusted a newer timestamp), it
tells its peers the new timestamp version (``POST /v1/hints/ORG``), and a peer
that pins that publisher and trusts an older version refreshes it then, not at
its next round. A hint is a nudge, never trusted: the refresh verifies what it
gets as any would. A publisher's hinted refreshes are at least :data:`HINT_GAP`
apart, however many hints come (a peer hinting in a loop costs one refresh per
gap), and a node hints only when its own version grows, so hints cannot cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from sovnet.daemon.publisher_metadata import PublisherMetadata
from sovnet.errors import SovnetError
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.publisherfiles import PublisherFiles, served_file
from sovnet.store.rootfiles import RootFiles
from sovnet.trust import publisher_root

log = logging.getLogger(__name__)

HINT_EVERY = 1.0  # s: how often this node looks whether what it hands on grew
FIRST_REFRESH_AFTER = 5.0  # s after start
HINT_GAP = 5.0  # s: at least this between two refreshes of a publisher hints start


async def _told_nobody(publisher: str, version: int) -> None:
    return None


class PublisherUpkeep:
    def __init__(
        self,
        state_dir: Path,
        metadata: PublisherMetadata,
        interval: float,
        refreshed: Callable[[str, str | None], None] = lambda publisher, problem: None,
        tell_peers: Callable[[str, int], Awaitable[None]] = _told_nobody,
    ) -> None:
        self._state_dir = state_dir
        self._metadata = metadata
        self._interval = interval
        self._refreshed = refreshed  # told of each refresh (a mirror follows it)
        self._tell_peers = tell_peers  # sends a hint to every known peer
        self._handed_on: dict[str, int] = {}  # the version last hinted, by publisher
        self._hinted: dict[str, asyncio.Task[None]] = {}  # hinted refreshes under way
        self._hinted_again: set[str] = set()  # hinted while its refresh ran
        self._last_refresh: dict[str, float] = {}  # loop time, by publisher
        self.hinted_refreshes = 0  # refreshes hints started (for /metrics)

    async def run(self) -> None:
        """Rounds until cancelled: renewals at once (a publisher's node that was off
        for a day renews when it starts), the first refresh a few seconds after start
        (its peers are being reached meanwhile; a mirror should not wait a whole
        interval to follow), then both every interval."""
        await self.renew()
        await asyncio.sleep(min(self._interval, FIRST_REFRESH_AFTER))
        while True:
            await self.refresh()
            await asyncio.sleep(self._interval)
            await self.renew()

    async def renew(self) -> None:
        for publisher in PublisherFiles.served(self._state_dir):
            try:
                renewed = await asyncio.to_thread(self._renew, publisher)
            except SovnetError as exc:
                log.error("publisher %s: cannot renew its timestamp: %s", publisher, exc.message)
                continue
            if renewed:
                log.info("publisher %s: snapshot and timestamp signed again", publisher)

    async def refresh(self) -> None:
        for pinned in RootFiles(self._state_dir).pinned():
            await self._refresh_one(pinned.publisher)

    async def _refresh_one(self, publisher: str) -> None:
        self._last_refresh[publisher] = asyncio.get_running_loop().time()
        problem = None
        try:
            await self._metadata.refresh(publisher)
        except SovnetError as exc:
            log.warning("publisher %s: refresh failed: %s", publisher, exc.message)
            problem = exc.message
        self._refreshed(publisher, problem)

    # -- hints ----------------------------------------------------------------------------

    def handed_on(self, publisher: str) -> int | None:
        """The timestamp version this node serves of ``publisher`` (its own
        repository's, else the one its TUF client trusted); None if none."""
        data = served_file(self._state_dir, publisher, "timestamp.json")
        try:
            version = json.loads(data or b"")["signed"]["version"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return None
        return version if isinstance(version, int) and not isinstance(version, bool) else None

    def _publishers(self) -> list[str]:
        names = {*PublisherFiles.served(self._state_dir), *RootFiles(self._state_dir).names()}
        return sorted(names)

    async def hint_peers(self) -> None:
        """Tell the peers each time what this node hands on grows (runs until
        cancelled). What it holds at start was handed on before: no hint."""
        for publisher in self._publishers():
            version = self.handed_on(publisher)
            if version is not None:
                self._handed_on[publisher] = version
        while True:
            await asyncio.sleep(HINT_EVERY)
            for publisher in self._publishers():
                version = self.handed_on(publisher)
                if version is None or version <= self._handed_on.get(publisher, 0):
                    continue
                self._handed_on[publisher] = version
                log.info("publisher %s: version %d here now: telling the peers", publisher, version)
                await self._tell_peers(publisher, version)

    def hinted(self, publisher: str, version: int) -> None:
        """A peer says it hands on ``version`` of ``publisher``'s timestamp: refresh
        it soon if pinned here and newer than what is trusted (see the module)."""
        if not RootFiles(self._state_dir).is_pinned(publisher):
            return
        if version <= (self.handed_on(publisher) or 0):
            return
        if publisher in self._hinted:
            self._hinted_again.add(publisher)  # one more round once this one ends
            return
        self._hinted[publisher] = asyncio.create_task(self._hinted_refresh(publisher))

    async def _hinted_refresh(self, publisher: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                wait = self._last_refresh.get(publisher, -HINT_GAP) + HINT_GAP - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._hinted_again.discard(publisher)
                self.hinted_refreshes += 1
                await self._refresh_one(publisher)
                if publisher not in self._hinted_again:
                    return
        finally:
            del self._hinted[publisher]

    async def close(self) -> None:
        for task in list(self._hinted.values()):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._hinted.values(), return_exceptions=True)

    def _renew(self, publisher: str) -> bool:
        online = publisher_root.signer(NodeFiles(self._state_dir).key_path.read_bytes())
        now = datetime.datetime.now(datetime.UTC)
        return PublisherFiles(self._state_dir, publisher).renew(online, now)
