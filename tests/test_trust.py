"""The trust gate: hash first, then signatures, then trust, and only then parsing."""

from __future__ import annotations

import pytest

from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.core.signing import PrivateKey, SignatureBundle
from sovnet.errors import (
    IntegrityError,
    InvalidKeyError,
    ManifestFormatError,
    NotFoundError,
    TrustError,
)
from sovnet.formats.fileformat import FileFormat
from sovnet.trust.gate import open_manifest
from sovnet.trust.keys import TrustedKey, TrustStore, parse_key_reference

PUBLISHER = PrivateKey.from_seed(b"\x07" * 32)
STRANGER = PrivateKey.from_seed(b"\x08" * 32)
MANIFEST = Manifest(
    name="acme/tiny",
    piece_size=1 << 22,
    files=(FileEntry("config.json", 2, b"\x01" * 32, b"\x02" * 32, FileFormat.JSON),),
)
RAW = MANIFEST.to_bytes()
CID_ = CID.of(RAW)
TRUSTED = TrustStore((TrustedKey(PUBLISHER.public_key.key_id, "acme", PUBLISHER.public_key),))


def _bundle(*keys: PrivateKey, cid: CID = CID_) -> SignatureBundle:
    bundle = SignatureBundle(cid)
    for key in keys:
        bundle = bundle.with_signature(key.sign(cid))
    return bundle


def test_a_trusted_signature_opens_the_manifest() -> None:
    opened = open_manifest(CID_, RAW, _bundle(PUBLISHER, STRANGER), TRUSTED)
    assert opened.manifest == MANIFEST
    assert opened.trusted
    assert {s.trusted_as for s in opened.signers} == {"acme", None}


def test_bytes_that_do_not_hash_to_the_cid_fail_before_parsing() -> None:
    # Garbage that would also fail to parse: the integrity error must come first.
    with pytest.raises(IntegrityError):
        open_manifest(CID_, b"\x00not json", _bundle(PUBLISHER), TRUSTED)


def test_untrusted_signers_are_refused_and_named() -> None:
    with pytest.raises(TrustError) as info:
        open_manifest(CID_, RAW, _bundle(STRANGER), TRUSTED)
    assert str(STRANGER.public_key.key_id) in info.value.message
    assert "trust add" in (info.value.hint or "")


def test_unsigned_manifests_are_refused() -> None:
    with pytest.raises(TrustError, match="not signed"):
        open_manifest(CID_, RAW, SignatureBundle(CID_), TRUSTED)


def test_a_signature_over_another_cid_does_not_count() -> None:
    other = CID.of(b"other")
    moved = SignatureBundle(CID_, _bundle(PUBLISHER, cid=other).signatures)
    with pytest.raises(TrustError, match="invalid signature"):
        open_manifest(CID_, RAW, moved, TRUSTED)


def test_untrusted_can_still_be_inspected_when_asked() -> None:
    opened = open_manifest(CID_, RAW, _bundle(STRANGER), TRUSTED, require_trusted=False)
    assert not opened.trusted


def test_a_signed_but_malformed_manifest_fails_as_a_format_error() -> None:
    raw = b'{"not":"a manifest"}'
    cid = CID.of(raw)
    with pytest.raises(ManifestFormatError):
        open_manifest(cid, raw, _bundle(PUBLISHER, cid=cid), TRUSTED)


def test_trust_store_round_trips_and_updates() -> None:
    key_id, public = parse_key_reference(str(STRANGER.public_key))
    store = TRUSTED.with_key(TrustedKey(key_id, "bob", public))
    assert TrustStore.from_bytes(store.to_bytes()) == store
    renamed = store.with_key(TrustedKey(key_id, "robert"))
    entry = renamed.get(key_id)
    assert entry is not None and entry.name == "robert" and entry.public_key == public
    assert renamed.without(key_id).get(key_id) is None
    with pytest.raises(NotFoundError):
        TRUSTED.without(key_id)


def test_trusting_by_key_id_alone_is_enough_to_trust_signatures() -> None:
    key_id, public = parse_key_reference(str(PUBLISHER.public_key.key_id))
    assert public is None
    opened = open_manifest(CID_, RAW, _bundle(PUBLISHER), TrustStore((TrustedKey(key_id, "acme"),)))
    assert opened.trusted


def test_a_typed_key_id_must_carry_its_check_group() -> None:
    key_id = PUBLISHER.public_key.key_id
    assert parse_key_reference(str(key_id), typed=True) == (key_id, None)
    assert parse_key_reference(str(PUBLISHER.public_key), typed=True) == (
        key_id,
        PUBLISHER.public_key,
    )
    with pytest.raises(InvalidKeyError, match="no check group"):
        parse_key_reference(key_id.short(), typed=True)
    # Where nothing new is trusted (trust rm, files), the 8-group form still reads.
    assert parse_key_reference(key_id.short()) == (key_id, None)


def test_the_trust_file_keeps_the_8_group_form_and_reads_either() -> None:
    data = TRUSTED.to_bytes()
    short = PUBLISHER.public_key.key_id.short()
    # Unchanged from before the check group: an older sovnet still reads this file.
    assert f'"key_id":"{short}"'.encode() in data
    assert TrustStore.from_bytes(data) == TRUSTED
    checked = data.replace(short.encode(), str(PUBLISHER.public_key.key_id).encode())
    assert TrustStore.from_bytes(checked) == TRUSTED
    typo = short[:3] + ("A" if short[3] != "A" else "B")
    mistyped = checked.replace(short[:4].encode(), typo.encode(), 1)
    with pytest.raises(InvalidKeyError, match="a typo"):
        TrustStore.from_bytes(mistyped)
