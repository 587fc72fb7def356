"""The torrent derived from a manifest is the one libtorrent reads: same info-hash,
same file order, same roots; and bencoding matches libtorrent's byte for byte."""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import libtorrent as lt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovnet.core import bencode, torrent
from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.errors import ManifestFormatError
from sovnet.formats.fileformat import FileFormat
from sovnet.store import filehash
from tests.strategies import manifests

CA = b"-----BEGIN CERTIFICATE-----\nnot parsed by the info-hash\n-----END CERTIFICATE-----\n"

bvalues = st.recursive(
    st.integers(-(2**62), 2**62) | st.binary(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.binary(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(bvalues)
def test_bencode_matches_libtorrent(value: bencode.BValue) -> None:
    assert bencode.encode(value) == bytes(lt.bencode(value))


def _fits_libtorrent(manifest: Manifest) -> bool:
    # libtorrent refuses torrents of zero bytes and of more than 2**21 pieces;
    # derive() refuses non-empty files with a zero root (tested below).
    pieces = sum(-(-f.size // manifest.piece_size) for f in manifest.files)
    zero_roots = any(f.size and f.pieces_root == bytes(32) for f in manifest.files)
    return manifest.total_size > 0 and pieces <= 2**21 and not zero_roots


def _layout_paths(info: lt.torrent_info) -> list[str]:
    layout = info.layout()
    return [
        layout.file_path(i)
        for i in range(layout.num_files())
        if not layout.file_flags(i) & lt.file_storage.flag_pad_file
    ]


@settings(max_examples=60, suppress_health_check=[HealthCheck.filter_too_much])
@given(manifests().filter(_fits_libtorrent))
def test_libtorrent_derives_the_same_info_hash_and_order(manifest: Manifest) -> None:
    cid = manifest.cid
    spec = torrent.derive(cid, manifest, CA)
    info = lt.torrent_info(spec.torrent_file({}))
    assert info.info_hashes().v2.to_bytes() == spec.info_hash
    assert spec.info_hash == hashlib.sha256(spec.info).digest()
    prefix = "" if spec.single_file else f"{cid}/"
    assert _layout_paths(info) == [prefix + f.path for f in spec.files]
    layout = info.layout()
    roots = [
        layout.root(i).to_bytes()
        for i in range(layout.num_files())
        if not layout.file_flags(i) & lt.file_storage.flag_pad_file
    ]
    assert roots == [f.pieces_root if f.size else bytes(32) for f in spec.files]
    assert info.piece_length() == manifest.piece_size


def _entry(path: str, size: int) -> FileEntry:
    return FileEntry(path, size, bytes(32), b"\1" * 32 if size else bytes(32), FileFormat.TEXT)


def test_tree_order_differs_from_text_order() -> None:
    manifest = Manifest(
        name="acme/order",
        piece_size=1 << 22,
        files=(_entry("a.txt", 5), _entry("a/b", 7), _entry("b", 0)),
    )
    assert [f.path for f in manifest.files] == ["a.txt", "a/b", "b"]
    spec = torrent.derive(manifest.cid, manifest, CA)
    assert [f.path for f in spec.files] == ["a/b", "a.txt", "b"]
    assert _layout_paths(lt.torrent_info(spec.torrent_file({}))) == [
        f"{manifest.cid}/a/b",
        f"{manifest.cid}/a.txt",
        f"{manifest.cid}/b",
    ]


def test_the_ca_certificate_changes_the_swarm() -> None:
    manifest = Manifest(name="acme/ca", piece_size=1 << 22, files=(_entry("f", 9),))
    one = torrent.derive(manifest.cid, manifest, CA)
    other = torrent.derive(manifest.cid, manifest, CA.replace(b"parsed", b"PARSED"))
    assert one.info_hash != other.info_hash
    assert lt.torrent_info(one.torrent_file({})).ssl_cert() == CA.decode()


def test_a_non_empty_file_with_a_zero_root_is_refused() -> None:
    entry = FileEntry("f", 10, bytes(32), bytes(32), FileFormat.TEXT)
    manifest = Manifest(name="acme/zero", piece_size=1 << 22, files=(entry,))
    with pytest.raises(ManifestFormatError, match="all-zero pieces root"):
        torrent.derive(manifest.cid, manifest, CA)


def test_a_model_of_empty_files_has_no_payload() -> None:
    manifest = Manifest(name="acme/empty", piece_size=1 << 22, files=(_entry("e", 0),))
    assert not torrent.derive(manifest.cid, manifest, CA).has_payload


def test_torrent_file_with_piece_layers_loads(tmp_path: Path) -> None:
    """A whole .torrent (info + our piece layers) is accepted and keeps the info-hash."""
    data = bytes(range(256)) * (9 * 4096 + 5)  # 9 MiB and a bit: three 4 MiB pieces
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    with ThreadPoolExecutor(2) as executor:
        digest = filehash.hash_file(path, executor, piece_size=1 << 22)
    entry = FileEntry("w.bin", len(data), digest.blake3, digest.pieces_root, FileFormat.TEXT)
    manifest = Manifest(name="acme/layers", piece_size=1 << 22, files=(entry,))
    spec = torrent.derive(CID.of(manifest.to_bytes()), manifest, CA)
    whole = spec.torrent_file({digest.pieces_root: digest.piece_layer})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        info = lt.torrent_info(whole)
    assert info.info_hashes().v2.to_bytes() == spec.info_hash
    decoded = lt.bdecode(whole)
    assert decoded[b"piece layers"] == {digest.pieces_root: digest.piece_layer}
    assert len(digest.piece_layer) == 3 * 32
