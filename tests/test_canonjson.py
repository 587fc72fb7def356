"""Canonical JSON: one byte string per value, and nothing else accepted."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core import canonjson
from sovnet.errors import ManifestFormatError

_safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x7f"),
    max_size=20,
).filter(lambda s: all(ord(c) >= 0x20 for c in s))
_keys = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=8)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-canonjson.MAX_SAFE_INTEGER, canonjson.MAX_SAFE_INTEGER)
    | _safe_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=12,
)


@given(values)
def test_dumps_then_loads_is_identity(value: canonjson.JSONValue) -> None:
    data = canonjson.dumps(value)
    assert canonjson.loads(data, max_size=1 << 20) == value
    # Same bytes as a JCS encoder would give for this subset: sorted keys, no spaces.
    assert (
        data
        == json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"a":1,"a":2}', "duplicate"),
        (b'{"b":1,"a":2}', "canonical"),
        (b'{"a": 1}', "canonical"),
        (b'{"a":1.5}', "not an integer"),
        (b'{"a":NaN}', "not an integer"),
        (b'{"a":9007199254740992}', "outside"),
        (b'"\\u0041"', "canonical"),
        (b'"a\\nb"', "control character"),
        (b"\xff", "UTF-8"),
        (b"[" * 50 + b"]" * 50, "deeper"),
        (b'{"a":1', "not JSON"),
        (b"1" * 5000, "acceptable"),
    ],
)
def test_non_canonical_or_unsupported_input_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ManifestFormatError, match=reason):
        canonjson.loads(data, max_size=1 << 20)


def test_size_limit_is_checked_before_parsing() -> None:
    with pytest.raises(ManifestFormatError, match="over the limit"):
        canonjson.loads(b"[" + b"1," * 100 + b"1]", max_size=100)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_a_value_or_a_typed_error(data: bytes) -> None:
    try:
        value = canonjson.loads(data, max_size=1 << 20)
    except ManifestFormatError:
        return
    assert canonjson.dumps(value) == data
