"""BEP 52 roots: ours equal libtorrent's for the sizes where trees are easy to get wrong."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import libtorrent as lt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core import merkle
from sovnet.store import filehash
from tests.conftest import loopback_session

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


# -- the leaves libtorrent verified, from its resume data -----------------------------


def _download_resume_data(directory: Path, piece_size: int, tmp_path: Path) -> tuple[Any, bytes]:
    """Seed ``directory`` from one libtorrent session to another over 127.0.0.1; the
    torrent, and the downloader's resume data once it has everything."""
    torrent = libtorrent_torrent(directory, piece_size)
    seeder, downloader = loopback_session(), loopback_session()
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = str(directory.parent)
    seeder.add_torrent(params)
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(torrent)
    params.save_path = str(tmp_path)
    handle = downloader.add_torrent(params)
    deadline = time.monotonic() + 60
    while not handle.status().is_seeding:
        assert time.monotonic() < deadline, "the loopback download did not finish in 60 s"
        if handle.status().num_peers == 0:
            handle.connect_peer(("127.0.0.1", seeder.listen_port()))
        time.sleep(0.1)
    handle.save_resume_data(lt.torrent_handle.flush_disk_cache)
    while time.monotonic() < deadline:
        for alert in downloader.pop_alerts():
            if isinstance(alert, lt.save_resume_data_alert):
                return params.ti, bytes(lt.write_resume_data_buf(alert.params))
        time.sleep(0.05)
    raise AssertionError("no resume data within 60 s")


@pytest.mark.parametrize("piece_size", [16 * KIB, 4 * MIB])
def test_leaves_libtorrent_verified_make_its_piece_layers(
    sample_files: Path, piece_size: int, tmp_path: Path
) -> None:
    info, resume = _download_resume_data(sample_files, piece_size, tmp_path)
    trees = lt.bdecode(resume)[b"trees"]
    layout = info.layout()
    layers = libtorrent_torrent(sample_files, piece_size).get(b"piece layers", {})
    assert isinstance(layers, dict)
    checked = 0
    for i in range(layout.num_files()):
        if layout.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        data = (sample_files / layout.file_name(i)).read_bytes()
        if not data:
            continue
        count = merkle.leaf_count(len(data))
        tree = trees[i]
        leaves = merkle.leaves_from_sparse_tree(tree[b"hashes"], tree.get(b"mask"), count)
        if len(data) <= piece_size:
            continue  # one piece, no layer: libtorrent need not keep its leaves
        assert leaves == merkle.leaf_hashes(data), layout.file_name(i)
        layer = filehash.layer_from_leaves(leaves, len(data), piece_size)
        assert layer == layers[layout.root(i).to_bytes()]
        checked += 1
    assert checked == len([s for s in SIZES if s > piece_size])


def _sparse(nodes: dict[int, bytes], leaf_count: int) -> tuple[bytes, bytes]:
    """``nodes`` (by breadth-first index) stored as libtorrent stores a tree."""
    padded = 1 << merkle.height_for(leaf_count)
    width = 2 * padded - 1
    bits = 0
    for index in nodes:
        bits |= 1 << (-(-width // 8) * 8 - 1 - index)
    mask = bits.to_bytes(-(-width // 8), "big")
    return b"".join(nodes[i] for i in sorted(nodes)), mask


digests = st.binary(min_size=32, max_size=32)


@given(st.lists(digests, min_size=1, max_size=300), st.data())
def test_the_leaves_of_a_sparse_tree_come_back_whole(
    leaves: list[bytes], data: st.DataObject
) -> None:
    first = (1 << merkle.height_for(len(leaves))) - 1
    nodes = {first + i: leaf for i, leaf in enumerate(leaves)}
    # Nodes above the leaves may be stored too (a root, a piece layer): they are skipped.
    for index in data.draw(st.sets(st.integers(0, first - 1), max_size=8)) if first else ():
        nodes[index] = data.draw(digests)
    hashes, mask = _sparse(nodes, len(leaves))
    assert merkle.leaves_from_sparse_tree(hashes, mask, len(leaves)) == leaves
    # One leaf missing, or the wrong count of hashes: not a whole set of leaves.
    missing = data.draw(st.integers(0, len(leaves) - 1))
    del nodes[first + missing]
    assert merkle.leaves_from_sparse_tree(*_sparse(nodes, len(leaves)), len(leaves)) is None
    assert merkle.leaves_from_sparse_tree(hashes[:-32], mask, len(leaves)) is None
    # Without a mask, every node of the tree is there, the padding leaves too.
    padded = first + 1
    full = b"".join(data.draw(digests) for _ in range(first)) + b"".join(leaves)
    full += merkle.ZERO_HASH * (padded - len(leaves))
    assert merkle.leaves_from_sparse_tree(full, None, len(leaves)) == leaves
    assert merkle.leaves_from_sparse_tree(full[32:], None, len(leaves)) is None


@given(st.binary(max_size=400), st.none() | st.binary(max_size=80), st.integers(-2, 400))
def test_any_sparse_tree_gives_leaves_or_none(
    hashes: bytes, mask: bytes | None, count: int
) -> None:
    leaves = merkle.leaves_from_sparse_tree(hashes, mask, count)
    assert leaves is None or (len(leaves) == count and all(len(h) == 32 for h in leaves))
