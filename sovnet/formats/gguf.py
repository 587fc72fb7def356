"""Bounded, pure validation of GGUF model file headers.

:func:`parse_gguf` walks a GGUF header (magic, version, key-value metadata, tensor
infos) and either returns the few facts sovnet records about the file, or raises
:class:`~sovnet.errors.MalformedFileError` saying precisely what is wrong. No
other exception escapes it for any input bytes.

What it checks, following https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
and what ggml's own loader (``gguf.cpp``) enforces:

* magic ``GGUF``, version 2 or 3 (v1 and big-endian files are refused);
* tensor and key-value counts within :data:`MAX_TENSORS` / :data:`MAX_KV` and
  small enough that the claimed entries could fit in the file at all;
* every string: u64 length within :data:`MAX_STRING` and within the file, strict
  UTF-8; keys non-empty, at most :data:`MAX_KEY` bytes, unique;
* value types 0..12 only, bools 0 or 1, arrays at most :data:`MAX_ARRAY_DEPTH`
  deep with element counts that fit in the bytes left;
* tensor infos: unique names of 1..:data:`MAX_TENSOR_NAME` bytes without control
  characters, 1..:data:`MAX_DIMS` dimensions each >= 1 with fewer than 2**63
  elements in all, a ggml type of known size, a row length divisible by the
  type's block size, an offset aligned to the file's alignment, data inside the
  file and no two tensors overlapping;
* the facts: ``general.architecture`` (a short string without control
  characters), ``general.file_type``, ``general.alignment``, ``split.no`` and
  ``split.count`` have the right types and sane values.

Besides the facts, it picks up one hyper-parameter for the runner: the trained
context length ``<architecture>.context_length``, when it is an integer (the
default context of ``sovnet run`` is capped by it).

What it does not do: read or hash tensor data, interpret any other metadata
(tokenizer, other hyper-parameters, chat template), or decide whether llama.cpp
can run the model. It never opens files: it reads through ``read_at(offset, n)``, asks
for at most :data:`MAX_READ` bytes per call and never past ``size``. Every count
and length is checked against the bytes left in the file before anything is
allocated or looped over, so memory and time stay proportional to the bytes
that are really there, not to what a header claims. Exceptions raised by
``read_at`` itself (``OSError``, ...) are the caller's and pass through.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from sovnet.errors import MalformedFileError, quoted

ReadAt = Callable[[int, int], bytes]

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_TENSORS = 1_000_000
MAX_KV = 1_000_000
MAX_STRING = 16 * 1024 * 1024
# The spec caps keys at 2**16 - 1 bytes.
MAX_KEY = 65_535
# ggml's GGML_MAX_NAME is 64 *including* the NUL terminator; gguf.cpp refuses a
# name of 64 bytes or more, so 63 is the longest name llama.cpp will load.
MAX_TENSOR_NAME = 63
MAX_DIMS = 4
# An array value may hold arrays, which may not hold arrays again. ggml itself
# refuses nested arrays altogether; gguf-py can write one level of them.
MAX_ARRAY_DEPTH = 2
MAX_FACT_STRING = 128
DEFAULT_ALIGNMENT = 32
MAX_READ = 1024 * 1024
# Element count limit of one tensor, as in gguf.cpp (INT64_MAX).
MAX_ELEMENTS = 2**63 - 1
# llama.cpp keeps the trained context length in a uint32.
MAX_CONTEXT_LENGTH = 2**32 - 1
_CONTEXT_LENGTH_SUFFIX = ".context_length"

# GGUF metadata value types: id -> (name, fixed size in bytes or 0 if variable).
VALUE_TYPES: dict[int, tuple[str, int]] = {
    0: ("u8", 1),
    1: ("i8", 1),
    2: ("u16", 2),
    3: ("i16", 2),
    4: ("u32", 4),
    5: ("i32", 4),
    6: ("f32", 4),
    7: ("bool", 1),
    8: ("string", 0),
    9: ("array", 0),
    10: ("u64", 8),
    11: ("i64", 8),
    12: ("f64", 8),
}
_BOOL = 7
_STRING = 8
_ARRAY = 9
_U32_TYPE = 4
_FIXED_SIZES: dict[int, int] = {t: n for t, (_, n) in VALUE_TYPES.items() if n}
_INT_FORMATS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),
    1: struct.Struct("<b"),
    2: struct.Struct("<H"),
    3: struct.Struct("<h"),
    4: struct.Struct("<I"),
    5: struct.Struct("<i"),
    10: struct.Struct("<Q"),
    11: struct.Struct("<q"),
}

# ggml tensor types: id -> (name, block size in elements, block size in bytes),
# copied from gguf-py's GGML_QUANT_SIZES. Ids missing here (4, 5: Q4_2/Q4_3;
# 31-33, 36-38: the removed repacked Q4_0/IQ4_NL variants) have no defined size
# any more, so a file using them cannot be bounds-checked and is refused.
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

KEY_ARCHITECTURE = "general.architecture"
KEY_FILE_TYPE = "general.file_type"
KEY_ALIGNMENT = "general.alignment"
KEY_SPLIT_NO = "split.no"
KEY_SPLIT_COUNT = "split.count"
_FACT_KEYS = frozenset(
    {KEY_ARCHITECTURE, KEY_FILE_TYPE, KEY_ALIGNMENT, KEY_SPLIT_NO, KEY_SPLIT_COUNT}
)

# Smallest possible encodings, used to refuse counts that cannot fit before
# looping over them: a key-value pair is a key length (8) + at least one key
# byte + a type (4) + at least one value byte; a tensor info is a name length
# (8) + at least one name byte + n_dims (4) + one dimension (8) + type (4) +
# offset (8).
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8
_HEADER_BYTES = 4 + 4 + 8 + 8
# A string is at least its u64 length; an array at least its type and count.
_MIN_STRING_BYTES = 8
_MIN_ARRAY_BYTES = 4 + 8

# C0 and C1 control characters (Unicode category Cc): never in a name or a fact
# sovnet shows to people, where they could rewrite a terminal line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_HINT = "the file is truncated, corrupt, or not a GGUF model that llama.cpp can load"


@dataclass(frozen=True)
class GGUFFacts:
    """What sovnet records about a GGUF file."""

    version: int
    architecture: str | None
    file_type: int | None
    tensor_count: int
    split_no: int | None
    split_count: int | None


@dataclass(frozen=True)
class GGUFHeader:
    """A validated GGUF header: its facts and the layout of its tensor data.

    ``data_offset`` is the end of the tensor infos rounded up to ``alignment``;
    tensor ``offset``s count from it. In a file without tensors that ends before
    that padding (ggml writes none), it is the file size.
    """

    facts: GGUFFacts
    kv_count: int
    alignment: int
    data_offset: int
    tensor_names: tuple[str, ...]
    # The trained context length, if the header gives a positive integer one.
    context_length: int | None = None


def _fail(message: str, hint: str = _HINT) -> MalformedFileError:
    return MalformedFileError(message, hint=hint)


class _Cursor:
    """Sequential reader over ``read_at`` with a buffer of up to MAX_READ bytes.

    Headers are long runs of tiny fields (a 262k-token vocabulary is ~500k of
    them), so each field must cost a slice, not a ``read_at`` call.
    """

    __slots__ = ("_base", "_buf", "_p", "_read_at", "size")

    def __init__(self, read_at: ReadAt, size: int) -> None:
        self._read_at = read_at
        self.size = size
        self._buf = b""
        self._base = 0  # file offset of _buf[0]
        self._p = 0  # cursor position inside _buf

    @property
    def pos(self) -> int:
        return self._base + self._p

    def remaining(self) -> int:
        return self.size - self._base - self._p

    def _fetch(self, offset: int, n: int) -> bytes:
        # Callers guarantee n <= MAX_READ and offset + n <= size, so anything
        # but exactly n bytes means the file is not the size we were told.
        data = self._read_at(offset, n)
        if len(data) != n:
            raise _fail(
                f"reading {n} bytes at offset {offset} returned {len(data)}: the file is "
                f"not the {self.size} bytes it was said to be (did it change while being read?)",
                hint="read the file again once nothing is writing to it",
            )
        return data

    def _need(self, n: int, what: str) -> None:
        if n > self.remaining():
            raise _fail(
                f"GGUF {what} at byte {self.pos} needs {n} bytes but the "
                f"{self.size}-byte file ends after {self.remaining()}"
            )

    def _fill(self, n: int, what: str) -> None:
        """Make at least ``n`` (<= MAX_READ) bytes available at the cursor."""
        self._need(n, what)
        pos = self.pos
        tail = self._buf[self._p :]
        want = min(MAX_READ, self.size - pos)
        self._buf = tail + self._fetch(pos + len(tail), want - len(tail))
        self._base = pos
        self._p = 0

    def take(self, n: int, what: str) -> bytes:
        p = self._p
        end = p + n
        if end <= len(self._buf):
            self._p = end
            return self._buf[p:end]
        self._need(n, what)
        if n <= MAX_READ:
            self._fill(n, what)
            self._p = n
            return self._buf[:n]
        # A long string: read it in MAX_READ pieces, bypassing the buffer.
        parts = [self._buf[p:]]
        offset = self._base + len(self._buf)
        left = n - len(parts[0])
        while left:
            step = min(left, MAX_READ)
            parts.append(self._fetch(offset, step))
            offset += step
            left -= step
        self._buf, self._base, self._p = b"", offset, 0
        return b"".join(parts)

    def skip(self, n: int, what: str) -> None:
        self._need(n, what)
        end = self._p + n
        if end <= len(self._buf):
            self._p = end
        else:
            self._buf, self._base, self._p = b"", self._base + end, 0

    def u32(self, what: str) -> int:
        p = self._p
        if len(self._buf) - p < 4:
            self._fill(4, what)
            p = 0
        self._p = p + 4
        value: int = _U32.unpack_from(self._buf, p)[0]
        return value

    def u64(self, what: str) -> int:
        p = self._p
        if len(self._buf) - p < 8:
            self._fill(8, what)
            p = 0
        self._p = p + 8
        value: int = _U64.unpack_from(self._buf, p)[0]
        return value

    def string_length(self, what: str, limit: int) -> int:
        """Read a string's u64 length and check it against ``limit`` and the file."""
        at = self.pos
        n = self.u64(what)
        if n > limit:
            raise _fail(f"GGUF {what} at byte {at} is {n} bytes long, over the limit of {limit}")
        if n > self.remaining():
            raise _fail(
                f"GGUF {what} at byte {at} claims {n} bytes, past the end of the "
                f"{self.size}-byte file"
            )
        return n

    def string(self, what: str, limit: int = MAX_STRING) -> str:
        n = self.string_length(what, limit)
        at = self.pos
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _fail(
                f"GGUF {what} at byte {at} is not valid UTF-8 (byte {at + exc.start})"
            ) from exc

    def skip_strings(self, count: int, what: str) -> None:
        """Validate and skip ``count`` strings: the hot loop of vocabulary arrays.

        Works on the buffer directly with locals, refilling only at its end; the
        caller has checked ``count * 8 <= remaining()``.
        """
        unpack = _U64.unpack_from
        buf, p = self._buf, self._p
        i = 0
        try:
            while i < count:
                if len(buf) - p < 8:
                    self._p = p
                    self._fill(8, f"{what} element {i} length")
                    buf, p = self._buf, 0
                n: int = unpack(buf, p)[0]
                p += 8
                # A string inside the buffer is inside the file and shorter than
                # MAX_READ <= MAX_STRING, so this fast path needs no other check.
                if p + n <= len(buf):
                    buf[p : p + n].decode("utf-8")
                    p += n
                else:
                    self._p = p - 8
                    # Slow path (string crosses the buffer end): full checks.
                    self.string(f"{what} element {i}")
                    buf, p = self._buf, self._p
                i += 1
        except UnicodeDecodeError as exc:
            raise _fail(
                f"GGUF {what} element {i} at byte {self._base + p} is not valid UTF-8"
            ) from exc
        self._p = p

    def check_bools(self, count: int, what: str) -> None:
        """Check ``count`` bool bytes are each 0 or 1, MAX_READ bytes at a time."""
        left = count
        while left:
            step = min(left, MAX_READ)
            at = self.pos
            chunk = self.take(step, what)
            bad = chunk.translate(None, b"\x00\x01")
            if bad:
                index = count - left + chunk.index(bad[0])
                raise _fail(
                    f"GGUF {what} element {index} at byte {at + chunk.index(bad[0])} "
                    f"is a bool of value {bad[0]}, not 0 or 1"
                )
            left -= step


