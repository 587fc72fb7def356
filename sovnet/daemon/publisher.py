"""Publishing through the daemon: the work runs in a child process, its NDJSON read here.

Hashing a file the daemon does not own maps it into memory, and a file its owner
truncates meanwhile raises SIGBUS in the process that maps it: that must end a
child (publish_worker.py), never sovnetd. The child also keeps the hashing
threads' pressure on the GIL away from the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from sovnet.api.messages import (
    PublishEvent,
    PublishHashed,
    PublishRequest,
    PublishResult,
    PublishScanned,
    from_json,
)
from sovnet.errors import InternalError, InvalidInputError, SovnetError, error_from_json
from sovnet.store.store import Store

log = logging.getLogger(__name__)

# How long a cancelled worker has to remove its temp files before it is killed.
CANCEL_TIMEOUT = 30.0

# The worker's longest line is a refusal listing up to 100 files (scan.py), each
# path up to 1 KiB: well under this.
MAX_LINE = 1024 * 1024


def worker_argv(state_dir: Path, request: PublishRequest) -> list[str]:
    """The command line of the publish worker for ``request``."""
    argv = [sys.executable, "-m", "sovnet.daemon.publish_worker", "publish"]
    argv += ["--state-dir", str(state_dir), "--name", request.name]
    if request.version is not None:
        argv += ["--version", request.version]
    if request.license is not None:
        argv += ["--license", request.license]
    if request.copy:
        argv.append("--copy")
    # The "--flag=VALUE" form, so that a glob starting with "-" stays a value.
    argv += [f"--include={pattern}" for pattern in request.include]
    argv += [f"--exclude={pattern}" for pattern in request.exclude]
    argv += [f"--follow-links-within={d}" for d in request.follow_links_within]
    return [*argv, "--", str(Path(request.path))]


async def publish(
    state_dir: Path, request: PublishRequest, emit: Callable[[PublishEvent], None]
) -> PublishResult:
    """Publish in a worker process; its result, or the error it reported.

    Cancelled (its client left, api/server.py), the worker is asked to stop: one that
    has not begun its commit removes its temp files and publishes nothing; one that
    has finishes, and its result is returned all the same, to be seeded."""
    if not request.path or not request.name:
        raise InvalidInputError("publish needs a path and a name")
    process = await asyncio.create_subprocess_exec(
        *worker_argv(state_dir, request),
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        limit=MAX_LINE,
    )
    result: PublishResult | None = None
    error: SovnetError | None = None
    assert process.stdout is not None

    async def read() -> None:
        nonlocal result, error
        assert process.stdout is not None
        async for line in process.stdout:
            event = json.loads(line)
            kind = event.pop("event", None) if isinstance(event, dict) else None
            if kind == "result":
                result = from_json(PublishResult, event)
            elif kind == "error":
                error = error_from_json(event.get("error"))
            elif kind == PublishScanned.EVENT:
                emit(from_json(PublishScanned, event))
            elif kind == PublishHashed.EVENT:
                emit(from_json(PublishHashed, event))

    try:
        await read()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(read(), CANCEL_TIMEOUT)
        if result is None:
            log.info("publish of %s cancelled: nothing was published", request.name)
            raise
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()  # committed before the stop came: seeded like any other
    finally:
        # Its output ended: it is exiting. Killed only if it does not: Popen.kill()
        # first polls, and a poll that reaps the exited worker before asyncio's child
        # watcher does makes the watcher log "Unknown child process pid".
        try:
            await asyncio.wait_for(process.wait(), CANCEL_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if result is None:
            # A worker that published nothing leaves nothing behind, however it
            # ended (cancelled, killed at the timeout, crashed).
            await asyncio.to_thread(Store(state_dir).remove_temp_of, process.pid)
    if error is not None:
        raise error
    if result is None:
        raise InternalError(f"the publish worker exited {process.returncode} without a result")
    return result
