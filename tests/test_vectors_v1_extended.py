"""tests/vectors/v1-extended: more released vectors for manifest format 1.

The model's manifest, hashes and signatures, libtorrent's agreement on its roots and
piece layers at 16 KiB pieces, and every case's verdict, each checked against the
code; and the script that made them makes them again, byte for byte.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3
import libtorrent as lt
import pytest

from sovnet.core import merkle, torrent
from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.core.signing import PrivateKey, PublicKey, SignatureBundle, signed_message
from sovnet.errors import SovnetError
from sovnet.store import filehash
from sovnet.store.publish import publish
from sovnet.store.store import Store
from sovnet.trust.gate import open_manifest
from sovnet.trust.keys import TrustedKey, TrustStore
from tests.conftest import load_script, loopback_session

VECTORS = Path(__file__).parent / "vectors" / "v1-extended"
SPEC: dict[str, Any] = json.loads((VECTORS / "vectors.json").read_text(encoding="utf-8"))
MODEL: dict[str, Any] = SPEC["model"]
CASES: list[dict[str, Any]] = SPEC["cases"]
RAW = (VECTORS / "manifest.json").read_bytes()
CID_ = CID.parse(MODEL["cid"])


def _trust(*keys: PublicKey) -> TrustStore:
    return TrustStore(tuple(TrustedKey(k.key_id, f"signer {i}", k) for i, k in enumerate(keys)))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_script_writes_exactly_the_released_files(tmp_path: Path) -> None:
    load_script("make_vectors_v1_extended").build(tmp_path / "out")
    released = _files(VECTORS)
    del released["README.md"]  # written by hand
    assert _files(tmp_path / "out") == released


def test_the_manifest_is_canonical_and_its_cid_is_its_blake3() -> None:
    manifest = Manifest.from_bytes(RAW)
    assert manifest.to_bytes() == RAW
    assert blake3.blake3(RAW).digest() == CID_.digest and str(manifest.cid) == MODEL["cid"]
    assert (manifest.name, manifest.version, manifest.license) == (MODEL["name"], None, None)
    assert manifest.piece_size == MODEL["piece_size"] == 16 * 1024
    assert b'"license":null' in RAW and b'"version":null' in RAW
    # Sorted by code point: U+FF5A before U+1F600 (UTF-16 order would swap them), and
    # docs.txt before docs/ ('.' < '/').
    paths = [f.path for f in manifest.files]
    assert paths.index("docs.txt") < paths.index("docs/café/naïve.md")
    assert paths.index("docs/\uff5a.txt") < paths.index("docs/\U0001f600.txt")
    sizes = {f.path: f.size for f in manifest.files}
    assert sizes["empty.txt"] == 0
    assert sizes["model.safetensors"] == 3 * merkle.BLOCK_SIZE + merkle.BLOCK_SIZE // 2
    assert sizes["shards/large.txt"] > 5 * manifest.piece_size


def test_both_signers_signed_and_each_alone_makes_it_trusted() -> None:
    bundle = SignatureBundle.from_bytes((VECTORS / "signatures.json").read_bytes(), CID_)
    assert signed_message(CID_).hex() == MODEL["signed_message_hex"]
    keys = [PrivateKey.from_seed(bytes.fromhex(k["seed_hex"])).public_key for k in SPEC["keys"]]
    for key, recorded in zip(keys, SPEC["keys"], strict=True):
        assert key.raw.hex() == recorded["public_key_hex"]
        assert key.key_id.raw.hex() == recorded["key_id_hex"]
    assert [s.public_key.raw.hex() for s in bundle.signatures] == [
        s["public_key_hex"] for s in MODEL["signatures"]
    ]
    for signature, recorded in zip(bundle.signatures, MODEL["signatures"], strict=True):
        assert signature.value.hex() == recorded["signature_hex"]
        assert signature.verify(CID_)
    assert len(bundle.signatures) == 2
    for key in keys:
        assert open_manifest(CID_, RAW, bundle, _trust(key)).trusted


def test_every_file_hashes_to_its_entry_and_its_piece_layer(tmp_path: Path) -> None:
    manifest = Manifest.from_bytes(RAW)
    with ThreadPoolExecutor(2) as executor:
        for entry in manifest.files:
            path = VECTORS / "model" / entry.path
            digest = filehash.hash_file(path, executor, piece_size=manifest.piece_size)
            assert (digest.size, digest.blake3, digest.pieces_root) == (
                entry.size,
                entry.blake3,
                entry.pieces_root,
            ), entry.path
            assert digest.piece_layer.hex() == MODEL["piece_layers_hex"][entry.path]
    assert merkle.file_root([]) == bytes(32) == manifest.file("empty.txt").pieces_root


def test_publishing_the_model_gives_the_same_file_entries(tmp_path: Path) -> None:
    """sovnet publish picks 4 MiB pieces, so the CID differs; every file entry (path,
    size, hashes, format, facts) is the one in the vector."""
    store = Store(tmp_path / "state").init()
    key = PrivateKey.from_seed(bytes.fromhex(SPEC["keys"][0]["seed_hex"]))
    result = publish(store, key, VECTORS / "model", name=MODEL["name"], copy=True)
    published = Manifest.from_bytes(store.manifest_bytes(result.cid))
    assert published.files == Manifest.from_bytes(RAW).files


def _libtorrent_layout(directory: Path, piece_size: int) -> dict[str, tuple[bytes, bytes]]:
    """libtorrent's own torrent of ``directory``: path -> (root, piece layer)."""
    entries = [
        lt.create_file_entry(str(p.relative_to(directory.parent)), p.stat().st_size)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    ]
    created = lt.create_torrent(entries, piece_size, lt.create_torrent.v2_only)
    lt.set_piece_hashes(created, str(directory.parent))
    generated = created.generate()
    layers = generated.get(b"piece layers", {})
    files = lt.torrent_info(generated).layout()
    result = {}
    for i in range(files.num_files()):
        if files.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        root = files.root(i).to_bytes()
        path = files.file_path(i).split("/", 1)[1]
        result[path] = (root, layers.get(root, b""))
    return result


