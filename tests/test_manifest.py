"""Manifests: exact round trips, one encoding per value, strict parsing of hostile bytes."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sovnet.core.manifest import VERSION_PATTERN, FileEntry, Manifest, piece_size_for, version_order
from sovnet.errors import ManifestFormatError
from sovnet.formats.fileformat import FileFormat
from tests.strategies import manifests


@given(manifests())
def test_round_trip_is_exact(manifest: Manifest) -> None:
    data = manifest.to_bytes()
    parsed = Manifest.from_bytes(data)
    assert parsed == manifest
    assert parsed.to_bytes() == data
    assert parsed.cid == manifest.cid


@given(manifests())
def test_encoding_is_canonical_json_with_sorted_files(manifest: Manifest) -> None:
    data = manifest.to_bytes()
    value = json.loads(data)
    assert (
        data
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert [f["path"] for f in value["files"]] == sorted(f["path"] for f in value["files"])
    assert value["sovnet_manifest"] == 1


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=300)
@given(manifests(), st.data())
def test_mutated_bytes_give_a_manifest_or_a_typed_error(
    manifest: Manifest, data: st.DataObject
) -> None:
    raw = bytearray(manifest.to_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        where = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        if action == "flip":
            raw[where] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "delete":
            del raw[where]
        else:
            raw.insert(where, data.draw(st.integers(0, 255)))
    try:
        parsed = Manifest.from_bytes(bytes(raw))
    except ManifestFormatError:
        return
    assert parsed.to_bytes() == bytes(raw)


@given(st.binary(max_size=300))
def test_random_bytes_give_a_manifest_or_a_typed_error(raw: bytes) -> None:
    try:
        parsed = Manifest.from_bytes(raw)
    except ManifestFormatError:
        return
    assert parsed.to_bytes() == raw


def _valid() -> dict[str, object]:
    return {
        "files": [
            {
                "blake3": "ab" * 32,
                "facts": {},
                "format": "json",
                "path": "config.json",
                "pieces_root": "cd" * 32,
                "size": 10,
            }
        ],
        "license": None,
        "name": "acme/tiny",
        "piece_size": 4194304,
        "sovnet_manifest": 1,
        "version": "1.0",
    }


def _encode(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def test_the_reference_document_parses() -> None:
    manifest = Manifest.from_bytes(_encode(_valid()))
    assert manifest.name == "acme/tiny"
    assert manifest.file("config.json").format is FileFormat.JSON


def _mutate(change: str) -> dict[str, object]:
    doc = _valid()
    files = doc["files"]
    assert isinstance(files, list)
    entry = files[0]
    if change == "version 2":
        doc["sovnet_manifest"] = 2
    elif change == "unknown field":
        doc["extra"] = 1
    elif change == "duplicate path":
        files.append(dict(entry))
    elif change == "absolute path":
        entry["path"] = "/etc/passwd"
    elif change == "dotdot path":
        entry["path"] = "../../x.json"
    elif change == "backslash path":
        entry["path"] = "a\\b.json"
    elif change == "drive letter":
        entry["path"] = "C:/x.json"
    elif change == "bool size":
        entry["size"] = True
    elif change == "negative size":
        entry["size"] = -1
    elif change == "uppercase hex":
        entry["blake3"] = "AB" * 32
    elif change == "unsorted files":
        files.insert(0, {**entry, "path": "z.json"})
    elif change == "piece size not power of two":
        doc["piece_size"] = 3 * 16384
    elif change == "bad name":
        doc["name"] = "no-slash"
    elif change == "facts on json":
        entry["facts"] = {"tensor_count": 1}
    elif change == "unknown format":
        entry["format"] = "pickle"
    elif change == "empty files":
        doc["files"] = []
    return doc


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("version 2", "upgrade sovnet"),
        ("unknown field", "unknown field"),
        ("duplicate path", "twice"),
        ("absolute path", "absolute"),
        ("dotdot path", "'..'"),
        ("backslash path", "backslash"),
        ("drive letter", "colon"),
        ("bool size", "integer"),
        ("negative size", "outside"),
        ("uppercase hex", "hex"),
        ("unsorted files", "sorted"),
        ("piece size not power of two", "power of two"),
        ("bad name", "ORG/MODEL"),
        ("facts on json", "unknown field"),
        ("unknown format", "not one of"),
        ("empty files", "at least one file"),
    ],
)
def test_invalid_manifests_are_refused_with_the_reason(change: str, reason: str) -> None:
    with pytest.raises(ManifestFormatError, match=reason):
        Manifest.from_bytes(_encode(_mutate(change)))


def test_oversized_manifest_is_refused_before_parsing() -> None:
    with pytest.raises(ManifestFormatError, match="over the limit"):
        Manifest.from_bytes(b" " * (8 * 1024 * 1024 + 1))


def test_an_empty_files_root_must_be_zero() -> None:
    with pytest.raises(ManifestFormatError, match="zero"):
        FileEntry("a.txt", 0, bytes(32), b"\x01" * 32, FileFormat.TEXT)


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (0, 4 << 20),
        (2 << 30, 4 << 20),
        (256 << 30, 4 << 20),
        ((256 << 30) + 1, 8 << 20),
        (10**12, 16 << 20),
        (1 << 50, 64 << 20),
    ],
)
def test_piece_size_rule(total: int, expected: int) -> None:
    assert piece_size_for(total) == expected


def test_versions_order_number_by_number() -> None:
    versions = ["2.0", "1.10", "1.9", "1.0", "10", "1.0.1", "v3", "1.10-rc1", "1.0-rc.2",
                "1.0-rc.10", "1.10+build.7"]  # fmt: skip
    assert sorted(versions, key=version_order) == [
        "1.0-rc.2", "1.0-rc.10", "1.0", "1.0.1", "1.9", "1.10-rc1", "1.10", "1.10+build.7",
        "2.0", "v3", "10",
    ]  # fmt: skip


@given(st.lists(st.from_regex(VERSION_PATTERN, fullmatch=True), max_size=8))
def test_any_versions_have_an_order(versions: list[str]) -> None:
    ordered = sorted(versions, key=version_order)  # never a TypeError between runs
    assert sorted(ordered) == sorted(versions)


def test_versions_equal_by_number_still_have_one_order() -> None:
    for one, other in (("1.01", "1.1"), ("v1.0", "1.0"), ("1.0+a", "1.0+b")):
        assert version_order(one) != version_order(other)
        assert sorted([one, other], key=version_order) == sorted([other, one], key=version_order)
