"""Bounded, pure validation of safetensors file headers.

A safetensors file is an 8-byte little-endian length N, N bytes of UTF-8 JSON
header, then the data buffer. :func:`parse_safetensors` checks the header and
that it describes the data buffer exactly, and either returns the facts sovnet
records or raises :class:`~sovnet.errors.MalformedFileError` saying precisely
what is wrong. No other exception escapes it for any input bytes.

What it checks, following the format's README and the reference Rust crate
(``safetensors::tensor::SafeTensors::read_metadata``), in places more strictly:

* N <= :data:`MAX_HEADER` and the header lies inside the file;
* the header is strict UTF-8 and a JSON object that starts at its first byte,
  padded at the end with spaces (0x20) only; no duplicate keys, no NaN or
  Infinity, no unpaired surrogate escapes, no absurdly long integers;
* ``__metadata__``, if present, maps strings to strings;
* every other entry has exactly the keys ``dtype``, ``shape``, ``data_offsets``;
  a dtype of :data:`DTYPE_BITS`; a shape of at most :data:`MAX_RANK` non-negative
  integers (``true`` is not an integer here); offsets ``[begin, end]`` with
  begin <= end, whose length is exactly the tensor's size. Sizes are computed as
  the crate does: element count and bit count must stay below 2**64, and a
  sub-byte dtype (F4, F6_*) must fill whole bytes;
* sorted by offset, the tensors tile the data buffer exactly: no hole, no
  overlap, nothing after the last tensor (so no tensors means no data).

What it does not do: read tensor data (it never checks values, alignment in
memory, or NaNs in weights) or interpret metadata values. It never opens files:
it reads through ``read_at(offset, n)``, at most :data:`MAX_READ` bytes per
call and never past ``size``. Memory is bounded by :data:`MAX_HEADER` and the
JSON objects parsed from it. Exceptions raised by ``read_at`` itself are the
caller's and pass through.
"""

from __future__ import annotations

import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sovnet.errors import MalformedFileError, quoted

ReadAt = Callable[[int, int], bytes]

# The Rust crate's MAX_HEADER_SIZE.
MAX_HEADER = 100_000_000
MAX_RANK = 16
MAX_READ = 1024 * 1024
# Shapes and offsets are usize in the crate: 64-bit on every platform we serve.
USIZE_LIMIT = 2**64
# Longest integer literal accepted while parsing: 2**64 has 20 digits. Refusing
# longer ones up front also keeps Python's int-parsing limit (ValueError past
# 4300 digits) from ever being reached.
_MAX_INT_DIGITS = 20

# Every dtype the safetensors 0.8 crate accepts, with its size in bits.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}

METADATA_KEY = "__metadata__"
_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})

_HINT = "the file is truncated, corrupt, or was not written by a safetensors library"


