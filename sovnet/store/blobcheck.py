"""Which stored blobs no longer hold the bytes they are named after.

A blob can change after the store verified it: publish hard-links the publisher's
own files into the store (unless ``--copy``), so editing one in place edits the
blob; a disk can also truncate or lose it. A seeding node must notice before its
peers do (they would see hash failures and ban it, while its own status showed
nothing), and a fetch of a model that is here must repair it rather than say
"already here".

The check is cheap while nothing changed: one ``lstat`` per blob compared with
its verification stamp (stamps.py). Only a blob whose stat differs is read and
hashed again; if its bytes are still right, its stamp is renewed.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from sovnet.core.manifest import FileEntry
from sovnet.store import stamps
from sovnet.store.filehash import Difference, check_fd
from sovnet.store.store import Store


def changed(store: Store, entries: Iterable[FileEntry]) -> list[FileEntry]:
    """The entries whose blob's stat is not the one stamped when it was verified."""
    out: list[FileEntry] = []
    seen: set[bytes] = set()
    for entry in entries:
        if entry.blake3 in seen:
            continue
        seen.add(entry.blake3)
        try:
            info = os.lstat(store.blob_path(entry.blake3))
        except FileNotFoundError:
            out.append(entry)
            continue
        if stamps.read(store.stamps, entry.blake3) != stamps.Stamp.of(info):
            out.append(entry)
    return out


def problem(store: Store, entry: FileEntry, executor: ThreadPoolExecutor) -> str | None:
    """Hash ``entry``'s blob again: None if it is intact (its stamp renewed), or what
    is wrong with it."""
    try:
        fd = os.open(store.blob_path(entry.blake3), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return "is missing from the store"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            return "is not a regular file"
        if before.st_size != entry.size:
            return f"is {before.st_size} bytes, the manifest says {entry.size}"
        try:
            check = check_fd(fd, entry, executor)
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if check.difference is Difference.PIECES_ROOT:
        return "has a BEP 52 pieces root the manifest does not"
    if check.difference is not None:
        return "was changed after it was verified: its bytes no longer match the manifest"
    stamp = stamps.Stamp.of(after)
    if stamps.Stamp.of(before) == stamp:
        with contextlib.suppress(OSError):  # a read-only store re-hashes next time
            stamps.write(store.stamps, entry.blake3, stamp)
    return None


def damaged(store: Store, entries: Iterable[FileEntry]) -> dict[bytes, str]:
    """The blobs (by BLAKE3) of ``entries`` that are damaged, and how; reads only the
    blobs whose stat changed."""
    suspects = changed(store, entries)
    if not suspects:
        return {}
    found: dict[bytes, str] = {}
    with ThreadPoolExecutor(max_workers=2) as executor:
        for entry in suspects:
            wrong = problem(store, entry, executor)
            if wrong is not None:
                found[entry.blake3] = wrong
    return found


def describe(entries: Iterable[FileEntry], found: dict[bytes, str]) -> str:
    """One line for a model's damaged files: the first, and how many more."""
    paths = [(e.path, found[e.blake3]) for e in entries if e.blake3 in found]
    path, wrong = paths[0]
    more = f" (and {len(paths) - 1} more file(s))" if len(paths) > 1 else ""
    return f"{path} {wrong}{more}"
