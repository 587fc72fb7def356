"""filehash.blake3_fd: the BLAKE3 a fetch is checked with, on every core it may use."""

from __future__ import annotations

import os
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