@dataclass(frozen=True)
class SafetensorsFacts:
    """What sovnet records about a safetensors file."""

    tensor_count: int
    dtypes: tuple[str, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A validated safetensors header."""

    facts: SafetensorsFacts
    tensor_names: frozenset[str]
    # A read-only view; excluded from hashing because mappings are not hashable.
    metadata: Mapping[str, str] = field(hash=False)


def _fail(message: str, hint: str = _HINT) -> MalformedFileError:
    return MalformedFileError(message, hint=hint)


def _read(read_at: ReadAt, offset: int, n: int, size: int) -> bytes:
    """Read exactly ``n`` bytes at ``offset`` (inside the file) in MAX_READ pieces."""
    parts: list[bytes] = []
    left = n
    while left:
        step = min(left, MAX_READ)
        data = read_at(offset, step)
        if len(data) != step:
            raise _fail(
                f"reading {step} bytes at offset {offset} returned {len(data)}: the file is "
                f"not the {size} bytes it was said to be (did it change while being read?)",
                hint="read the file again once nothing is writing to it",
            )
        parts.append(data)
        offset += step
        left -= step
    return b"".join(parts)


def _object_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _fail(f"safetensors header has the key {quoted(key)} twice")
            seen.add(key)
    return obj


def _reject_constant(name: str) -> object:
    raise _fail(f"safetensors header contains {name}, which is not JSON")


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _fail(f"safetensors header contains a {len(text)}-character integer")
    return int(text)


def _brief(value: object) -> str:
    """Describe a parsed JSON value in bounded time and length, for error messages."""
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, list):
        if len(value) <= 4 and all(_is_scalar(v) for v in value):
            return repr(value)
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} keys"
    return repr(value)  # int (at most 21 characters, see _parse_int), float, bool, None


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float))


def _check_text(text: str, what: str) -> None:
    # json accepts "\ud800" escapes; such a string cannot be written as UTF-8
    # (and serde_json, behind the Rust crate, refuses it).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(f"safetensors {what} {quoted(text)} contains an unpaired surrogate") from exc


def _is_usize(value: object) -> bool:
    # bool is a subclass of int: `true` must not pass for 1.
    return type(value) is int and 0 <= value < USIZE_LIMIT


def _check_metadata(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fail(f"safetensors {METADATA_KEY} is a {type(value).__name__}, not an object")
    out: dict[str, str] = {}
    for key, item in value.items():
        _check_text(key, "metadata key")
        if not isinstance(item, str):
            raise _fail(
                f"safetensors metadata value for {quoted(key)} is a {type(item).__name__}, "
                "not a string"
            )
        _check_text(item, "metadata value")
        out[key] = item
    return out


def _check_entry(name: str, entry: object) -> tuple[int, int, str]:
    """Validate one tensor entry; return (begin, end, dtype)."""
    shown = quoted(name)
    if not isinstance(entry, dict):
        raise _fail(f"safetensors tensor {shown} is a {type(entry).__name__}, not an object")
    keys = set(entry)
    if keys != _ENTRY_KEYS:
        missing = sorted(_ENTRY_KEYS - keys)
        extra = sorted(quoted(k) for k in keys - _ENTRY_KEYS)
        raise _fail(
            f"safetensors tensor {shown} must have exactly the keys dtype, shape, data_offsets"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unexpected {', '.join(extra)}" if extra else "")
        )
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _fail(f"safetensors tensor {shown} has unknown dtype {_brief(dtype)}")
    shape = entry["shape"]
    if not isinstance(shape, list):
        raise _fail(f"safetensors tensor {shown} shape is a {type(shape).__name__}, not a list")
    if len(shape) > MAX_RANK:
        raise _fail(f"safetensors tensor {shown} has {len(shape)} dimensions, over {MAX_RANK}")
    elements = 1
    for dim in shape:
        if not _is_usize(dim):
            raise _fail(
                f"safetensors tensor {shown} shape entry {_brief(dim)} is not a "
                "non-negative integer below 2**64"
            )
        # Multiplied in order with an overflow check, as the crate's
        # try_fold(checked_mul) does: [2**40, 2**40, 0] is refused, not 0.
        elements *= dim
        if elements >= USIZE_LIMIT:
            raise _fail(f"safetensors tensor {shown} shape {shape} overflows 2**64 elements")
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not _is_usize(offsets[0])
        or not _is_usize(offsets[1])
    ):
        raise _fail(
            f"safetensors tensor {shown} data_offsets {_brief(offsets)} is not a pair of "
            "non-negative integers below 2**64"
        )
    begin, end = offsets
    if begin > end:
        raise _fail(f"safetensors tensor {shown} data_offsets [{begin}, {end}] end before begin")
    bits = elements * DTYPE_BITS[dtype]
    if bits >= USIZE_LIMIT:
        raise _fail(f"safetensors tensor {shown} shape {shape} overflows 2**64 bits of {dtype}")
    if bits % 8:
        raise _fail(
            f"safetensors tensor {shown} of {elements} {dtype} elements is {bits} bits, "
            "not a whole number of bytes"
        )
    if end - begin != bits // 8:
        raise _fail(
            f"safetensors tensor {shown} data_offsets [{begin}, {end}] hold {end - begin} "
            f"bytes but dtype {dtype} and shape {shape} need {bits // 8}"
        )
    return begin, end, dtype


def parse_safetensors(read_at: ReadAt, size: int) -> SafetensorsHeader:
    """Validate the header of a ``size``-byte safetensors file read through ``read_at``.

    ``read_at(offset, n)`` must return exactly ``n`` bytes, or fewer only at the
    end of the file. Raises :class:`MalformedFileError` for anything that is not
    a well-formed safetensors file within this module's limits.
    """
    if size < 8:
        raise _fail(f"file of {size} bytes is too short for the 8-byte safetensors header length")
    n = int.from_bytes(_read(read_at, 0, 8, size), "little")
    if n > MAX_HEADER:
        raise _fail(f"safetensors header length {n} exceeds the limit of {MAX_HEADER} bytes")
    if 8 + n > size:
        raise _fail(f"safetensors header length {n} runs past the end of the {size}-byte file")
    raw = _read(read_at, 8, n, size)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(f"safetensors header is not valid UTF-8 (byte {8 + exc.start})") from exc
    # The format requires the JSON to start at the first byte and allows
    # right-padding with spaces (writers align the data buffer to 8 bytes that
    # way). Other whitespace, which json would accept, is refused: one spelling
    # per header.
    body = text.rstrip(" ")
    if not body.startswith("{"):
        raise _fail("safetensors header does not start with '{' (a JSON object) at its first byte")
    if body[-1] in "\t\n\r":
        raise _fail("safetensors header is padded with whitespace other than spaces")
    try:
        parsed: object = json.loads(
            body,
            object_pairs_hook=_object_pairs,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except json.JSONDecodeError as exc:
        raise _fail(
            f"safetensors header is not valid JSON: {exc.msg} at character {exc.pos}"
        ) from exc
    except RecursionError as exc:
        raise _fail("safetensors header nests JSON too deeply") from exc
    except ValueError as exc:  # defensive: json reports everything else as ValueError
        raise _fail(f"safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise _fail("safetensors header is not a JSON object")

    metadata: dict[str, str] = {}
    spans: list[tuple[int, int, str]] = []
    dtypes: set[str] = set()
    for name, entry in parsed.items():
        if name == METADATA_KEY:
            metadata = _check_metadata(entry)
            continue
        _check_text(name, "tensor name")
        begin, end, dtype = _check_entry(name, entry)
        spans.append((begin, end, name))
        dtypes.add(dtype)

    data_len = size - 8 - n
    # Sorted by (begin, end) as the crate sorts, the tensors must follow each
    # other with no gap and no overlap from 0 to the end of the file.
    spans.sort()
    position = 0
    previous: str | None = None
    for begin, end, name in spans:
        if end > data_len:
            raise _fail(
                f"safetensors tensor {quoted(name)} data_offsets [{begin}, {end}] run past the "
                f"end of the {data_len}-byte data buffer"
            )
        if begin > position:
            after = "at the start" if previous is None else f"after tensor {quoted(previous)}"
            raise _fail(
                f"safetensors data buffer has a hole of {begin - position} bytes {after} "
                f"(tensor {quoted(name)} begins at {begin}, expected {position})"
            )
        if begin < position and previous is not None:
            raise _fail(
                f"safetensors tensors {quoted(previous)} and {quoted(name)} overlap "
                f"({quoted(name)} begins at {begin}, {quoted(previous)} ends at {position})"
            )
        position = end
        previous = name
    if position != data_len:
        if previous is None:
            raise _fail(f"safetensors header declares no tensors but {data_len} data bytes follow")
        raise _fail(
            f"safetensors data buffer has {data_len - position} trailing bytes after the "
            f"last tensor {quoted(previous)}"
        )

    return SafetensorsHeader(
        facts=SafetensorsFacts(tensor_count=len(spans), dtypes=tuple(sorted(dtypes))),
        tensor_names=frozenset(name for _, _, name in spans),
        metadata=types.MappingProxyType(metadata),
    )


def safetensors_from_bytes(data: bytes) -> SafetensorsHeader:
    """Parse a safetensors header held in memory (a convenience for tests and small files)."""
    blob = bytes(data)

    def read_at(offset: int, n: int) -> bytes:
        return blob[offset : offset + n]

    return parse_safetensors(read_at, len(blob))
