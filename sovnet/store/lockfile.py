"""An inter-process lock on a file (``flock``), so two processes never mutate the
store, the key or the trust file at once.

The holder writes its pid into the lock file, so the error a waiting process
gives can say who holds it. The kernel drops the lock when the holder dies, so a
crash never leaves the store locked.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sovnet.errors import LocalStateError, StoreLockedError


@contextmanager
def exclusive_lock(path: Path, *, what: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` for the ``with`` block."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LocalStateError(f"cannot open lock file {path}: {exc.strerror}") from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
                    raise StoreLockedError(
                        f"{what} is locked by another process (pid {holder})",
                        hint="wait for it to finish; if sovnetd runs, use the CLI through it",
                    ) from None
                time.sleep(0.05)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        except OSError:  # a full disk: the pid only names the holder, the lock holds
            pass
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def file_locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` itself, for a read-change-replace of
    it (``publisher sign``: two holders signing one file at once must not lose a
    signature). A file replaced while we waited is locked again: its new inode."""
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            yield  # not there, or unreadable: the read that follows says so
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)
