"""Crash-safe file writes: a temp file in the same directory, fsync, ``os.replace``.

After a crash at any point a reader sees either the old file or the new one,
never a mixture: ``os.replace`` is atomic within a filesystem, and the fsyncs make
the data durable before the name points at it.
"""

from __future__ import annotations

import errno
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


def write_atomic_new(path: Path, data: bytes, *, mode: int = 0o600, replace: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all, with exactly ``mode``: the file is
    always a new one (made at a temporary name, then renamed), so a file it replaces
    lends it none of its permissions. Unless ``replace``, an existing ``path`` (a
    symlink too) raises FileExistsError, even one made a moment ago: the new file is
    hard-linked in, which fails if the name is taken."""
    temp = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}")
    write_new(temp, data, mode=mode, sync=True)
    try:
        if replace:
            os.replace(temp, path)
        else:
            _link_new(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _link_new(temp: Path, path: Path) -> None:
    try:
        os.link(temp, path)
    except OSError as exc:
        # A filesystem without hard links (FAT, some FUSE): check, then rename;
        # only a file made in between the two could be lost.
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        if path.exists() or path.is_symlink():
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.replace(temp, path)
