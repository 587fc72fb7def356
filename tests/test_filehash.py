"""filehash.blake3_fd: the BLAKE3 a fetch is checked with, on every core it may use."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import pytest

from sovnet.store import filehash


@pytest.mark.parametrize(
    "size",
    [
        0,
        1,
        1024,
        1025,
        filehash.CHUNK - 1,
        filehash.CHUNK,
        filehash.CHUNK + 1,
        3 * filehash.CHUNK + 5,
    ],
)
def test_blake3_fd_is_the_files_blake3_whatever_its_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert filehash.blake3_fd(fd) == (size, blake3.blake3(data).digest())
    finally:
        os.close(fd)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as a full disk needs root")
def test_hash_fd_into_a_full_disk_raises_its_enospc_not_a_buffer_error(tmp_path: Path) -> None:
    # The copy's write fails while slices of the mapping are alive (the chunk being
    # written, the spans in the pool): the mapping must still close, and the caller
    # see the disk's error, not "cannot close exported pointers exist".
    from tests.e2e.test_disk_full import small_disk

    source = tmp_path / "blob"
    source.write_bytes(os.urandom(3 * filehash.SPAN + 5))
    with small_disk(tmp_path / "small", 1) as small, ThreadPoolExecutor(2) as executor:
        fd = os.open(source, os.O_RDONLY)
        try:
            with open(small / "copy", "wb") as sink, pytest.raises(OSError) as raised:
                filehash.hash_fd(fd, executor, piece_size=1 << 20, sink=sink)
        finally:
            os.close(fd)
    assert raised.value.errno == errno.ENOSPC, raised.value
