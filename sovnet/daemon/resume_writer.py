"""A download's resume data, written in a worker thread, newest first, one at a time.

The swarm hands resume data over as events; writing it means fsyncing every file
of the download first (store/partial.py: resume data must never claim bytes a
power loss would lose), which can take a while. :class:`ResumeWriter` keeps only
the newest data offered while a write is under way, so a slow disk delays resume
files, never the event routing nor the download.

The fsyncs also spread the download's disk writes over its whole duration: the
kernel would otherwise hold a fast download in memory, and the fsync before the
commit would write all of it at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sovnet.store.partial import PartialDownload

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


class ResumeWriter:
    """Writes one download's resume data."""

    def __init__(self, partial: PartialDownload, spawn: Spawn) -> None:
        self._partial = partial
        self._spawn = spawn
        self._next: tuple[bytes, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.saved_at = 0  # bytes done (at least) in the resume data last written

    def offer(self, data: bytes, done: int) -> None:
        """Write ``data`` (taken when ``done`` bytes were complete) soon, unless newer
        data comes first. Ignored once closed."""
        if self._closed:
            return
        self._next = (data, done)
        if self._task is None or self._task.done():
            self._task = self._spawn(self._write(), f"resume {self._partial.cid}")

    async def close(self) -> None:
        """Accept nothing more; return once what was offered is written."""
        self._closed = True
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _write(self) -> None:
        while self._next is not None:
            data, done = self._next
            self._next = None
            try:
                written = await asyncio.to_thread(self._partial.keep_resume, data)
            except OSError as exc:
                # A fetch goes on without a resume file; it only loses more on a crash.
                log.warning("cannot save the resume data of %s: %s", self._partial.cid, exc)
                continue
            if written:
                self.saved_at = max(self.saved_at, done)
