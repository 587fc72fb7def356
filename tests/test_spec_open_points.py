"""The points an independent implementation of docs/spec.md found open (issue #12),
each settled in the spec and checked here against the parser."""

from __future__ import annotations

import copy
import json

import pytest

from sovnet.core import canonjson
from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.core.signing import PrivateKey, SignatureBundle
from sovnet.errors import ManifestFormatError

GGUF_FACTS = {
    "architecture": "llama",
    "file_type": 0,
    "gguf_version": 3,
    "split_count": 2,
    "split_no": 0,
    "tensor_count": 1,
}


def _document() -> dict[str, object]:
    """A valid manifest with a file of each format that carries facts."""
    entry = {"blake3": "ab" * 32, "pieces_root": "cd" * 32, "size": 10}
    return {
        "files": [
            {**entry, "facts": {}, "format": "json", "path": "config.json"},
            {**entry, "facts": dict(GGUF_FACTS), "format": "gguf", "path": "m.gguf"},
            {
                **entry,
                "facts": {"dtypes": ["F32"], "tensor_count": 1},
                "format": "safetensors",
                "path": "m.safetensors",
            },
        ],
        "license": None,
        "name": "acme/tiny",
        "piece_size": 16384,
        "sovnet_manifest": 1,
        "version": None,
    }


def _encode(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_the_base_document_is_valid() -> None:
    Manifest.from_bytes(_encode(_document()))


# Every integer member of a manifest, as a path into the document.
INTEGER_FIELDS = [
    ("sovnet_manifest",),
    ("piece_size",),
    ("files", 0, "size"),
    ("files", 1, "facts", "gguf_version"),
    ("files", 1, "facts", "file_type"),
    ("files", 1, "facts", "split_count"),
    ("files", 1, "facts", "split_no"),
    ("files", 1, "facts", "tensor_count"),
    ("files", 2, "facts", "tensor_count"),
]


@pytest.mark.parametrize("boolean", [True, False])
@pytest.mark.parametrize("where", INTEGER_FIELDS, ids=lambda w: ".".join(map(str, w)))
def test_a_boolean_is_never_an_integer(where: tuple[str | int, ...], boolean: bool) -> None:
    """§3: JSON true/false are never integers, even where 1 or 0 would be valid."""
    document = copy.deepcopy(_document())
    target: object = document
    for key in where[:-1]:
        target = target[key]  # type: ignore[index]
    target[where[-1]] = boolean  # type: ignore[index]
    with pytest.raises(ManifestFormatError, match=r"integer|not supported"):
        Manifest.from_bytes(_encode(document))


def test_a_boolean_bundle_version_is_refused() -> None:
    cid = CID.of(b"m")
    good = SignatureBundle(cid, (PrivateKey.from_seed(bytes(32)).sign(cid),)).to_bytes()
    bad = good.replace(b'"sovnet_signatures":1', b'"sovnet_signatures":true')
    with pytest.raises(ManifestFormatError, match="version"):
        SignatureBundle.from_bytes(bad, cid)


def test_safetensors_with_tensors_and_no_dtypes_is_refused() -> None:
    """§4.5: dtypes is empty exactly when tensor_count is 0 (every tensor has one)."""
    document = _document()
    facts = document["files"][2]["facts"]  # type: ignore[index]
    facts["dtypes"] = []
    with pytest.raises(ManifestFormatError, match="dtypes"):
        Manifest.from_bytes(_encode(document))
    facts["tensor_count"] = 0
    Manifest.from_bytes(_encode(document))


def test_the_version_is_checked_after_canonical_form_and_before_any_field() -> None:
    """§1/§10 step 6: canonical JSON (§3) first, then sovnet_manifest, then the rest."""
    newer = _document()
    newer["sovnet_manifest"] = 2
    newer["files"] = "a field a newer format reads differently"
    newer["new_member"] = [1]
    with pytest.raises(ManifestFormatError, match="upgrade sovnet"):
        Manifest.from_bytes(_encode(newer))
    spaced = json.dumps(newer, sort_keys=True).encode()  # not canonical: spaces
    with pytest.raises(ManifestFormatError, match="canonical form"):
        Manifest.from_bytes(spaced)
    missing = _document()
    del missing["sovnet_manifest"]
    with pytest.raises(ManifestFormatError, match="missing sovnet_manifest"):
        Manifest.from_bytes(_encode(missing))


@pytest.mark.parametrize("key", ["a\x01", "\x1f", "a\x7f", "tab\t"])
def test_control_characters_in_object_keys_are_refused(key: str) -> None:
    """§3: object keys follow the string rules, so no C0 control and no DEL,
    whether written raw or escaped."""
    with pytest.raises(ManifestFormatError, match="control character"):
        canonjson.dumps({key: 1})
    raw = b'{"' + key.encode() + b'":1}'
    escaped = json.dumps({key: 1}, separators=(",", ":")).encode()
    for data in (raw, escaped):
        with pytest.raises(ManifestFormatError):
            canonjson.loads(data, max_size=100)
