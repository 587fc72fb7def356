"""sovnet.formats.safetensors: files the safetensors library writes parse to the
right facts; malformed headers are refused with a precise MalformedFileError and
nothing else."""

from __future__ import annotations

import functools
import json
import struct
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save, save_file

from sovnet.errors import MalformedFileError
from sovnet.formats.safetensors import (
    DTYPE_BITS,
    MAX_HEADER,
    MAX_READ,
    SafetensorsHeader,
    parse_safetensors,
    safetensors_from_bytes,
)
from tests.strategies import Edit, byte_edits, mutate

# --- building safetensors bytes by hand ----------------------------------------


def raw_file(header: str | bytes, data: bytes = b"", *, pad: bool = True) -> bytes:
    raw = header.encode() if isinstance(header, str) else header
    if pad:
        raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype: str, shape: Sequence[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": list(shape), "data_offsets": [begin, end]}


def st_file(tensors: Mapping[str, object], data: bytes, **meta: str) -> bytes:
    header: dict[str, object] = dict(tensors)
    if meta:
        header["__metadata__"] = meta
    return raw_file(json.dumps(header), data)


def rejects(data: bytes, *phrases: str) -> MalformedFileError:
    with pytest.raises(MalformedFileError) as info:
        safetensors_from_bytes(data)
    for phrase in phrases:
        assert phrase in info.value.message, info.value.message
    assert info.value.hint
    return info.value


def parse_or_reject(data: bytes) -> None:
    """The property every input must have: a header, or MalformedFileError."""
    try:
        header = safetensors_from_bytes(data)
    except MalformedFileError:
        return
    assert isinstance(header, SafetensorsHeader)


def library_accepts(tmp_path: Path, data: bytes) -> bool:
    path = tmp_path / "probe.safetensors"
    path.write_bytes(data)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            handle.keys()
    except SafetensorError:
        return False
    return True


def we_accept(data: bytes) -> bool:
    try:
        safetensors_from_bytes(data)
    except MalformedFileError:
        return False
    return True


# --- files written by the safetensors library ----------------------------------


def test_library_file_parses_with_right_facts(tmp_path: Path) -> None:
    tensors: dict[str, np.ndarray[Any, Any]] = {
        "model.embed.weight": np.arange(24, dtype=np.float32).reshape(4, 6),
        "model.norm.weight": np.ones(6, dtype=np.float16),
        "model.ids": np.arange(3, dtype=np.int64),
        "model.mask": np.array([True, False, True]),
        "model.bytes": np.arange(5, dtype=np.uint8),
        "model.i8": np.arange(5, dtype=np.int8),
        "model.f64": np.zeros((2, 2), dtype=np.float64),
        "model.i16": np.zeros(3, dtype=np.int16),
        "model.u16": np.zeros(3, dtype=np.uint16),
        "model.i32": np.zeros(3, dtype=np.int32),
        "model.u32": np.zeros(3, dtype=np.uint32),
        "model.u64": np.zeros(3, dtype=np.uint64),
        "model.empty": np.zeros((0, 4), dtype=np.float32),
        "model.scalar": np.array(1.5, dtype=np.float32),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt", "note": "ünïcode"})
    header = safetensors_from_bytes(path.read_bytes())

    with safe_open(str(path), framework="numpy") as handle:
        assert header.tensor_names == frozenset(handle.keys())
        assert dict(header.metadata) == handle.metadata()
    assert header.facts.tensor_count == len(tensors)
    assert header.facts.dtypes == (
        "BOOL", "F16", "F32", "F64", "I16", "I32", "I64", "I8", "U16", "U32", "U64", "U8",
    )  # fmt: skip
    assert header.metadata == {"format": "pt", "note": "ünïcode"}


def test_library_file_without_tensors() -> None:
    header = safetensors_from_bytes(save({}))
    assert header.facts.tensor_count == 0
    assert header.facts.dtypes == ()
    assert header.tensor_names == frozenset()
    assert dict(header.metadata) == {}


def test_header_is_hashable_and_metadata_read_only() -> None:
    header = safetensors_from_bytes(save({"a": np.ones(2, dtype=np.float32)}, {"k": "v"}))
    hash(header)
    with pytest.raises(TypeError):
        header.metadata["k"] = "w"  # type: ignore[index]


def test_sub_byte_and_exotic_dtypes() -> None:
    tensors = {
        "f4": entry("F4", [2, 4], 0, 4),
        "f6": entry("F6_E2M3", [4], 4, 7),
        "e8": entry("F8_E8M0", [1], 7, 8),
        "bf": entry("BF16", [2], 8, 12),
        "c": entry("C64", [1], 12, 20),
        "fnuz": entry("F8_E4M3FNUZ", [3], 20, 23),
    }
    header = safetensors_from_bytes(st_file(tensors, b"\0" * 23))
    assert header.facts.dtypes == ("BF16", "C64", "F4", "F6_E2M3", "F8_E4M3FNUZ", "F8_E8M0")


def test_reads_are_bounded() -> None:
    big = {f"t{i:06d}": entry("U8", [1], i, i + 1) for i in range(40_000)}
    data = st_file(big, b"\0" * 40_000, blob="x" * (2 * MAX_READ))
    assert len(data) > 3 * MAX_READ

    def read_at(offset: int, n: int) -> bytes:
        assert 0 < n <= MAX_READ
        assert offset >= 0 and offset + n <= len(data)
        return data[offset : offset + n]

    assert parse_safetensors(read_at, len(data)).facts.tensor_count == 40_000


def test_short_read_is_reported() -> None:
    data = save({"a": np.ones(2, dtype=np.float32)})

    def read_at(offset: int, n: int) -> bytes:
        return data[offset : offset + n][:-1]

    with pytest.raises(MalformedFileError, match="change while being read"):
        parse_safetensors(read_at, len(data))


PARITY_CASES = {
    "ok": (st_file({"a": entry("F32", [2], 0, 8)}, b"\0" * 8), True),
    "wrong length": (st_file({"a": entry("F32", [2], 0, 7)}, b"\0" * 7), False),
    "f4 odd": (st_file({"a": entry("F4", [3], 0, 2)}, b"\0" * 2), False),
    "f4 even": (st_file({"a": entry("F4", [4], 0, 2)}, b"\0" * 2), True),
    "f6": (st_file({"a": entry("F6_E3M2", [4], 0, 3)}, b"\0" * 3), True),
    "unknown dtype": (st_file({"a": entry("F8_E4M3FN", [1], 0, 1)}, b"\0"), False),
    "hole": (st_file({"a": entry("U8", [1], 0, 1), "b": entry("U8", [1], 2, 3)}, b"\0" * 3), False),
    "overlap": (
        st_file({"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 1, 3)}, b"\0" * 3),
        False,
    ),
    "trailing": (st_file({"a": entry("U8", [1], 0, 1)}, b"\0" * 2), False),
    "zero-size pair": (
        st_file({"a": entry("U8", [0], 0, 0), "b": entry("U8", [0], 0, 0)}, b""),
        True,
    ),
    "shape overflow": (st_file({"a": entry("U8", [2**40, 2**40, 0], 0, 0)}, b""), False),
    "bool in shape": (
        raw_file('{"a":{"dtype":"U8","shape":[true],"data_offsets":[0,1]}}', b"\0"),
        False,
    ),
    "metadata int": (raw_file('{"__metadata__":{"a":1}}'), False),
    "surrogate": (
        raw_file('{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0"),
        False,
    ),
    "empty with data": (raw_file("{}", b"\0"), False),
    "header past end": (struct.pack("<Q", 100) + b"{}", False),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_verdicts_agree_with_the_library(tmp_path: Path, case: str) -> None:
    data, expected = PARITY_CASES[case]
    assert library_accepts(tmp_path, data) is expected
    assert we_accept(data) is expected


# --- targeted rejections ------------------------------------------------------


def test_too_short() -> None:
    rejects(b"\x02\0\0\0", "4 bytes is too short")


def test_header_length_past_end_of_file() -> None:
    rejects(struct.pack("<Q", 64) + b"{}", "header length 64 runs past the end of the 10-byte file")


def test_header_length_over_limit() -> None:
    rejects(struct.pack("<Q", MAX_HEADER + 1) + b"{}", "exceeds the limit of 100000000")
    rejects(struct.pack("<Q", 2**64 - 1) + b"{}", "header length 18446744073709551615")


def test_header_not_utf8() -> None:
    rejects(raw_file(b'{"\xff": 1}'), "not valid UTF-8 (byte 10)")


@pytest.mark.parametrize("header", ["{", "{]", '{"a":1,}', "{} {}", "{'a': 1}"])
def test_header_not_json(header: str) -> None:
    rejects(raw_file(header), "not valid JSON")


@pytest.mark.parametrize("header", ["[]", "1", '"x"', " {}", "\n{}", ""])
def test_header_not_starting_with_an_object(header: str) -> None:
    rejects(raw_file(header, pad=False), "does not start with '{'")


@pytest.mark.parametrize("header", ["{}\n", "{}\t", "{}\r\n", "{}\n   "])
def test_header_padded_with_other_whitespace(header: str) -> None:
    rejects(raw_file(header, pad=False), "padded with whitespace other than spaces")


def test_duplicate_keys() -> None:
    one = '"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}'
    rejects(raw_file("{" + one + "," + one + "}", b"\0"), "key 'a' twice")
    rejects(raw_file('{"a":{"dtype":"U8","dtype":"U8"}}'), "key 'dtype' twice")


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity(constant: str) -> None:
    rejects(raw_file('{"__metadata__":{"a":' + constant + "}}"), constant, "not JSON")


def test_huge_integer_literal() -> None:
    rejects(raw_file('{"a":{"dtype":"U8","shape":[' + "9" * 5000 + "]}}"), "5000-character integer")


def test_deep_nesting() -> None:
    rejects(raw_file('{"a":' + "[" * 100_000 + "]" * 100_000 + "}"), "nests JSON too deeply")


def test_metadata_must_map_strings_to_strings() -> None:
    rejects(raw_file('{"__metadata__":{"a":1}}'), "value for 'a' is a int, not a string")
    rejects(raw_file('{"__metadata__":["a"]}'), "__metadata__ is a list, not an object")
    rejects(raw_file('{"__metadata__":null}'), "__metadata__ is a NoneType")
    rejects(raw_file('{"__metadata__":{"\\udc00":"x"}}'), "unpaired surrogate")


def test_entry_shape() -> None:
    rejects(st_file({"a": [1]}, b""), "tensor 'a' is a list, not an object")
    rejects(st_file({"a": {"dtype": "U8", "shape": [0]}}, b""), "missing data_offsets")
    extra = entry("U8", [1], 0, 1) | {"offset": 0}
    rejects(st_file({"a": extra}, b"\0"), "exactly the keys", "unexpected 'offset'")


def test_unknown_dtype() -> None:
    rejects(st_file({"a": entry("Q4", [2], 0, 1)}, b"\0"), "unknown dtype 'Q4'")
    rejects(
        st_file({"a": {"dtype": 3, "shape": [], "data_offsets": [0, 1]}}, b"\0"), "unknown dtype 3"
    )


def test_bool_in_shape() -> None:
    bad = {"dtype": "U8", "shape": [True], "data_offsets": [0, 1]}
    rejects(st_file({"a": bad}, b"\0"), "shape entry True is not a non-negative integer")


@pytest.mark.parametrize("dim", [-1, 1.0, "1", None, 2**64, [1], {"a": 1}])
def test_bad_shape_entries(dim: object) -> None:
    bad = {"dtype": "U8", "shape": [dim], "data_offsets": [0, 1]}
    rejects(st_file({"a": bad}, b"\0"), "is not a non-negative integer")


def test_rank_limit() -> None:
    assert we_accept(st_file({"a": entry("U8", [1] * 16, 0, 1)}, b"\0"))
    rejects(st_file({"a": entry("U8", [1] * 17, 0, 1)}, b"\0"), "17 dimensions, over 16")


def test_shape_overflow() -> None:
    rejects(st_file({"a": entry("U8", [2**40, 2**40, 0], 0, 0)}, b""), "overflows 2**64 elements")
    rejects(st_file({"a": entry("F64", [2**62], 0, 0)}, b""), "overflows 2**64 bits")


@pytest.mark.parametrize(
    "offsets", [[0], [0, 1, 2], [0, True], [-1, 0], [0, 1.0], "0,1", [0, 2**64]]
)
def test_bad_data_offsets(offsets: object) -> None:
    bad = {"dtype": "U8", "shape": [1], "data_offsets": offsets}
    rejects(st_file({"a": bad}, b"\0"), "is not a pair of non-negative integers")


def test_offsets_end_before_begin() -> None:
    rejects(st_file({"a": entry("U8", [0], 1, 0)}, b"\0"), "[1, 0] end before begin")


def test_wrong_byte_length() -> None:
    msg = "data_offsets [0, 7] hold 7 bytes but dtype F32 and shape [2] need 8"
    rejects(st_file({"a": entry("F32", [2], 0, 7)}, b"\0" * 7), msg)


def test_sub_byte_dtype_not_whole_bytes() -> None:
    rejects(
        st_file({"a": entry("F4", [3], 0, 2)}, b"\0" * 2), "12 bits, not a whole number of bytes"
    )
    rejects(st_file({"a": entry("F6_E2M3", [2], 0, 2)}, b"\0" * 2), "not a whole number of bytes")


def test_hole_between_tensors() -> None:
    tensors = {"a": entry("U8", [1], 0, 1), "b": entry("U8", [1], 2, 3)}
    rejects(st_file(tensors, b"\0" * 3), "hole of 1 bytes after tensor 'a'")
    rejects(st_file({"b": entry("U8", [1], 1, 2)}, b"\0" * 2), "hole of 1 bytes at the start")


def test_overlapping_tensors() -> None:
    tensors = {"a": entry("U8", [2], 0, 2), "b": entry("U8", [2], 1, 3)}
    rejects(st_file(tensors, b"\0" * 3), "tensors 'a' and 'b' overlap")
    inside = {"a": entry("U8", [4], 0, 4), "z": entry("U8", [0], 2, 2)}
    rejects(st_file(inside, b"\0" * 4), "overlap")


def test_trailing_bytes() -> None:
    rejects(
        st_file({"a": entry("U8", [1], 0, 1)}, b"\0" * 3),
        "2 trailing bytes after the last tensor 'a'",
    )
    rejects(raw_file("{}", b"\0" * 5), "declares no tensors but 5 data bytes follow")


def test_tensor_past_end_of_data() -> None:
    rejects(
        st_file({"a": entry("U8", [4], 0, 4)}, b"\0" * 3),
        "run past the end of the 3-byte data buffer",
    )


def test_huge_values_are_described_briefly() -> None:
    many = {"dtype": "U8", "shape": [1], "data_offsets": list(range(1000))}
    error = rejects(st_file({"a": many}, b"\0"), "data_offsets a list of 1000 items")
    assert len(error.message) < 200


def test_tensor_name_surrogate() -> None:
    rejects(
        raw_file('{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\0"), "surrogate"
    )


# --- properties ---------------------------------------------------------------


@functools.cache
def valid_files() -> tuple[bytes, ...]:
    """Small valid files to mutate: two written by the library, one by hand."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        save_file(
            {
                "w": np.arange(6, dtype=np.float32).reshape(2, 3),
                "b": np.ones(3, dtype=np.float16),
                "i": np.arange(2, dtype=np.int64),
            },
            str(path),
            metadata={"format": "pt"},
        )
        written = path.read_bytes()
    by_hand = st_file({"f4": entry("F4", [4], 0, 2), "z": entry("BOOL", [0], 2, 2)}, b"\0\0")
    for data in (written, by_hand, save({})):
        safetensors_from_bytes(data)
    return written, by_hand, save({})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
tensor_like = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(sorted(DTYPE_BITS)) | st.text(max_size=4),
        "shape": st.lists(st.integers(-2, 9) | st.booleans(), max_size=4),
        "data_offsets": st.lists(st.integers(-2, 64), min_size=1, max_size=3),
    }
)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_reject(data)


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=200), st.binary(max_size=64))
def test_arbitrary_header_bytes(header: bytes, data: bytes) -> None:
    parse_or_reject(struct.pack("<Q", len(header)) + header + data)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.dictionaries(st.text(max_size=6), tensor_like | json_values, max_size=4),
    st.integers(0, 64),
)
def test_arbitrary_json_headers(header: dict[str, object], data_len: int) -> None:
    text = json.dumps(header, allow_nan=True)
    parse_or_reject(raw_file(text, b"\0" * data_len))


@settings(max_examples=400, deadline=None, database=None)
@given(st.integers(0, 2), byte_edits)
def test_mutated_valid_files(which: int, edits: list[Edit]) -> None:
    parse_or_reject(mutate(valid_files()[which], edits))
