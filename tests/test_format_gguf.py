"""sovnet.formats.gguf: files gguf-py writes parse to the right facts; malformed
headers are refused with a precise MalformedFileError and nothing else."""

from __future__ import annotations

import functools
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import gguf
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sovnet.errors import MalformedFileError
from sovnet.formats.gguf import (
    GGML_TYPES,
    MAX_KV,
    MAX_READ,
    MAX_TENSORS,
    VALUE_TYPES,
    GGUFHeader,
    gguf_from_bytes,
    parse_gguf,
)
from tests.strategies import Edit, byte_edits, mutate

# --- building GGUF bytes by hand ---------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)


def u32(v: int) -> bytes:
    return struct.pack("<I", v)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v)


def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return u64(len(raw)) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + u32(vtype) + payload


def kv_str(key: str, value: str | bytes) -> bytes:
    return kv(key, STR, gstr(value))


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, U32, u32(value))


def arr(etype: int, items: Sequence[bytes], count: int | None = None) -> bytes:
    return u32(etype) + u64(len(items) if count is None else count) + b"".join(items)


def tinfo(name: str | bytes, dims: Sequence[int], gtype: int = 0, offset: int = 0) -> bytes:
    body = gstr(name) + u32(len(dims)) + b"".join(u64(d) for d in dims)
    return body + u32(gtype) + u64(offset)


