"""CIDs: the text form other tools parse, and strict rejection of everything else."""

from __future__ import annotations

import base64

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiformats import CID as MultiformatsCID

from sovnet.core.cid import CID
from sovnet.errors import InvalidCIDError


@given(st.binary(max_size=256))
def test_text_form_round_trips_and_names_the_blake3_of_the_bytes(data: bytes) -> None:
    cid = CID.of(data)
    text = str(cid)
    assert len(text) == 59 and text.startswith("b")
    assert CID.parse(text) == cid
    assert cid.digest == blake3.blake3(data).digest()
    assert cid.matches(data)
    assert not cid.matches(data + b"x")


def test_multiformats_library_reads_it_as_cidv1_raw_blake3() -> None:
    cid = CID.of(b"hello")
    theirs = MultiformatsCID.decode(str(cid))
    assert theirs.version == 1
    assert theirs.codec.name == "raw"
    assert theirs.hashfun.name == "blake3"
    assert bytes(theirs.raw_digest) == blake3.blake3(b"hello").digest()
    assert bytes(theirs) == cid.binary


def test_binary_form_is_the_fixed_prefix_and_digest() -> None:
    cid = CID.of(b"")
    assert cid.binary[:4] == bytes.fromhex("01551e20")
    assert CID.from_binary(cid.binary) == cid
    with pytest.raises(InvalidCIDError):
        CID.from_binary(bytes.fromhex("01701e20") + cid.digest)


def _encode(raw: bytes) -> str:
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "CIDv0"),
        ("zb2rhe5P4gXftAwvA4eXQ5HJwsER2owDyS9sKaQRRVQPn93bA", "base58btc"),
        ("B" + "A" * 58, "base32upper"),
        ("b" + "a" * 57, "58 characters"),
        ("b" + "a" * 57 + "1", "only lower-case"),
        (_encode(bytes.fromhex("00551e20") + bytes(32)), "version 1"),
        (_encode(bytes.fromhex("01701e20") + bytes(32)), "codec 0x70"),
        (_encode(bytes.fromhex("01551220") + bytes(32)), "blake3"),
    ],
)
def test_malformed_cids_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidCIDError) as info:
        CID.parse(text)
    assert reason in info.value.message
    assert info.value.hint


def test_a_second_spelling_of_the_same_bytes_is_refused() -> None:
    text = str(CID.of(b"x"))
    # The last character carries 2 slack bits; setting one gives the same bytes.
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    sloppy = text[:-1] + alphabet[alphabet.index(text[-1]) | 1]
    if sloppy != text:
        with pytest.raises(InvalidCIDError, match="canonical"):
            CID.parse(sloppy)


@given(st.text(max_size=80))
def test_arbitrary_text_gives_a_cid_or_a_typed_error(text: str) -> None:
    try:
        cid = CID.parse(text)
    except InvalidCIDError:
        return
    assert str(cid) == text