def _type_name(vtype: int) -> str:
    entry = VALUE_TYPES.get(vtype)
    return entry[0] if entry else f"unknown type {vtype}"


def _skip_value(cur: _Cursor, vtype: int, what: str) -> None:
    """Validate and skip one metadata value of type ``vtype``."""
    size = _FIXED_SIZES.get(vtype)
    if size is not None:
        if vtype == _BOOL:
            _read_bool(cur, what)
        else:
            cur.skip(size, what)
    elif vtype == _STRING:
        cur.string(what)
    elif vtype == _ARRAY:
        _skip_array(cur, what, depth=1)
    else:
        raise _fail(f"GGUF {what} has unknown value type {vtype} (known: 0..12)")


def _read_bool(cur: _Cursor, what: str) -> bool:
    at = cur.pos
    byte = cur.take(1, what)[0]
    if byte > 1:
        raise _fail(f"GGUF {what} at byte {at} is a bool of value {byte}, not 0 or 1")
    return byte == 1


def _skip_array(cur: _Cursor, what: str, depth: int) -> None:
    at = cur.pos
    etype = cur.u32(f"{what} array element type")
    count = cur.u64(f"{what} array length")
    left = cur.remaining()
    size = _FIXED_SIZES.get(etype)
    if size is not None:
        # Numeric arrays (token scores, token types) are skipped by arithmetic.
        if count * size > left:
            raise _fail(
                f"GGUF {what} at byte {at} claims {count} {_type_name(etype)} elements "
                f"({count * size} bytes) but only {left} bytes of the file remain"
            )
        if etype == _BOOL:
            cur.check_bools(count, what)
        else:
            cur.skip(count * size, what)
    elif etype == _STRING:
        if count * _MIN_STRING_BYTES > left:
            raise _fail(
                f"GGUF {what} at byte {at} claims {count} strings, more than the "
                f"{left} bytes left in the file can hold"
            )
        cur.skip_strings(count, what)
    elif etype == _ARRAY:
        if depth >= MAX_ARRAY_DEPTH:
            raise _fail(
                f"GGUF {what} at byte {at} nests arrays more than {MAX_ARRAY_DEPTH} levels deep"
            )
        if count * _MIN_ARRAY_BYTES > left:
            raise _fail(
                f"GGUF {what} at byte {at} claims {count} arrays, more than the "
                f"{left} bytes left in the file can hold"
            )
        for i in range(count):
            _skip_array(cur, f"{what}[{i}]", depth + 1)
    else:
        raise _fail(
            f"GGUF {what} at byte {at} is an array of unknown value type {etype} (known: 0..12)"
        )