def build(
    kvs: Sequence[bytes] = (),
    tensors: Sequence[bytes] = (),
    data: bytes = b"",
    *,
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    alignment: int = 32,
    pad: bool = True,
) -> bytes:
    head = b"GGUF" + u32(version)
    head += u64(len(tensors) if n_tensors is None else n_tensors)
    head += u64(len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(tensors)
    if pad:
        body += b"\0" * (-len(body) % alignment)
    return body + data


def one_f32(name: str = "w", n: int = 8, offset: int = 0) -> bytes:
    """Tensor info of an F32 vector of ``n`` elements (4 * n bytes)."""
    return tinfo(name, [n], 0, offset)


def rejects(data: bytes, *phrases: str) -> MalformedFileError:
    with pytest.raises(MalformedFileError) as info:
        gguf_from_bytes(data)
    for phrase in phrases:
        assert phrase in info.value.message, info.value.message
    assert info.value.hint
    return info.value


def parse_or_reject(data: bytes) -> None:
    """The property every input must have: a header, or MalformedFileError."""
    try:
        header = gguf_from_bytes(data)
    except MalformedFileError:
        return
    assert isinstance(header, GGUFHeader)
    assert header.data_offset <= len(data)


# --- files written by gguf-py -------------------------------------------------


def write_gguf(path: Path, fill: Callable[[gguf.GGUFWriter], None], arch: str = "llama") -> bytes:
    writer = gguf.GGUFWriter(path, arch=arch)
    fill(writer)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def rich_model(writer: gguf.GGUFWriter) -> None:
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    writer.add_name("tiny test model")
    writer.add_context_length(128)
    writer.add_float32("llama.rope.freq_base", 10000.0)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_token_list(["<s>", "</s>", "hello", "wörld", "日本", "\n", ""])
    writer.add_token_scores([0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0])
    writer.add_token_types([3, 3, 1, 1, 1, 6, 1])
    writer.add_array("test.nested", [[1, 2, 3], [4], ["a", "b"]])
    writer.add_array("test.bools", [True, False, True])
    writer.add_tensor("token_embd.weight", np.arange(32, dtype=np.float32).reshape(4, 8))
    writer.add_tensor("output_norm.weight", np.ones(16, dtype=np.float16))
    q8 = gguf.quants.quantize(
        np.linspace(-1, 1, 128, dtype=np.float32).reshape(2, 64), gguf.GGMLQuantizationType.Q8_0
    )
    writer.add_tensor("blk.0.ffn_up.weight", q8, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("blk.0.attn_q.bias", np.arange(5, dtype=np.int32))


def test_gguf_py_file_parses_with_right_facts(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    data = write_gguf(path, rich_model)
    header = gguf_from_bytes(data)

    reader = gguf.GGUFReader(path)
    assert header.facts.version == 3
    assert header.facts.architecture == "llama"
    assert header.facts.file_type == gguf.LlamaFileType.MOSTLY_Q8_0
    assert header.facts.split_no is None
    assert header.facts.split_count is None
    assert header.facts.tensor_count == len(reader.tensors) == 4
    assert header.tensor_names == tuple(t.name for t in reader.tensors)
    assert header.kv_count == int(reader.fields["GGUF.kv_count"].parts[-1][0])
    assert header.alignment == reader.alignment == 32
    assert header.data_offset == reader.data_offset


def test_custom_alignment(tmp_path: Path) -> None:
    def fill(writer: gguf.GGUFWriter) -> None:
        writer.add_custom_alignment(64)
        writer.add_tensor("a", np.ones(3, dtype=np.float32))
        writer.add_tensor("b", np.ones(3, dtype=np.float32))

    path = tmp_path / "aligned.gguf"
    header = gguf_from_bytes(write_gguf(path, fill))
    reader = gguf.GGUFReader(path)
    assert header.alignment == 64
    assert header.data_offset == reader.data_offset
    assert header.data_offset % 64 == 0


def test_split_files(tmp_path: Path) -> None:
    writer = gguf.GGUFWriter(tmp_path / "model.gguf", arch="qwen2", split_max_tensors=1)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    for i in range(3):
        writer.add_tensor(f"blk.{i}.w", np.ones((2, 4), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    shards = sorted(tmp_path.glob("model-*-of-*.gguf"))
    assert len(shards) == 3
    for index, shard in enumerate(shards):
        header = gguf_from_bytes(shard.read_bytes())
        reader = gguf.GGUFReader(shard)
        assert header.facts.split_no == index
        assert header.facts.split_count == 3
        assert header.facts.tensor_count == 1
        assert header.tensor_names == tuple(t.name for t in reader.tensors)


def test_no_tensors_without_padding_is_accepted() -> None:
    # ggml writes no padding after the header of a file without tensors.
    data = build([kv_str("general.architecture", "llama")], pad=False)
    assert len(data) % 32 != 0
    header = gguf_from_bytes(data)
    assert header.facts.tensor_count == 0
    assert header.data_offset == len(data)


def test_version_2_and_all_value_types() -> None:
    kvs = [
        kv("a.u8", U8, b"\x07"),
        kv("a.i8", I8, b"\xff"),
        kv("a.u16", U16, b"\x01\x00"),
        kv("a.i16", I16, b"\x01\x00"),
        kv("a.u32", U32, u32(1)),
        kv("a.i32", I32, u32(1)),
        kv("a.f32", F32, struct.pack("<f", float("nan"))),
        kv("a.bool", BOOL, b"\x01"),
        kv("a.str", STR, gstr("x")),
        kv("a.arr", ARR, arr(U64, [u64(1), u64(2)])),
        kv("a.u64", U64, u64(1)),
        kv("a.i64", I64, u64(1)),
        kv("a.f64", F64, struct.pack("<d", 1.5)),
        kv("general.file_type", I32, struct.pack("<i", 1)),
        kv("split.no", U8, b"\x00"),
    ]
    header = gguf_from_bytes(build(kvs, [one_f32()], b"\0" * 32, version=2))
    assert header.facts.version == 2
    assert header.facts.file_type == 1
    assert header.facts.split_no == 0
    assert header.facts.split_count is None
    assert header.kv_count == len(kvs)


def test_tables_match_gguf_py() -> None:
    known = {int(t): gguf.GGML_QUANT_SIZES[t] for t in gguf.GGMLQuantizationType}
    assert {t: (b, s) for t, (_, b, s) in GGML_TYPES.items()} == known
    assert {t: name for t, (name, _, _) in GGML_TYPES.items()} == {
        int(t): t.name for t in gguf.GGMLQuantizationType
    }
    assert set(VALUE_TYPES) == {int(t) for t in gguf.GGUFValueType}


def test_reads_are_bounded_and_long_strings_work() -> None:
    template = "{% for m in messages %}" + "x" * (3 * MAX_READ) + "{% endfor %}"
    tokens = [gstr(f"tok{i}") for i in range(50_000)]
    data = build(
        [
            kv_str("tokenizer.chat_template", template),
            kv("tokenizer.ggml.tokens", ARR, arr(STR, tokens)),
            kv("tokenizer.ggml.scores", ARR, arr(F32, [b"\0\0\0\0"] * 50_000)),
        ],
        [one_f32()],
        b"\0" * 32,
    )
    calls: list[tuple[int, int]] = []

    def read_at(offset: int, n: int) -> bytes:
        assert 0 < n <= MAX_READ
        assert offset >= 0 and offset + n <= len(data)
        calls.append((offset, n))
        return data[offset : offset + n]

    header = parse_gguf(read_at, len(data))
    assert header.tensor_names == ("w",)
    # Buffered: a few dozen calls for ~4 MiB of header, not one per field.
    assert len(calls) < 40


def test_short_read_is_reported() -> None:
    data = build([kv_str("general.architecture", "llama")], [one_f32()], b"\0" * 32)

    def read_at(offset: int, n: int) -> bytes:
        return data[offset : offset + n][:-1]

    with pytest.raises(MalformedFileError, match="change while being read"):
        parse_gguf(read_at, len(data))


# --- targeted rejections ----------------------------------------------------


def test_too_short_and_bad_magic() -> None:
    rejects(b"GG", "too short")
    rejects(b"GGUF\x03\x00\x00\x00", "too short for a GGUF header")
    rejects(b"GGML" + b"\0" * 40, "bad GGUF magic")


@pytest.mark.parametrize(
    ("version", "phrase"), [(1, "version 1"), (4, "version 4"), (0, "version 0")]
)
def test_unsupported_versions(version: int, phrase: str) -> None:
    rejects(build(version=version), phrase, "not supported")


def test_big_endian_file() -> None:
    rejects(build(version=0x03000000), "big-endian")


def test_huge_tensor_count() -> None:
    rejects(build(n_tensors=2**60), "tensor count 1152921504606846976", "limit")
    rejects(
        build(n_tensors=MAX_TENSORS), "tensor count 1000000 exceeds what fits in a 32-byte file"
    )


def test_huge_kv_count() -> None:
    rejects(build(n_kv=2**64 - 1), "key-value count 18446744073709551615", "limit")
    rejects(build(n_kv=MAX_KV), "key-value count 1000000 exceeds what fits in a 32-byte file")


def test_counts_that_fit_alone_but_not_together() -> None:
    data = build(n_tensors=3, n_kv=3) + b"\0" * 120
    rejects(data, "together exceed what fits")


def test_claimed_kv_missing() -> None:
    data = build([kv_u32("a.b", 1)], n_kv=2, pad=False) + b"\0" * 20
    rejects(data, "key 1")


def test_string_length_past_end_of_file() -> None:
    data = build([kv("a.b", STR, u64(1000) + b"abc")], pad=False)
    rejects(data, "claims 1000 bytes, past the end of the")


def test_string_over_limit() -> None:
    rejects(build([kv("a.b", STR, u64(2**40))]), "over the limit of 16777216")


def test_key_not_utf8() -> None:
    rejects(build([kv(b"a.\xff", U32, u32(1))]), "key 0", "not valid UTF-8")


def test_key_empty() -> None:
    rejects(build([kv(b"", U32, u32(1))]), "is empty")


def test_duplicate_key() -> None:
    rejects(build([kv_u32("a.b", 1), kv_u32("a.b", 2)]), "'a.b' appears twice")


def test_unknown_value_type() -> None:
    rejects(build([kv("a.b", 13, u32(0))]), "unknown value type 13")


def test_unknown_array_element_type() -> None:
    rejects(build([kv("a.b", ARR, arr(99, []))]), "array of unknown value type 99")


def test_array_count_past_end_of_file() -> None:
    rejects(build([kv("a.b", ARR, arr(U64, [], count=2**61))]), "claims 2305843009213693952 u64")
    rejects(build([kv("a.b", ARR, arr(STR, [], count=2**40))]), "claims 1099511627776 strings")
    rejects(build([kv("a.b", ARR, arr(ARR, [], count=2**40))]), "claims 1099511627776 arrays")


def test_array_nesting_depth() -> None:
    inner = arr(U8, [b"\x01"])
    two_levels = arr(ARR, [inner, inner])
    assert gguf_from_bytes(build([kv("a.b", ARR, two_levels)])).kv_count == 1
    three_levels = arr(ARR, [arr(ARR, [inner])])
    rejects(build([kv("a.b", ARR, three_levels)]), "nests arrays more than 2 levels deep")


def test_bool_values_must_be_0_or_1() -> None:
    rejects(build([kv("a.b", BOOL, b"\x02")]), "bool of value 2")
    rejects(build([kv("a.b", ARR, arr(BOOL, [b"\x01", b"\x00", b"\x05"]))]), "element 2", "bool")


def test_string_array_element_not_utf8() -> None:
    tokens = [gstr("ok"), gstr(b"\xc3\x28"), gstr("x")]
    rejects(build([kv("tokenizer.ggml.tokens", ARR, arr(STR, tokens))]), "element 1", "UTF-8")


def test_string_array_element_past_end() -> None:
    data = build([kv("a.b", ARR, arr(STR, [gstr("ok"), u64(500)]))], pad=False)
    rejects(data, "element 1", "past the end")


def test_tensor_data_past_end_of_file() -> None:
    rejects(build(tensors=[one_f32(n=8)], data=b"\0" * 31), "data [", "runs past the end")


def test_tensor_data_start_past_end_of_file() -> None:
    rejects(build(tensors=[one_f32(n=8)], pad=False), "would start at byte")


def test_overlapping_tensors() -> None:
    tensors = [one_f32("a", 16, 0), one_f32("b", 8, 32)]
    rejects(build(tensors=tensors, data=b"\0" * 64), "'a' [0, 64) and 'b' (from 32) overlap")


def test_misaligned_offset() -> None:
    rejects(build(tensors=[one_f32(offset=4)], data=b"\0" * 64), "offset 4", "alignment 32")


@pytest.mark.parametrize("value", [0, 3, 48, 2**32 - 1])
def test_bad_alignment_value(value: int) -> None:
    rejects(build([kv_u32("general.alignment", value)]), f"alignment {value} is not a power of two")


def test_alignment_must_be_u32() -> None:
    rejects(build([kv("general.alignment", U64, u64(32))]), "general.alignment", "expected u32")


def test_alignment_is_used() -> None:
    kvs = [kv_u32("general.alignment", 64)]
    ok = build(kvs, [one_f32("a", 8, 0), one_f32("b", 8, 64)], b"\0" * 96, alignment=64)
    header = gguf_from_bytes(ok)
    assert header.alignment == 64 and header.data_offset % 64 == 0
    bad = build(kvs, [one_f32("a", 8, 0), one_f32("b", 8, 32)], b"\0" * 96, alignment=64)
    rejects(bad, "offset 32 is not a multiple of the alignment 64")


@pytest.mark.parametrize("dims", [[], [1, 1, 1, 1, 1]])
def test_bad_dimension_count(dims: list[int]) -> None:
    rejects(build(tensors=[tinfo("w", dims)], data=b"\0" * 32), f"has {len(dims)} dimensions")


def test_zero_dimension() -> None:
    rejects(build(tensors=[tinfo("w", [8, 0])], data=b"\0" * 32), "dimension 1 is 0")


def test_element_count_overflow() -> None:
    rejects(build(tensors=[tinfo("w", [2**32, 2**31])], data=b"\0" * 32), "2**63 or more")


@pytest.mark.parametrize("gtype", [4, 5, 31, 36, 42, 2**32 - 1])
def test_unknown_ggml_type(gtype: int) -> None:
    data = build(tensors=[tinfo("w", [256], gtype)], data=b"\0" * 1024)
    rejects(data, f"unknown or removed ggml type {gtype}")


def test_row_not_multiple_of_block_size() -> None:
    q8_0 = 8
    rejects(build(tensors=[tinfo("w", [16, 2], q8_0)], data=b"\0" * 64), "block size 32")


def test_quantised_tensor_size() -> None:
    q4_k = 12  # 256 elements per 144-byte block
    ok = build(tensors=[tinfo("w", [512, 3], q4_k)], data=b"\0" * (6 * 144))
    assert gguf_from_bytes(ok).tensor_names == ("w",)
    short = build(tensors=[tinfo("w", [512, 3], q4_k)], data=b"\0" * (6 * 144 - 1))
    rejects(short, "runs past the end")


def test_tensor_names() -> None:
    rejects(
        build(tensors=[one_f32("x" * 64)], data=b"\0" * 32), "64 bytes long, over the limit of 63"
    )
    assert gguf_from_bytes(build(tensors=[one_f32("x" * 63)], data=b"\0" * 32))
    rejects(build(tensors=[one_f32("")], data=b"\0" * 32), "empty name")
    rejects(build(tensors=[one_f32("a\x00b")], data=b"\0" * 32), "control character")
    rejects(build(tensors=[tinfo(b"\xff", [8])], data=b"\0" * 32), "not valid UTF-8")
    dup = [one_f32("a", 8, 0), one_f32("a", 8, 32)]
    rejects(build(tensors=dup, data=b"\0" * 64), "'a' appears twice")


def test_architecture_fact() -> None:
    rejects(build([kv_u32("general.architecture", 1)]), "expected a string")
    rejects(build([kv_str("general.architecture", "lla\x1bma")]), "control character")
    rejects(build([kv_str("general.architecture", "lla\u009bma")]), "control character")
    rejects(build([kv_str("general.architecture", "a" * 129)]), "over the limit of 128")
    rejects(build([kv_str("general.architecture", "")]), "empty string")
    header = gguf_from_bytes(build([kv_str("general.architecture", "a" * 128)]))
    assert header.facts.architecture == "a" * 128


def test_file_type_fact() -> None:
    rejects(build([kv("general.file_type", F32, u32(0))]), "expected an integer")
    rejects(build([kv("general.file_type", BOOL, b"\x01")]), "expected an integer")
    rejects(build([kv("general.file_type", I32, struct.pack("<i", -1))]), "outside 0..2147483647")
    rejects(build([kv("general.file_type", U64, u64(2**31))]), "outside 0..2147483647")


def test_split_facts() -> None:
    split = [kv("split.no", U16, b"\x02\x00"), kv("split.count", U16, b"\x02\x00")]
    rejects(build(split), "split.no 2 is not less than split.count 2")
    rejects(build([kv("split.count", U16, b"\x00\x00")]), "split.count 0 is less than 1")
    rejects(build([kv("split.no", I16, b"\xff\xff")]), "split.no -1 is negative")
    rejects(build([kv("split.no", STR, gstr("1"))]), "expected an integer")


def test_truncated_tensor_info() -> None:
    data = build([kv_str("general.architecture", "llama")], [one_f32()], pad=False)
    rejects(data[:-5], "tensor 'w' offset", "ends after 3")


# --- properties ---------------------------------------------------------------


@functools.cache
def valid_files() -> tuple[bytes, ...]:
    """Small valid files to mutate: one by gguf-py, two by hand."""
    with tempfile.TemporaryDirectory() as tmp:
        written = write_gguf(Path(tmp) / "m.gguf", small_model)
    by_hand = build(
        [kv_u32("general.alignment", 8), kv("a.b", ARR, arr(ARR, [arr(STR, [gstr("x")])]))],
        [one_f32("a", 2, 0), tinfo("b", [32], 8, 8)],
        b"\0" * 48,
        alignment=8,
    )
    no_tensors = build([kv_str("general.architecture", "x")], pad=False)
    for data in (written, by_hand, no_tensors):
        gguf_from_bytes(data)
    return written, by_hand, no_tensors


def small_model(writer: gguf.GGUFWriter) -> None:
    writer.add_file_type(1)
    writer.add_token_list(["a", "bc", "日本"])
    writer.add_token_scores([0.0, 1.0, 2.0])
    writer.add_bool("x.flag", False)
    writer.add_array("x.nested", [[1, 2], ["s"]])
    writer.add_tensor("t1", np.ones((2, 4), dtype=np.float32))
    writer.add_tensor("t2", np.ones(8, dtype=np.float16))


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    parse_or_reject(data)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from([2, 3]),
    st.integers(0, 4),
    st.integers(0, 4),
    st.binary(max_size=300),
)
def test_arbitrary_bytes_after_a_valid_preamble(
    version: int, n_tensors: int, n_kv: int, rest: bytes
) -> None:
    parse_or_reject(b"GGUF" + u32(version) + u64(n_tensors) + u64(n_kv) + rest)


@settings(max_examples=400, deadline=None, database=None)
@given(st.integers(0, 2), byte_edits)
def test_mutated_valid_files(which: int, edits: list[Edit]) -> None:
    parse_or_reject(mutate(valid_files()[which], edits))


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 2), st.integers(min_value=0), st.integers(0, 2**64 - 1))
def test_valid_files_with_a_random_u64(which: int, where: int, value: int) -> None:
    # Counts and lengths are u64 fields: overwrite one with an arbitrary value.
    data = bytearray(valid_files()[which])
    at = where % (len(data) - 7)
    data[at : at + 8] = u64(value)
    parse_or_reject(bytes(data))
