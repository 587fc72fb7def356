"""sovnet.stamps: a stamp survives its round trip, and any other bytes read as
"no stamp" (which costs a re-hash), never as an error or a wrong stamp."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.store import stamps
from sovnet.store.stamps import Stamp

u64 = st.integers(0, 2**64 - 1)
stamp_values = st.builds(Stamp, u64, u64, u64, u64, u64)


@given(stamp_values)
def test_round_trip(stamp: Stamp) -> None:
    assert Stamp.from_bytes(stamp.to_bytes()) == stamp


@given(st.binary(max_size=300))
def test_any_bytes_are_a_stamp_or_none(data: bytes) -> None:
    result = Stamp.from_bytes(data)
    assert result is None or Stamp.from_bytes(result.to_bytes()) == result


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)


@given(
    st.dictionaries(
        st.sampled_from(["dev", "ino", "size", "mtime_ns", "ctime_ns", "sovnet_stamp", "x"]),
        json_scalars,
    )
)
def test_near_miss_objects_are_a_stamp_only_when_exactly_one(value: dict[str, object]) -> None:
    result = Stamp.from_bytes(json.dumps(value).encode())
    exact = (
        set(value) == {"dev", "ino", "size", "mtime_ns", "ctime_ns", "sovnet_stamp"}
        and value["sovnet_stamp"] == 1
        and all(
            type(value[k]) is int and 0 <= value[k] < 2**64  # type: ignore[operator]
            for k in ("dev", "ino", "size", "mtime_ns", "ctime_ns")
        )
    )
    assert (result is not None) == exact


@pytest.mark.parametrize(
    "text",
    [
        b"",
        b"not json",
        b"[]",
        b'{"sovnet_stamp": 2, "dev": 1, "ino": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1}',
        b'{"sovnet_stamp": 1, "dev": 1, "ino": 1, "size": 1, "mtime_ns": 1}',
        b'{"sovnet_stamp": 1, "dev": -1, "ino": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1}',
        b'{"sovnet_stamp": 1, "dev": 1.0, "ino": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1}',
        b'{"sovnet_stamp": 1, "dev": true, "ino": 1, "size": 1, "mtime_ns": 1, "ctime_ns": 1}',
        b"[" * 100_000,
        b"\xff\xfe",
        b" " * 5000,
    ],
)
def test_damaged_stamp_bytes_read_as_no_stamp(text: bytes) -> None:
    assert Stamp.from_bytes(text) is None


def test_write_read_and_drop(tmp_path: Path) -> None:
    directory = tmp_path / "stamps"  # created on first write
    blob = tmp_path / "blob"
    blob.write_bytes(b"content")
    name = bytes(range(32))
    assert stamps.read(directory, name) is None
    stamps.record_if_missing(directory, name, blob)
    assert stamps.read(directory, name) == Stamp.of(os.stat(blob))
    # An existing stamp is kept, even when the file has changed since.
    os.utime(blob, ns=(1, 1))
    stamps.record_if_missing(directory, name, blob)
    assert stamps.read(directory, name) != Stamp.of(os.stat(blob))
    stamps.write(directory, name, Stamp.of(os.stat(blob)))
    assert stamps.read(directory, name) == Stamp.of(os.stat(blob))
    assert [p.name for p in directory.iterdir()] == [name.hex()]  # no temp files left
    stamps.drop(directory, name)
    stamps.drop(directory, name)
    assert stamps.read(directory, name) is None