def _read_int(cur: _Cursor, vtype: int, key: str) -> int:
    fmt = _INT_FORMATS.get(vtype)
    if fmt is None:
        raise _fail(f"GGUF key {key!r} has type {_type_name(vtype)}, expected an integer")
    value: int = fmt.unpack(cur.take(fmt.size, f"value of {key!r}"))[0]
    return value


class _FactValues:
    """The facts found so far while walking the key-value pairs."""

    __slots__ = ("alignment", "architecture", "file_type", "split_count", "split_no")

    def __init__(self) -> None:
        self.architecture: str | None = None
        self.file_type: int | None = None
        self.alignment = DEFAULT_ALIGNMENT
        self.split_no: int | None = None
        self.split_count: int | None = None


def _read_fact(cur: _Cursor, key: str, vtype: int, facts: _FactValues) -> None:
    """Read one of the keys in _FACT_KEYS, checking its type and value."""
    if key == KEY_ARCHITECTURE:
        if vtype != _STRING:
            raise _fail(f"GGUF key {key!r} has type {_type_name(vtype)}, expected a string")
        arch = cur.string(f"value of {key!r}", MAX_FACT_STRING)
        if not arch:
            raise _fail(f"GGUF key {key!r} is an empty string")
        if _CONTROL.search(arch):
            raise _fail(f"GGUF key {key!r} value {quoted(arch)} contains a control character")
        facts.architecture = arch
    elif key == KEY_ALIGNMENT:
        # ggml reads the alignment with gguf_get_val_u32, which asserts the type.
        if vtype != _U32_TYPE:
            raise _fail(f"GGUF key {key!r} has type {_type_name(vtype)}, expected u32")
        value = _read_int(cur, vtype, key)
        if value == 0 or value & (value - 1):
            raise _fail(f"GGUF alignment {value} is not a power of two")
        facts.alignment = value
    elif key == KEY_FILE_TYPE:
        value = _read_int(cur, vtype, key)
        if not 0 <= value <= 2**31 - 1:
            raise _fail(f"GGUF {key} {value} is outside 0..2147483647")
        facts.file_type = value
    elif key == KEY_SPLIT_NO:
        value = _read_int(cur, vtype, key)
        if value < 0:
            raise _fail(f"GGUF {key} {value} is negative")
        facts.split_no = value
    else:
        value = _read_int(cur, vtype, key)
        if value < 1:
            raise _fail(f"GGUF {key} {value} is less than 1")
        facts.split_count = value


