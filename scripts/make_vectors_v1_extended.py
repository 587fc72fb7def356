"""Write tests/vectors/v1-extended/: more vectors for manifest format 1.

``python scripts/make_vectors_v1_extended.py [OUT_DIR]``

v1 (tests/vectors/v1) has three files smaller than one 16 KiB leaf. These vectors
exercise what v1 cannot, for the same format version 1: merkle trees with padding
(a file of 3.5 leaves, one of 5 leaves and a byte), piece layers at 16 KiB pieces,
the empty file, nested and non-ASCII paths (NFC; one above U+FFFF, where code
point order and UTF-16 order differ), null ``version`` and ``license``, two
signers, and cases a verifier must refuse, each with its verdict in vectors.json.

Deterministic: contents come from SHAKE-256 of fixed seeds, keys from fixed seeds,
and Ed25519 signing is deterministic; running it again writes the same bytes (the
test checks that). The released files are never edited (tests/vectors/README.md).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import blake3

from sovnet.core import ed25519, merkle
from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.core.signing import (
    PrivateKey,
    PublicKey,
    Signature,
    SignatureBundle,
    signed_message,
)
from sovnet.formats.fileformat import FileFormat
from sovnet.formats.safetensors import SafetensorsFacts
from sovnet.store.filehash import layer_from_leaves

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "vectors" / "v1-extended"
NAME = "sovnet/test-vector-extended"
PIECE_SIZE = 16 * 1024
LEAF = merkle.BLOCK_SIZE
SEEDS = (bytes(range(32)), bytes(range(32, 64)))  # signer A is v1's key
IDENTITY_KEY = bytes([1]) + bytes(31)
ORDER_TWO_KEY = (ed25519.P - 1).to_bytes(32, "little")
R_IDENTITY_S_ZERO = bytes([1]) + bytes(31) + bytes(32)


def _stream(label: str, size: int) -> bytes:
    return hashlib.shake_256(b"sovnet vectors v1-extended " + label.encode()).digest(size)


def _text(label: str, size: int) -> bytes:
    """``size`` bytes of printable ASCII lines (a valid `text` file)."""
    hexed = _stream(label, size // 2 + 1).hex()
    lines = "\n".join(hexed[i : i + 63] for i in range(0, len(hexed), 63))
    return lines.encode()[: size - 1] + b"\n"


def _safetensors(total: int) -> bytes:
    """A safetensors file of exactly ``total`` bytes: one F32 tensor, header padded."""
    count = (total - 8 - 200) // 4
    header = json.dumps(
        {"weight": {"dtype": "F32", "shape": [count], "data_offsets": [0, count * 4]}},
        separators=(",", ":"),
    ).encode()
    header += b" " * (total - 8 - count * 4 - len(header))
    return struct.pack("<Q", len(header)) + header + _stream("weight", count * 4)


def model_files() -> dict[str, tuple[bytes, FileFormat]]:
    """The model: path -> (content, format). Paths are NFC."""
    return {
        "README.md": (b"sovnet format 1, extended test vector\n", FileFormat.TEXT),
        "config.json": (b'{"model_type":"sovnet-vector"}\n', FileFormat.JSON),
        "docs.txt": (
            b"sorts before docs/ as text, after it in a torrent's tree\n",
            FileFormat.TEXT,
        ),
        "docs/caf\u00e9/na\u00efve.md": ("Nested, NFC: caf\u00e9\n".encode(), FileFormat.TEXT),
        "docs/\uff5a.txt": (
            b"U+FF5A: before U+1F600 by code point, after it in UTF-16\n",
            FileFormat.TEXT,
        ),
        "docs/\U0001f600.txt": (b"U+1F600\n", FileFormat.TEXT),
        "empty.txt": (b"", FileFormat.TEXT),
        "model.safetensors": (_safetensors(3 * LEAF + LEAF // 2), FileFormat.SAFETENSORS),
        "shards/large.txt": (_text("large", 5 * LEAF + 1), FileFormat.TEXT),
    }


def _entry(path: str, content: bytes, file_format: FileFormat) -> FileEntry:
    facts = SafetensorsFacts(tensor_count=1, dtypes=("F32",))
    return FileEntry(
        path=path,
        size=len(content),
        blake3=blake3.blake3(content).digest(),
        pieces_root=merkle.file_root(merkle.leaf_hashes(content)) if content else bytes(32),
        format=file_format,
        facts=facts if file_format is FileFormat.SAFETENSORS else None,
    )


def _compact(value: object) -> bytes:
    # Like canonical JSON but without its checks: for the cases that break them.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _bundle_bytes(cid: CID, entries: list[tuple[bytes, bytes]]) -> bytes:
    return SignatureBundle(
        cid, tuple(Signature(PublicKey(key), value) for key, value in entries)
    ).to_bytes()


def _key_json(public: bytes) -> dict[str, str]:
    # Key ids as raw hex: their text form belongs to §8, not to these vectors.
    return {"public_key_hex": public.hex(), "key_id_hex": PublicKey(public).key_id.raw.hex()}


def build(out: Path) -> None:
    files = model_files()
    if out.exists():
        # Released vectors are never rewritten; write elsewhere and compare.
        raise SystemExit(f"{out} exists: released vectors are never rewritten")
    (out / "cases").mkdir(parents=True)
    for path, (content, _) in files.items():
        target = out / "model" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)

    manifest = Manifest(
        name=NAME,
        files=tuple(_entry(p, c, f) for p, (c, f) in sorted(files.items())),
        piece_size=PIECE_SIZE,
    )
    raw = manifest.to_bytes()
    cid = manifest.cid
    keys = [PrivateKey.from_seed(seed) for seed in SEEDS]
    bundle = SignatureBundle(cid)
    for key in keys:
        bundle = bundle.with_signature(key.sign(cid))
    (out / "manifest.json").write_bytes(raw)
    (out / "signatures.json").write_bytes(bundle.to_bytes())
    signature_a = keys[0].sign(cid).value
    document = json.loads(raw)

    cases: list[dict[str, object]] = []

    def case(name: str, kind: str, data: bytes | None, verdict: dict[str, object]) -> None:
        entry: dict[str, object] = {"name": name, "kind": kind}
        if data is not None:
            (out / "cases" / f"{name}.json").write_bytes(data)
            entry["file"] = f"cases/{name}.json"
        cases.append({**entry, **verdict})

    valid = {"valid": True}
    bad_manifest = {"valid": False, "error": "invalid-manifest", "exit_code": 4}
    untrusted = {"valid": False, "error": "not-trusted", "exit_code": 6}

    def mutated(change: str) -> bytes:
        value = json.loads(raw)
        entries = value["files"]
        if change == "boolean size":
            next(e for e in entries if e["path"] == "empty.txt")["size"] = True
        elif change == "no dtypes":
            next(e for e in entries if e["format"] == "safetensors")["facts"]["dtypes"] = []
        elif change == "version 2":
            value["sovnet_manifest"] = 2
        return _compact(value)

    def with_paths(*paths: str) -> bytes:
        entry = {"blake3": "00" * 32, "facts": {}, "format": "text", "pieces_root": "00" * 32}
        value = {**document, "files": [{**entry, "path": p, "size": 0} for p in sorted(paths)]}
        return _compact(value)

    escaped = raw.replace("\u00e9".encode(), b"\\u00e9")
    assert escaped != raw
    case(
        "manifest-escaped-non-ascii",
        "manifest",
        escaped,
        {**bad_manifest, "why": "§3: not canonical (a \\u00e9 escape)"},
    )
    case(
        "manifest-boolean-size",
        "manifest",
        mutated("boolean size"),
        {**bad_manifest, "why": "§3, §4.2: true is not an integer"},
    )
    case(
        "manifest-tensors-without-dtypes",
        "manifest",
        mutated("no dtypes"),
        {**bad_manifest, "why": "§4.5: dtypes is empty exactly when tensor_count is 0"},
    )
    case(
        "manifest-version-2",
        "manifest",
        mutated("version 2"),
        {**bad_manifest, "why": "§1: upgrade sovnet"},
    )
    case(
        "manifest-case-collision",
        "manifest",
        with_paths("STRASSE.txt", "stra\u00dfe.txt"),
        {**bad_manifest, "why": "§5.2: equal under full case folding"},
    )
    case(
        "manifest-unicode-16-letters",
        "manifest",
        with_paths("\u1c89.txt", "\u1c8a.txt"),
        {
            **valid,
            "why": "§5.2: Unicode 14.0.0 folding; U+1C89 folds to U+1C8A only from Unicode 16.0",
        },
    )

    text = str(cid)
    last = "abcdefghijklmnopqrstuvwxyz234567"
    trailing = text[:-1] + last[last.index(text[-1]) | 1]
    case(
        "cid-trailing-bits",
        "cid",
        None,
        {
            "text": trailing,
            "valid": False,
            "error": "invalid-cid",
            "exit_code": 4,
            "why": "§2 step 7: non-zero trailing bits",
        },
    )

    s = int.from_bytes(signature_a[32:], "little")
    high_s = signature_a[:32] + (s + ed25519.L).to_bytes(32, "little")

    def k_parity(manifest_bytes: bytes) -> int:
        # k = SHA-512(R || A || M) mod L; [k]A, A of order 2, is the identity iff k is even.
        m = signed_message(CID.of(manifest_bytes))
        digest = hashlib.sha512(IDENTITY_KEY + ORDER_TWO_KEY + m).digest()
        return int.from_bytes(digest, "little") % ed25519.L % 2

    # The case needs k odd (OpenSSL's cofactorless equation fails, a
    # cofactored verifier such as @noble/ed25519's default accepts); the other
    # parity makes OpenSSL accept too. One manifest of each, so both are covered.
    assert k_parity(raw) == 1, "the main manifest changed: pick the parities anew"
    even = next(
        data
        for data in (with_paths(f"order-two-{i}.txt") for i in range(100))
        if k_parity(data) == 0
    )
    case("manifest-k-even", "manifest", even, {**valid, "why": "valid; signed below"})
    bundles = (
        ("bundle-s-not-below-order", raw, keys[0].public_key.raw, high_s, "§9.1: S >= L (S + L)"),
        (
            "bundle-identity-key",
            raw,
            IDENTITY_KEY,
            R_IDENTITY_S_ZERO,
            "§9.1: the identity as a key; OpenSSL accepts R = identity, S = 0 for any message",
        ),
        (
            "bundle-order-two-key-k-odd",
            raw,
            ORDER_TWO_KEY,
            R_IDENTITY_S_ZERO,
            "§9.1: the order-2 key y = p - 1, R = identity, S = 0, k odd: OpenSSL refuses, "
            "a cofactored verifier (@noble/ed25519's default, ZIP 215) accepts",
        ),
        (
            "bundle-order-two-key-k-even",
            even,
            ORDER_TWO_KEY,
            R_IDENTITY_S_ZERO,
            "§9.1: the order-2 key y = p - 1, R = identity, S = 0, k even: OpenSSL accepts",
        ),
    )
    for name, manifest_bytes, key, value, why in bundles:
        signed = CID.of(manifest_bytes)
        verdict = {
            **untrusted,
            "manifest": "manifest.json" if manifest_bytes == raw else "cases/manifest-k-even.json",
            "cid": str(signed),
            "trusted_key_ids_hex": [PublicKey(key).key_id.raw.hex()],
            "why": why,
        }
        case(name, "bundle", _bundle_bytes(signed, [(key, value)]), verdict)

    layers = {}
    for entry in manifest.files:
        content = files[entry.path][0]
        layer = (
            layer_from_leaves(merkle.leaf_hashes(content), len(content), PIECE_SIZE)
            if content
            else b""
        )
        layers[entry.path] = layer.hex()
    vectors = {
        "format_version": 1,
        "keys": [
            {"seed_hex": seed.hex(), **_key_json(k.public_key.raw)}
            for seed, k in zip(SEEDS, keys, strict=True)
        ],
        "model": {
            "name": NAME,
            "version": None,
            "license": None,
            "piece_size": PIECE_SIZE,
            "cid": text,
            "signed_message_hex": signed_message(cid).hex(),
            "signatures": [
                {"public_key_hex": s.public_key.raw.hex(), "signature_hex": s.value.hex()}
                for s in bundle.signatures
            ],
            "piece_layers_hex": layers,
        },
        "cases": cases,
    }
    (out / "vectors.json").write_text(
        json.dumps(vectors, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    build(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
