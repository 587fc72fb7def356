"""Crash-safe file writes: a temp file in the same directory, fsync, ``os.replace``.

After a crash at any point a reader sees either the old file or the new one,
never a mixture: ``os.replace`` is atomic within a filesystem, and the fsyncs make
the data durable before the name points at it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (creations, renames) durable."""
    _fsync_path(path, os.O_DIRECTORY)


def fsync_file(path: Path) -> None:
    """Make the bytes written to the file ``path`` durable (not through a symlink)."""
    _fsync_path(path, os.O_NOFOLLOW)


def _fsync_path(path: Path, flags: int) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_with(target: Path, make: Callable[[Path], None], *, prefix: str = ".tmp-") -> None:
    """Make something at a fresh temporary name beside ``target`` (``make(temp)``: a
    file, a hard link, a symlink), then rename it over ``target``: a reader sees the
    old one or the new one, never one half made. Durable only if ``make`` and the
    caller fsync (:func:`write_atomic` does)."""
    temp = target.with_name(f"{prefix}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        make(temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_new(path: Path, data: bytes, *, mode: int = 0o600, sync: bool = False) -> None:
    """Write ``data`` to a file that must not exist yet (O_EXCL), fsynced if ``sync``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fchmod(handle.fileno(), mode)  # whatever the umask took away
        if sync:
            os.fsync(handle.fileno())


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` durably, so that it appears whole or not at all."""
    replace_with(path, lambda temp: write_new(temp, data, mode=mode, sync=True))
    fsync_dir(path.parent)