def _check_name(raw: bytes, at: int, index: int) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"GGUF tensor {index} name at byte {at} is not valid UTF-8") from exc
    if _CONTROL.search(name):
        raise _fail(f"GGUF tensor {index} name {quoted(name)} contains a control character")
    return name


def parse_gguf(read_at: ReadAt, size: int) -> GGUFHeader:
    """Validate the GGUF header of a ``size``-byte file read through ``read_at``.

    ``read_at(offset, n)`` must return exactly ``n`` bytes, or fewer only at the
    end of the file. Raises :class:`MalformedFileError` for anything that is not
    a well-formed GGUF v2/v3 header within this module's limits.
    """
    if size < 4:
        raise _fail(f"file of {size} bytes is too short to be a GGUF file")
    cur = _Cursor(read_at, size)
    magic = cur.take(4, "magic")
    if magic != MAGIC:
        raise _fail(f"bad GGUF magic {magic!r}, expected {MAGIC!r}", hint="this is not a GGUF file")
    if size < _HEADER_BYTES:
        raise _fail(f"file of {size} bytes is too short for a GGUF header ({_HEADER_BYTES} bytes)")
    version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0 and version != 0:
            # A byte-swapped 2 or 3: the file was written big-endian.
            raise _fail(
                f"GGUF version field {version:#010x} looks big-endian; only little-endian "
                "GGUF files are supported",
                hint="convert the model to a little-endian GGUF file",
            )
        raise _fail(
            f"GGUF version {version} is not supported (only versions 2 and 3)",
            hint="re-convert the model with a current llama.cpp",
        )
    tensor_count = cur.u64("tensor count")
    kv_count = cur.u64("key-value count")
    if tensor_count > MAX_TENSORS:
        raise _fail(f"GGUF tensor count {tensor_count} exceeds the limit of {MAX_TENSORS}")
    if kv_count > MAX_KV:
        raise _fail(f"GGUF key-value count {kv_count} exceeds the limit of {MAX_KV}")
    left = cur.remaining()
    if tensor_count * _MIN_TENSOR_INFO_BYTES > left:
        raise _fail(f"GGUF tensor count {tensor_count} exceeds what fits in a {size}-byte file")
    if kv_count * _MIN_KV_BYTES > left:
        raise _fail(f"GGUF key-value count {kv_count} exceeds what fits in a {size}-byte file")
    if tensor_count * _MIN_TENSOR_INFO_BYTES + kv_count * _MIN_KV_BYTES > left:
        raise _fail(
            f"GGUF tensor count {tensor_count} and key-value count {kv_count} together "
            f"exceed what fits in a {size}-byte file"
        )

    keys: set[str] = set()
    facts = _FactValues()
    context_lengths: dict[str, int] = {}  # the architecture may come after them
    for i in range(kv_count):
        at = cur.pos
        key = cur.string(f"key {i}", MAX_KEY)
        if not key:
            raise _fail(f"GGUF key {i} at byte {at} is empty")
        if key in keys:
            raise _fail(f"GGUF key {quoted(key)} appears twice (again at byte {at})")
        keys.add(key)
        vtype = cur.u32(f"type of key {quoted(key)}")
        if key in _FACT_KEYS:
            _read_fact(cur, key, vtype, facts)
        elif key.endswith(_CONTEXT_LENGTH_SUFFIX) and vtype in _INT_FORMATS:
            context_lengths[key] = _read_int(cur, vtype, key)
        else:
            _skip_value(cur, vtype, f"value of key {quoted(key)}")
    context_length = context_lengths.get(f"{facts.architecture}{_CONTEXT_LENGTH_SUFFIX}")
    if context_length is not None and not 1 <= context_length <= MAX_CONTEXT_LENGTH:
        context_length = None  # not a length llama.cpp could use; the runner's default stands

    alignment = facts.alignment
    split_no, split_count = facts.split_no, facts.split_count
    if split_no is not None and split_count is not None and split_no >= split_count:
        raise _fail(f"GGUF split.no {split_no} is not less than split.count {split_count}")

    names: list[str] = []
    seen: set[str] = set()
    spans: list[tuple[int, int, str]] = []  # (offset in data, byte length, name)
    for i in range(tensor_count):
        at = cur.pos
        n = cur.string_length(f"tensor {i} name", MAX_TENSOR_NAME)
        if n == 0:
            raise _fail(f"GGUF tensor {i} at byte {at} has an empty name")
        name = _check_name(cur.take(n, f"tensor {i} name"), at + 8, i)
        if name in seen:
            raise _fail(f"GGUF tensor name {quoted(name)} appears twice")
        seen.add(name)
        shown = quoted(name)
        n_dims = cur.u32(f"tensor {shown} dimension count")
        if not 1 <= n_dims <= MAX_DIMS:
            raise _fail(f"GGUF tensor {shown} has {n_dims} dimensions; 1 to {MAX_DIMS} are allowed")
        dims = [cur.u64(f"tensor {shown} dimension {j}") for j in range(n_dims)]
        elements = 1
        for j, dim in enumerate(dims):
            if dim == 0:
                raise _fail(f"GGUF tensor {shown} dimension {j} is 0")
            elements *= dim
        if elements > MAX_ELEMENTS:
            raise _fail(f"GGUF tensor {shown} shape {dims} has {elements} elements, 2**63 or more")
        gtype = cur.u32(f"tensor {shown} type")
        info = GGML_TYPES.get(gtype)
        if info is None:
            raise _fail(
                f"GGUF tensor {shown} has unknown or removed ggml type {gtype}",
                hint="re-convert the model with a current llama.cpp",
            )
        type_name, block, block_bytes = info
        if dims[0] % block:
            raise _fail(
                f"GGUF tensor {shown} of type {type_name} has rows of {dims[0]} elements, "
                f"not a multiple of the block size {block}"
            )
        offset = cur.u64(f"tensor {shown} offset")
        if offset % alignment:
            raise _fail(
                f"GGUF tensor {shown} offset {offset} is not a multiple of "
                f"the alignment {alignment}"
            )
        names.append(name)
        spans.append((offset, elements // block * block_bytes, name))

    header_end = cur.pos
    data_offset = -(-header_end // alignment) * alignment
    if data_offset > size:
        if tensor_count:
            raise _fail(
                f"GGUF tensor data would start at byte {data_offset}, past the end of the "
                f"{size}-byte file"
            )
        # ggml does not pad a file without tensors; there is simply no data.
        data_offset = size
    for offset, nbytes, name in spans:
        end = data_offset + offset + nbytes
        if end > size:
            raise _fail(
                f"GGUF tensor {quoted(name)} data [{data_offset + offset}, {end}) runs past "
                f"the end of the {size}-byte file"
            )
    spans.sort()
    for (off_a, len_a, name_a), (off_b, _, name_b) in pairwise(spans):
        if off_a + len_a > off_b:
            raise _fail(
                f"GGUF tensors {quoted(name_a)} [{off_a}, {off_a + len_a}) and "
                f"{quoted(name_b)} (from {off_b}) overlap in the data section"
            )

    return GGUFHeader(
        facts=GGUFFacts(
            version=version,
            architecture=facts.architecture,
            file_type=facts.file_type,
            tensor_count=tensor_count,
            split_no=split_no,
            split_count=split_count,
        ),
        kv_count=kv_count,
        alignment=alignment,
        data_offset=data_offset,
        tensor_names=tuple(names),
        context_length=context_length,
    )


def gguf_from_bytes(data: bytes) -> GGUFHeader:
    """Parse a GGUF header held in memory (a convenience for tests and small files)."""
    blob = bytes(data)

    def read_at(offset: int, n: int) -> bytes:
        return blob[offset : offset + n]

    return parse_gguf(read_at, len(blob))
