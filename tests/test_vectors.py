"""Released test vectors: a fixed key and model must give the fixed CID and signature."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest

from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.core.signing import PrivateKey, PublicKey, SignatureBundle, signed_message
from sovnet.store.publish import publish
from sovnet.store.store import Store
from sovnet.trust.gate import open_manifest
from sovnet.trust.keys import TrustedKey, TrustStore

VECTORS = Path(__file__).parent / "vectors"
# One directory per format version, each a single model with expected.json; other
# sets (v1-extended) have their own layout and test.
VERSIONS = sorted(p for p in VECTORS.iterdir() if (p / "expected.json").is_file())


def _expected(version: Path) -> dict[str, str]:
    value: dict[str, str] = json.loads((version / "expected.json").read_text())
    return value


@pytest.mark.parametrize("version", VERSIONS, ids=[p.name for p in VERSIONS])
def test_publishing_the_vector_model_reproduces_cid_manifest_and_signature(
    version: Path, tmp_path: Path
) -> None:
    expected = _expected(version)
    key = PrivateKey.from_seed(bytes.fromhex(expected["key_seed_hex"]))
    assert str(key.public_key) == expected["public_key"]
    # The v1 vector has the 8-group text form of key ids, from before the check group.
    assert key.public_key.key_id.short() == expected["key_id"]
    store = Store(tmp_path / "state").init()
    result = publish(
        store,
        key,
        version / "model",
        name=expected["name"],
        version=expected["version"],
        license=expected["license"],
        copy=True,  # never touch the vector files
    )
    assert str(result.cid) == expected["cid"]
    assert store.manifest_bytes(result.cid) == (version / "manifest.json").read_bytes()
    assert store.bundle(result.cid).to_bytes() == (version / "signatures.json").read_bytes()


@pytest.mark.parametrize("version", VERSIONS, ids=[p.name for p in VERSIONS])
def test_vector_files_verify_from_raw_bytes(version: Path) -> None:
    expected = _expected(version)
    raw = (version / "manifest.json").read_bytes()
    cid = CID.parse(expected["cid"])
    assert blake3.blake3(raw).digest() == cid.digest
    assert signed_message(cid).hex() == expected["signed_message_hex"]
    public = PublicKey.parse(expected["public_key"])
    assert public.verify(cid, bytes.fromhex(expected["signature_hex"]))
    bundle = SignatureBundle.from_bytes((version / "signatures.json").read_bytes(), cid)
    trust = TrustStore((TrustedKey(public.key_id, "vector", public),))
    opened = open_manifest(cid, raw, bundle, trust)
    assert opened.trusted
    assert Manifest.from_bytes(raw).to_bytes() == raw
    for entry in opened.manifest.files:
        content = (version / "model" / entry.path).read_bytes()
        assert blake3.blake3(content).digest() == entry.blake3
