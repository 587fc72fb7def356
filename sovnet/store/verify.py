"""Re-check a stored model against its manifest and signatures.

Every file of the model view is re-hashed (BLAKE3 and BEP 52 root, one read) and
compared with the manifest; each signature is checked and matched against the
trust store. The report says which file differs and how, and who signed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry
from sovnet.store.filehash import Difference, check_fd
from sovnet.store.store import Store
from sovnet.trust.gate import OpenedManifest
from sovnet.trust.keys import TrustStore


@dataclass(frozen=True)
class FileCheck:
    path: str
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True)
class VerifyReport:
    opened: OpenedManifest
    files: tuple[FileCheck, ...]

    @property
    def intact(self) -> bool:
        return all(f.ok for f in self.files)

    @property
    def ok(self) -> bool:
        return self.intact and self.opened.trusted


def _open_without_links(root: Path, relpath: str) -> int:
    """Open ``root/relpath`` for reading, following no symbolic link at any component
    below ``root`` (docs/spec.md §10 step 7): a linked directory would make the bytes
    checked something outside the model. A link raises OSError(ELOOP)."""
    *directories, name = relpath.split("/")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in directories:
            try:
                below = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                )
            except NotADirectoryError:
                # Linux says ENOTDIR, not ELOOP, for a link opened with O_DIRECTORY.
                if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
                    raise OSError(errno.ELOOP, "a symbolic link") from None
                raise
            os.close(fd)
            fd = below
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


def _check_file(
    store: Store,
    cid: CID,
    entry: FileEntry,
    executor: ThreadPoolExecutor,
    progress: Callable[[int], None] | None,
) -> FileCheck:
    try:
        fd = _open_without_links(store.model_dir(cid), entry.path)
    except FileNotFoundError:
        return FileCheck(entry.path, "missing from the model view")
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return FileCheck(entry.path, "is a symbolic link, or lies below one")
        return FileCheck(entry.path, f"cannot be opened ({exc.strerror})")
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return FileCheck(entry.path, "is not a regular file")
        if info.st_size != entry.size:
            return FileCheck(entry.path, f"is {info.st_size} bytes, the manifest says {entry.size}")
        check = check_fd(fd, entry, executor, progress=progress)
    finally:
        os.close(fd)
    if check.difference is Difference.PIECES_ROOT:
        return FileCheck(entry.path, "BEP 52 pieces root differs from the manifest")
    if check.difference is not None:
        return FileCheck(
            entry.path,
            f"content differs: BLAKE3 {check.digest.blake3.hex()[:16]}…, "
            f"manifest {entry.blake3.hex()[:16]}…",
        )
    if not store.blob_path(entry.blake3).is_file():
        return FileCheck(entry.path, "its blob is missing from the store")
    return FileCheck(entry.path, None)


def verify(
    store: Store,
    cid: CID,
    trust: TrustStore,
    *,
    progress: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check ``cid`` in ``store``; raises only if the manifest itself is unusable."""
    opened = store.open(cid, trust, require_trusted=False)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as executor:
        checks = tuple(
            _check_file(store, cid, entry, executor, progress) for entry in opened.manifest.files
        )
    return VerifyReport(opened, checks)
