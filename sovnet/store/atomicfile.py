"""Crash-safe file writes: a temp file in the same directory, fsync, ``os.replace``.

After a crash at any point a reader sees either the old file or the new one,
never a mixture: ``os.replace`` is atomic within a filesystem, and the fsyncs make
the data durable before the name points at it.
"""

from __future__ import annotations

import os
import tempfile
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


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that it appears whole or not at all."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
