"""sovnet.formats.gguf: the trained context length the runner reads from a header
(``<architecture>.context_length``), and that reading it changes nothing else."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from sovnet.formats.gguf import MAX_CONTEXT_LENGTH, gguf_from_bytes
from tests.test_format_gguf import (
    F32,
    I32,
    I64,
    STR,
    U8,
    U16,
    U32,
    U64,
    build,
    gstr,
    kv,
    kv_str,
    one_f32,
    parse_or_reject,
)

INT_FORMATS = {U8: "<B", U16: "<H", U32: "<I", I32: "<i", U64: "<Q", I64: "<q"}
_RANGES = {U8: (0, 255), U16: (0, 2**16 - 1), U32: (0, 2**32 - 1), I32: (-(2**31), 2**31 - 1)}


def test_gguf_py_context_length(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_context_length(8192)
    writer.add_tensor("w", np.ones(8, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert gguf_from_bytes(path.read_bytes()).context_length == 8192


def _file(*kvs: bytes) -> bytes:
    return build(list(kvs), [one_f32()], b"\0" * 32)


def test_only_the_architectures_own_key_counts() -> None:
    other = kv("bert.context_length", U32, struct.pack("<I", 512))
    own = kv("llama.context_length", U32, struct.pack("<I", 2048))
    arch = kv_str("general.architecture", "llama")
    assert gguf_from_bytes(_file(arch, other)).context_length is None
    assert gguf_from_bytes(_file(own, other, arch)).context_length == 2048  # any order
    assert gguf_from_bytes(_file(own)).context_length is None  # no architecture


def test_context_length_of_another_type_is_skipped_like_any_value() -> None:
    arch = kv_str("general.architecture", "llama")
    for value in (
        kv("llama.context_length", F32, struct.pack("<f", 4096.0)),
        kv("llama.context_length", STR, gstr("4096")),
    ):
        header = gguf_from_bytes(_file(arch, value))
        assert header.context_length is None
        assert header.facts.architecture == "llama"


@given(st.sampled_from(sorted(INT_FORMATS)), st.data())
def test_any_integer_context_length(vtype: int, data: st.DataObject) -> None:
    low, high = _RANGES.get(vtype, (0, 2**64 - 1) if vtype == U64 else (-(2**63), 2**63 - 1))
    value = data.draw(st.integers(low, high))
    arch = kv_str("general.architecture", "llama")
    context = kv("llama.context_length", vtype, struct.pack(INT_FORMATS[vtype], value))
    with_key = gguf_from_bytes(_file(arch, context))
    without = gguf_from_bytes(_file(arch))
    expected = value if 1 <= value <= MAX_CONTEXT_LENGTH else None
    assert with_key.context_length == expected
    assert with_key.facts == without.facts
    assert with_key.tensor_names == without.tensor_names


@given(st.binary(max_size=12), st.integers(0, 12))
def test_truncated_or_garbled_context_value_is_refused_not_misread(junk: bytes, vtype: int) -> None:
    arch = kv_str("general.architecture", "llama")
    parse_or_reject(build([arch, kv("llama.context_length", vtype, junk)], [], b""))
