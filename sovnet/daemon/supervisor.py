"""The owner of sovnetd's long-lived tasks.

Every task that outlives the call that started it (a fetch, a resume writer, the
swarm's event router, the status reporter) is started through a
:class:`Supervisor`, which keeps it, cancels and awaits it at shutdown, and
watches how it ends. A task that ends with an exception it did not handle is a
bug: it is logged with its traceback and stops the daemon (``failed`` is set;
sovnetd exits non-zero and systemd starts it again), rather than leaving a
daemon that silently stopped doing part of its job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Supervisor:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self.failed = asyncio.Event()
        self.failure: str | None = None

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        log.error("task %r crashed; stopping sovnetd", task.get_name(), exc_info=error)
        if self.failure is None:
            self.failure = f"task {task.get_name()!r} crashed: {error!r}"
        self.failed.set()

    async def close(self) -> None:
        """Cancel every task still running and wait for them all."""
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
