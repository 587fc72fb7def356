"""BitTorrent v2 (BEP 52) per-file merkle roots.

A file is cut into 16 KiB blocks (the last may be shorter); each leaf is the
SHA-256 of its block. Leaves are padded with 32 zero bytes up to the next power
of two, and each parent is SHA-256(left || right). The root does not depend on
the torrent's piece size. An empty file has no tree; sovnet (like libtorrent)
writes its root as 32 zero bytes.

The functions work on whole subtrees so that the hashing of a large file can be
split into independent, power-of-two-aligned chunks on several threads, and the
chunk roots combined at the end (:func:`combine_subtrees`).

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import cache

BLOCK_SIZE = 16 * 1024
HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)


def leaf_count(size: int) -> int:
    """How many 16 KiB leaves a file of ``size`` bytes has (the last may be short)."""
    return -(-size // BLOCK_SIZE)


def leaf_hashes(data: bytes | bytearray | memoryview) -> list[bytes]:
    """SHA-256 of each 16 KiB block of ``data`` (the last block may be short)."""
    view = memoryview(data)
    sha256 = hashlib.sha256
    # hashlib releases the GIL for buffers over 2 KiB, so this loop runs in parallel
    # on several threads.
    return [sha256(view[i : i + BLOCK_SIZE]).digest() for i in range(0, len(view), BLOCK_SIZE)]


@cache
def pad_hash(height: int) -> bytes:
    """Root of a subtree of ``2**height`` zero leaves."""
    if height == 0:
        return ZERO_HASH
    below = pad_hash(height - 1)
    return hashlib.sha256(below + below).digest()


def subtree_root(hashes: Sequence[bytes], height: int, pad: bytes = ZERO_HASH) -> bytes:
    """Root over ``hashes`` padded with ``pad`` to ``2**height`` entries.

    ``pad`` is the root of an empty subtree at the level of ``hashes``; each
    level up, the padding becomes the hash of two paddings.
    """
    if len(hashes) > 1 << height:
        raise ValueError(f"{len(hashes)} hashes do not fit a tree of height {height}")
    sha256 = hashlib.sha256
    level = list(hashes)
    for _ in range(height):
        if len(level) % 2:
            level.append(pad)
        level = [sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
        pad = sha256(pad + pad).digest()
    return level[0] if level else pad


def height_for(count: int) -> int:
    """Height of the smallest tree with at least ``count`` leaves."""
    return max(0, (count - 1).bit_length())


def file_root(leaves: Sequence[bytes]) -> bytes:
    """The BEP 52 ``pieces root`` of a file, from all of its leaf hashes."""
    if not leaves:
        return ZERO_HASH
    return subtree_root(leaves, height_for(len(leaves)))


def combine_subtrees(roots: Sequence[bytes], chunk_height: int) -> bytes:
    """The file root from the roots of consecutive ``2**chunk_height``-leaf chunks.

    Only for files of more than one chunk (a smaller file's tree is shorter than a
    chunk: use :func:`file_root`). The last chunk's root must be computed with zero
    padding up to the full chunk, which :func:`subtree_root` does.
    """
    if len(roots) < 2:
        raise ValueError("combine_subtrees needs at least two chunks")
    return subtree_root(roots, height_for(len(roots)), pad_hash(chunk_height))


def group_roots(hashes: Sequence[bytes], group_height: int, pad: bytes = ZERO_HASH) -> list[bytes]:
    """Roots of consecutive groups of ``2**group_height`` hashes (the last group padded)."""
    per = 1 << group_height
    return [
        subtree_root(hashes[i : i + per], group_height, pad) for i in range(0, len(hashes), per)
    ]


def leaves_from_sparse_tree(
    hashes: bytes, mask: bytes | None, leaf_count: int
) -> list[bytes] | None:
    """The ``leaf_count`` leaves of a tree stored sparsely, or None unless all are there.

    The layout libtorrent keeps in its resume data: the tree's nodes numbered
    breadth-first from the root (0; the children of node n are 2n+1 and 2n+2) over
    the leaves padded to a power of two; ``mask`` a bitfield of the nodes present,
    most significant bit first (None: every node of the tree is); ``hashes`` those
    nodes, in order. Anything that does not add up is None, never an exception:
    the caller then hashes the file itself.
    """
    if leaf_count < 1 or len(hashes) % HASH_SIZE:
        return None
    padded = 1 << height_for(leaf_count)
    first_leaf = padded - 1
    if mask is None:
        if len(hashes) != (2 * padded - 1) * HASH_SIZE:
            return None
        before = first_leaf
    else:
        width = len(mask) * 8
        if width < 2 * padded - 1:
            return None
        bits = int.from_bytes(mask, "big")
        if bits.bit_count() != len(hashes) // HASH_SIZE:
            return None
        before = (bits >> (width - first_leaf)).bit_count() if first_leaf else 0
        wanted = (1 << leaf_count) - 1
        if (bits >> (width - first_leaf - leaf_count)) & wanted != wanted:
            return None
    start = before * HASH_SIZE
    return [hashes[start + i * HASH_SIZE : start + (i + 1) * HASH_SIZE] for i in range(leaf_count)]
