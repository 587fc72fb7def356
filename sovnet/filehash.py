"""Hash a file once from disk: BLAKE3 and the BEP 52 pieces root in one read.

The file is read in 8 MiB chunks. Each chunk is cut into two 4 MiB spans whose
SHA-256 leaves and subtree roots are computed on a thread pool while this thread
feeds the whole chunk to BLAKE3 and reads the next chunk. hashlib, blake3 and
``readinto`` all release the GIL, so the work spreads over every core. An
optional ``sink`` receives each chunk too, so copying a file costs no second read.

Blocking by design: callers in asyncio run it in a thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import blake3

from sovnet import merkle

SPAN = 4 * 1024 * 1024
SPAN_HEIGHT = 8  # 4 MiB span = 2**8 blocks of 16 KiB
CHUNK = 2 * SPAN
BUFFERS = 3

ProgressCallback = Callable[[int], None]


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


@dataclass(frozen=True)
class FileDigest:
    size: int
    blake3: bytes
    pieces_root: bytes


def _span_root(view: memoryview) -> bytes:
    return merkle.subtree_root(merkle.leaf_hashes(view), SPAN_HEIGHT)


def hash_stream(
    source: Readable,
    executor: Executor,
    *,
    sink: BinaryIO | None = None,
    progress: ProgressCallback | None = None,
) -> FileDigest:
    """Hash ``source`` from its current position to its end."""
    hasher = blake3.blake3()
    buffers = [bytearray(CHUNK) for _ in range(BUFFERS)]
    pending: list[list[Future[bytes]]] = [[] for _ in range(BUFFERS)]
    span_roots: list[bytes] = []
    small_root = merkle.ZERO_HASH
    size = 0
    index = 0
    while True:
        slot = index % BUFFERS
        # Before reusing a buffer, its spans must be hashed.
        span_roots.extend(f.result() for f in pending[slot])
        pending[slot] = []
        view = memoryview(buffers[slot])
        filled = 0
        while filled < CHUNK:
            got = source.readinto(view[filled:])
            if not got:
                break
            filled += got
        if not filled:
            break
        data = view[:filled]
        if size == 0 and filled <= SPAN:
            # The whole file fits one span (a short read means end of file), and its
            # tree may be shorter than a span's: hash it directly.
            small_root = merkle.file_root(merkle.leaf_hashes(data))
        else:
            pending[slot] = [
                executor.submit(_span_root, data[start : start + SPAN])
                for start in range(0, filled, SPAN)
            ]
        hasher.update(data)
        if sink is not None:
            sink.write(data)
        size += filled
        if progress is not None:
            progress(filled)
        index += 1
        if filled < CHUNK:
            break
    for slot_offset in range(BUFFERS):
        slot = (index + slot_offset) % BUFFERS
        span_roots.extend(f.result() for f in pending[slot])
    root = small_root if size <= SPAN else merkle.combine_subtrees(span_roots, SPAN_HEIGHT)
    return FileDigest(size=size, blake3=hasher.digest(), pieces_root=root)


def hash_file(
    path: str | os.PathLike[str],
    executor: Executor,
    *,
    progress: ProgressCallback | None = None,
) -> FileDigest:
    with open(path, "rb", buffering=0) as source:
        return hash_stream(source, executor, progress=progress)
