"""Canonical JSON: one byte string per value, so a hash of it names the value.

The encoding is a strict subset of RFC 8785 (JCS), chosen so that a JCS library in
any language produces the same bytes:

* values are objects, arrays, strings, integers, ``true``/``false`` and ``null``;
  no floating-point numbers;
* integers lie within ±(2**53 - 1), the range every JSON implementation keeps exact;
* object keys are ASCII and sorted; no insignificant whitespace;
* strings hold no control characters (U+0000..U+001F, U+007F) and no lone
  surrogates, so the only escapes are ``\\"`` and ``\\\\``; everything else is UTF-8.

:func:`loads` accepts only bytes that :func:`dumps` would produce for the value
they hold: a duplicate key, a float, a space or another escape is an error.

Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sovnet.errors import ManifestFormatError

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 16

JSONValue = None | bool | int | str | list["JSONValue"] | dict[str, "JSONValue"]


def _check(value: object, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ManifestFormatError(f"JSON nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise ManifestFormatError(f"integer {value} is outside ±(2**53-1)")
        return
    if isinstance(value, str):
        check_string(value)
        return
    if isinstance(value, list):
        for item in value:
            _check(item, depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise ManifestFormatError(f"object key {key!r} is not an ASCII string")
            check_string(key)
            _check(item, depth + 1)
        return
    raise ManifestFormatError(f"{type(value).__name__} cannot be encoded as canonical JSON")


# What canonical JSON cannot carry: found in C, not a Python loop a character (a
# store of 5,000 manifests is read at every start).
_REFUSED = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def check_string(text: str) -> None:
    """Refuse strings canonical JSON cannot carry (control characters, lone surrogates)."""
    if _REFUSED.search(text) is None:
        return
    for char in text:
        point = ord(char)
        if point < 0x20 or point == 0x7F:
            raise ManifestFormatError(
                f"string {text[:40]!r} contains control character {point:#04x}"
            )
        if 0xD800 <= point <= 0xDFFF:
            raise ManifestFormatError(f"string {text[:40]!r} contains a lone surrogate")


def dumps(value: JSONValue) -> bytes:
    """The canonical bytes of ``value``."""
    _check(value, 0)
    return json.dumps(
        value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
    ).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ManifestFormatError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_float(text: str) -> Any:
    raise ManifestFormatError(f"number {text[:40]} is not an integer")


def loads(data: bytes, *, max_size: int) -> JSONValue:
    """Parse canonical JSON bytes, refusing anything :func:`dumps` would not emit."""
    if len(data) > max_size:
        raise ManifestFormatError(f"{len(data)} bytes is over the limit of {max_size}")
    try:
        text = data.decode("utf-8")
        value: JSONValue = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_float,
        )
    except UnicodeDecodeError as exc:
        raise ManifestFormatError(f"not UTF-8 at byte {exc.start}") from exc
    except json.JSONDecodeError as exc:
        raise ManifestFormatError(f"not JSON: {exc.msg} at byte {exc.pos}") from exc
    except ValueError as exc:  # e.g. an integer literal of more than 4300 digits
        raise ManifestFormatError(f"not acceptable JSON: {exc}") from exc
    except RecursionError as exc:
        raise ManifestFormatError("JSON nested too deeply") from exc
    if dumps(value) != data:
        raise ManifestFormatError(
            'not in canonical form (sorted keys, no whitespace, no escapes but \\" and \\\\)'
        )
    return value
