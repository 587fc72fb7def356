"""What sovnetd does for publishers while it runs, every ``metadata_interval``:

- for each publisher whose TUF repository this node serves (store/publisherfiles.py),
  sign its snapshot and timestamp again before they expire (within half their
  lifetime), with this node's key, the root's online key. Without it every node
  would see the publisher frozen a day after its last release;
- for each publisher root this node pinned, refresh its metadata through the
  peers (daemon/publisher_metadata.py), so that new releases, moved channels and
  advisories are heard without anyone asking. A failure is logged and the next
  round tries again; what was trusted before stays trusted.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable
from pathlib import Path

from sovnet.daemon.publisher_metadata import PublisherMetadata
from sovnet.errors import SovnetError
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.publisherfiles import PublisherFiles
from sovnet.store.rootfiles import RootFiles
from sovnet.trust import publisher_root

log = logging.getLogger(__name__)


class PublisherUpkeep:
    def __init__(
        self,
        state_dir: Path,
        metadata: PublisherMetadata,
        interval: float,
        refreshed: Callable[[str, str | None], None] = lambda publisher, problem: None,
    ) -> None:
        self._state_dir = state_dir
        self._metadata = metadata
        self._interval = interval
        self._refreshed = refreshed  # told of each refresh (a mirror follows it)

    async def run(self) -> None:
        """Rounds until cancelled: renewals at once (a publisher's node that was off
        for a day renews when it starts), refreshes from the first interval on (at
        start, peers are still being reached)."""
        await self.renew()
        while True:
            await asyncio.sleep(self._interval)
            await self.renew()
            await self.refresh()

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
            problem = None
            try:
                await self._metadata.refresh(pinned.publisher)
            except SovnetError as exc:
                log.warning("publisher %s: refresh failed: %s", pinned.publisher, exc.message)
                problem = exc.message
            self._refreshed(pinned.publisher, problem)

    def _renew(self, publisher: str) -> bool:
        online = publisher_root.signer(NodeFiles(self._state_dir).key_path.read_bytes())
        now = datetime.datetime.now(datetime.UTC)
        return PublisherFiles(self._state_dir, publisher).renew(online, now)