def test_libtorrent_makes_the_same_roots_and_piece_layers() -> None:
    manifest = Manifest.from_bytes(RAW)
    theirs = _libtorrent_layout(VECTORS / "model", manifest.piece_size)
    assert set(theirs) == {f.path for f in manifest.files}
    for entry in manifest.files:
        root, layer = theirs[entry.path]
        assert root == entry.pieces_root, entry.path
        assert layer.hex() == MODEL["piece_layers_hex"][entry.path], entry.path


def test_libtorrent_checks_the_model_against_the_torrent_derived_from_it(
    tmp_path: Path,
) -> None:
    """The manifest's torrent (§14.1) with the vector's piece layers: libtorrent
    checks every 16 KiB piece of the model's files against it and finds all."""
    manifest = Manifest.from_bytes(RAW)
    spec = torrent.derive(CID_, manifest, b"unused")
    info = lt.bdecode(spec.info)
    del info[b"ssl-cert"]  # an SSL torrent needs a real network; the check does not
    layers = {
        e.pieces_root: bytes.fromhex(MODEL["piece_layers_hex"][e.path])
        for e in manifest.files
        if MODEL["piece_layers_hex"][e.path]
    }
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(lt.bencode({b"info": info, b"piece layers": layers}))
    params.save_path = str(tmp_path)
    shutil.copytree(VECTORS / "model", tmp_path / MODEL["cid"])
    layout = params.ti.layout()
    assert [
        layout.file_path(i)
        for i in range(layout.num_files())
        if not layout.file_flags(i) & lt.file_storage.flag_pad_file
    ] == [f"{MODEL['cid']}/{f.path}" for f in spec.files]
    session = loopback_session()
    handle = session.add_torrent(params)
    deadline = time.monotonic() + 60
    while not handle.status().is_seeding:
        assert time.monotonic() < deadline, f"libtorrent has {handle.status().num_pieces} pieces"
        assert not handle.status().errc.value(), handle.status().errc.message()
        time.sleep(0.05)
    assert handle.status().num_pieces == params.ti.num_pieces()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_each_case_gets_its_verdict(case: dict[str, Any]) -> None:
    def verdict() -> None:
        if case["kind"] == "cid":
            CID.parse(case["text"])
        elif case["kind"] == "manifest":
            Manifest.from_bytes((VECTORS / case["file"]).read_bytes())
        else:
            raw = (VECTORS / case["manifest"]).read_bytes()
            cid = CID.parse(case["cid"])
            bundle = SignatureBundle.from_bytes((VECTORS / case["file"]).read_bytes(), cid)
            trusted = {bytes.fromhex(k) for k in case["trusted_key_ids_hex"]}
            keys = [s.public_key for s in bundle.signatures if s.key_id.raw in trusted]
            assert len(keys) == len(trusted)  # the bundle holds the key it is about
            assert not any(s.verify(cid) for s in bundle.signatures)
            open_manifest(cid, raw, bundle, _trust(*keys))

    if case["valid"]:
        verdict()
        return
    with pytest.raises(SovnetError) as raised:
        verdict()
    assert (raised.value.code, raised.value.exit_code) == (case["error"], case["exit_code"])
