"""BEP 52 roots: ours equal libtorrent's for the sizes where trees are easy to get wrong."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libtorrent as lt
import pytest

from sovnet import filehash, merkle

KIB = 1024
MIB = 1024 * KIB
SIZES = [
    0,
    1,
    16 * KIB - 1,
    16 * KIB,
    16 * KIB + 1,
    4 * MIB,  # exactly one 4 MiB piece and one hashing span
    4 * MIB + 1,
    8 * MIB,  # exactly one hashing chunk
    3 * 4 * MIB + 12345,  # many pieces, not a multiple of the piece size
    25 * MIB + 7,  # spans several hashing chunks
]


def libtorrent_torrent(directory: Path, piece_size: int) -> dict[bytes, object]:
    entries = [
        lt.create_file_entry(f"{directory.name}/{path.name}", path.stat().st_size)
        for path in sorted(directory.iterdir())
    ]
    torrent = lt.create_torrent(entries, piece_size, lt.create_torrent.v2_only)
    lt.set_piece_hashes(torrent, str(directory.parent))
    generated: dict[bytes, object] = torrent.generate()
    return generated


def libtorrent_roots(directory: Path, piece_size: int) -> dict[str, bytes]:
    files = lt.torrent_info(libtorrent_torrent(directory, piece_size)).layout()
    return {
        files.file_name(i): files.root(i).to_bytes()
        for i in range(files.num_files())
        if not files.file_flags(i) & lt.file_storage.flag_pad_file
    }


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("roots") / "model"
    directory.mkdir()
    for size in SIZES:
        (directory / f"f{size:09d}").write_bytes(os.urandom(size))
    return directory


@pytest.mark.parametrize("piece_size", [16 * KIB, 4 * MIB])
def test_roots_equal_libtorrent(sample_files: Path, piece_size: int) -> None:
    theirs = libtorrent_roots(sample_files, piece_size)
    with ThreadPoolExecutor(2) as executor:
        for path in sorted(sample_files.iterdir()):
            data = path.read_bytes()
            direct = merkle.file_root(merkle.leaf_hashes(data))
            streamed = filehash.hash_file(path, executor)
            assert direct == theirs[path.name], path.name
            assert streamed.pieces_root == theirs[path.name], path.name
            assert streamed.size == len(data)


def test_empty_file_root_is_zero() -> None:
    assert merkle.file_root([]) == bytes(32)


def test_combined_chunks_equal_the_whole_tree() -> None:
    leaves = [i.to_bytes(2, "big") * 16 for i in range(1000)]
    chunks = [merkle.subtree_root(leaves[i : i + 256], 8) for i in range(0, 1000, 256)]
    assert merkle.combine_subtrees(chunks, 8) == merkle.file_root(leaves)


@pytest.mark.parametrize("piece_size", [16 * KIB, 64 * KIB, 4 * MIB, 8 * MIB, 16 * MIB])
def test_piece_layers_equal_libtorrent(sample_files: Path, piece_size: int) -> None:
    torrent = libtorrent_torrent(sample_files, piece_size)
    layers = torrent.get(b"piece layers", {})
    assert isinstance(layers, dict)
    with ThreadPoolExecutor(2) as executor:
        for path in sorted(sample_files.iterdir()):
            digest = filehash.hash_file(path, executor, piece_size=piece_size)
            expected = layers.get(digest.pieces_root, b"") if digest.size else b""
            assert digest.piece_layer == expected, (path.name, piece_size)
            assert filehash.layer_matches(
                digest.piece_layer, digest.size, piece_size, digest.pieces_root
            )
            if digest.piece_layer:
                damaged = bytes([digest.piece_layer[0] ^ 1]) + digest.piece_layer[1:]
                assert not filehash.layer_matches(
                    damaged, digest.size, piece_size, digest.pieces_root
                )
                assert not filehash.layer_matches(
                    digest.piece_layer[32:], digest.size, piece_size, digest.pieces_root
                )
