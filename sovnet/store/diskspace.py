"""Room on the disk under the store, checked before a fetch starts to download.

A fetch writes every wanted file into ``partial/`` and then renames it into
``blobs/`` (the same file system), so it needs the wanted bytes once, less what
earlier attempts already wrote (their files are sparse: what counts is the blocks
they hold), plus a margin, so that a fetch that fits still leaves room for the
store's small files (manifests, resume data, stamps) and for whatever else shares
the disk.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sovnet.core.sizes import human_size
from sovnet.errors import DiskFullError

MIB = 1024 * 1024
MARGIN_FIXED = 16 * MIB
MARGIN_SHARE = 100  # and a hundredth of what is needed
# libtorrent's resume data of a v2 torrent holds its merkle trees: about 64 bytes
# for each 16 KiB block (a leaf and its share of the tree above it).
RESUME_PER_BLOCK = 64
BLOCK = 16 * 1024


@dataclass(frozen=True)
class Room:
    needed: int  # bytes still to write, margin included
    free: int  # bytes free for an unprivileged user

    @property
    def enough(self) -> bool:
        return self.free >= self.needed


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def written(paths: Iterable[Path]) -> int:
    """The bytes the files at ``paths`` hold on disk (0 for those not there)."""
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += os.stat(path, follow_symlinks=False).st_blocks * 512
    return total


def room(directory: Path, wanted: int, already_written: int) -> Room:
    """What a download of ``wanted`` bytes into ``directory`` still needs, and has."""
    remaining = max(0, wanted - already_written)
    needed = remaining + MARGIN_FIXED + remaining // MARGIN_SHARE if remaining else 0
    return Room(needed, free_bytes(directory))


def low_water(piece_size: int) -> int:
    """Free room below which a download stops, before a write fails for want of it:
    the pieces in flight (libtorrent loses a piece whose write failed)."""
    return 2 * piece_size


def resume_reserve(wanted: int) -> int:
    """The room kept back during a download of ``wanted`` bytes for writing its
    resume data once the disk is full (it comes out of the margin above)."""
    return MIB + (wanted // BLOCK + 1) * RESUME_PER_BLOCK


def disk_full_error(
    label: str, directory: Path, found: Room, cid: str, *, filled: bool = False
) -> DiskFullError:
    """The error of a fetch that does not fit (``filled``: the disk filled up under it)."""
    what = (
        f"the disk filled up while fetching {label}"
        if filled
        else (f"not enough free disk space for {label}")
    )
    return DiskFullError(
        f"{what}: {human_size(found.needed)} needed (with a margin of "
        f"{human_size(MARGIN_FIXED)} and 1%), {human_size(found.free)} free on the disk of "
        f"{directory}",
        hint=f"free some space there, then run `sovnet fetch {cid}` again: "
        "it continues from what arrived",
    )
