"""Keys, key ids and signatures over CIDs."""

from __future__ import annotations

import blake3
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core.cid import CID
from sovnet.core.signing import KeyId, PrivateKey, PublicKey, SignatureBundle, signed_message
from sovnet.errors import InvalidKeyError, ManifestFormatError

ALICE = PrivateKey.from_seed(b"\x01" * 32)
BOB = PrivateKey.from_seed(b"\x02" * 32)
CID_A = CID.of(b"manifest a")
CID_B = CID.of(b"manifest b")


def test_signature_binds_the_cid_with_a_domain_prefix() -> None:
    signature = ALICE.sign(CID_A)
    assert signature.verify(CID_A)
    assert not signature.verify(CID_B)
    assert signed_message(CID_A).startswith(b"sovnet manifest signature v1\x00")
    assert signed_message(CID_A).endswith(CID_A.binary)


def test_a_flipped_signature_bit_fails() -> None:
    signature = ALICE.sign(CID_A)
    bad = bytes([signature.value[0] ^ 1]) + signature.value[1:]
    assert not ALICE.public_key.verify(CID_A, bad)


def test_key_id_is_grouped_base32_with_a_check_group_and_parses_loosely() -> None:
    key_id = ALICE.public_key.key_id
    text = str(key_id)
    assert len(text.split("-")) == 9 and all(len(g) == 4 for g in text.split("-"))
    assert text.startswith(key_id.short() + "-")
    assert KeyId.parse(text) == key_id
    assert KeyId.parse(text.lower().replace("-", " ")) == key_id
    assert KeyId.parse_checked(text) == key_id
    assert ALICE.public_key.key_id != BOB.public_key.key_id


def test_the_check_group_is_the_spec_s_blake3_of_the_20_bytes() -> None:
    # docs/spec.md §8, computed here from its words, not from KeyId's code.
    key_id = ALICE.public_key.key_id
    digest = blake3.blake3(b"sovnet key id check v1\x00" + key_id.raw).digest()
    bits = int.from_bytes(digest[:3], "big") >> 4  # the first 20 bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    check = "".join(alphabet[(bits >> shift) & 31] for shift in (15, 10, 5, 0))
    assert str(key_id).rsplit("-", 1)[1] == check


def test_the_8_group_form_of_files_before_the_check_still_reads() -> None:
    key_id = ALICE.public_key.key_id
    short = key_id.short()
    assert len(short.split("-")) == 8
    assert KeyId.parse(short) == key_id
    # ...but a person typing a key id must give the check group.
    with pytest.raises(InvalidKeyError, match="no check group") as info:
        KeyId.parse_checked(short)
    assert "9th group" in (info.value.hint or "") and "ed25519:" in (info.value.hint or "")


def _typos(text: str) -> list[str]:
    """Every single-character substitution and adjacent transposition of a key id."""
    chars = [c for c in text if c != "-"]
    out = []
    for i, c in enumerate(chars):
        for other in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567":
            if other != c:
                out.append("".join([*chars[:i], other, *chars[i + 1 :]]))
    for i in range(len(chars) - 1):
        if chars[i] != chars[i + 1]:
            swapped = chars.copy()
            swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
            out.append("".join(swapped))
    return out


@pytest.mark.parametrize("key", [ALICE, BOB], ids=["alice", "bob"])
def test_every_single_typo_of_a_key_id_is_refused(key: PrivateKey) -> None:
    # A 20-bit check misses a given typo with probability 2^-20: over these ~1,150
    # typos of two fixed keys, none is missed (a fixed outcome, not a flaky one).
    typos = _typos(str(key.public_key.key_id))
    assert len(typos) > 36 * 31
    for typo in typos:
        with pytest.raises(InvalidKeyError, match="check group does not match: a typo"):
            KeyId.parse(typo)


def test_key_id_order_and_equality_are_the_raw_bytes() -> None:
    a, b = ALICE.public_key.key_id, BOB.public_key.key_id
    assert (a < b) == (a.raw < b.raw)
    assert KeyId(a.raw) == a and hash(KeyId(a.raw)) == hash(a)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ABCD",
        "0" * 32,
        "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-456",
        "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567-AB",  # a check group cut short
        "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ23-4567-ABCD-EFGH",
    ],
)
def test_bad_key_ids_are_refused(text: str) -> None:
    with pytest.raises(InvalidKeyError):
        KeyId.parse(text)


def test_public_key_text_round_trips() -> None:
    public = ALICE.public_key
    assert PublicKey.parse(str(public)) == public
    assert PublicKey.parse(public.raw.hex()) == public
    with pytest.raises(InvalidKeyError):
        PublicKey.parse("ed25519:zz")


def test_pem_round_trip_keeps_the_key() -> None:
    again = PrivateKey.from_pem(ALICE.to_pem())
    assert again.public_key == ALICE.public_key
    with pytest.raises(InvalidKeyError):
        PrivateKey.from_pem(b"-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n")
    assert "seed" not in repr(ALICE).lower()


def test_bundles_hold_one_signature_per_key_and_merge() -> None:
    bundle = SignatureBundle(CID_A).with_signature(ALICE.sign(CID_A))
    bundle = bundle.with_signature(BOB.sign(CID_A)).with_signature(ALICE.sign(CID_A))
    assert len(bundle.signatures) == 2
    assert SignatureBundle.from_bytes(bundle.to_bytes(), CID_A) == bundle
    other = SignatureBundle(CID_A).with_signature(BOB.sign(CID_A))
    assert SignatureBundle(CID_A).with_signature(ALICE.sign(CID_A)).merged(other) == bundle


def test_merging_drops_signatures_that_do_not_verify() -> None:
    forged = SignatureBundle(CID_A).with_signature(BOB.sign(CID_B))
    assert SignatureBundle(CID_A).merged(forged).signatures == ()


def test_a_bundle_for_another_cid_is_refused() -> None:
    bundle = SignatureBundle(CID_A).with_signature(ALICE.sign(CID_A))
    with pytest.raises(ManifestFormatError, match="not"):
        SignatureBundle.from_bytes(bundle.to_bytes(), CID_B)


@given(st.binary(max_size=400))
def test_hostile_bundle_bytes_give_a_bundle_or_a_typed_error(data: bytes) -> None:
    try:
        bundle = SignatureBundle.from_bytes(data, CID_A)
    except ManifestFormatError:
        return
    assert bundle.to_bytes() == data


@pytest.mark.parametrize(("digit", "letter"), [("0", "O"), ("1", "I"), ("8", "B"), ("9", "G")])
def test_a_key_id_with_a_digit_base32_lacks_says_so(digit: str, letter: str) -> None:
    text = str(ALICE.public_key.key_id)
    typo = digit + text[1:]
    for parse in (KeyId.parse, KeyId.parse_checked):
        with pytest.raises(InvalidKeyError) as caught:
            parse(typo)
        said = f"{caught.value.message} {caught.value.hint}"
        assert "no 0, 1, 8 or 9" in said, said
        assert f"{letter} for {digit}" in said, said


def test_a_long_key_id_is_not_echoed_back_in_full() -> None:
    for text in ("A" * 5000, "0" * 5000, str(ALICE.public_key.key_id)[:-1] + "A" * 5000):
        with pytest.raises(InvalidKeyError) as caught:
            KeyId.parse_checked(text)
        assert len(caught.value.message) < 300, caught.value.message
    with pytest.raises(InvalidKeyError) as caught:
        PublicKey.parse("ed25519:" + "a" * 5000)
    assert len(caught.value.message) < 300
