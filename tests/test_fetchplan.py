"""The fetch's decisions, with no sockets: which manifest is accepted, and why not."""

from __future__ import annotations

import pytest

from sovnet.address import PeerAddress
from sovnet.cid import CID
from sovnet.errors import IntegrityError, NotFoundError, TrustError
from sovnet.fetchplan import Answer, Progress, choose_manifest
from sovnet.manifest import FileEntry, FileFormat, Manifest
from sovnet.signing import PrivateKey, SignatureBundle
from sovnet.trust import TrustedKey, TrustStore

A, B, C = (PeerAddress("192.0.2.1", p) for p in (1, 2, 3))
PUBLISHER = PrivateKey.from_seed(bytes(range(32)))
STRANGER = PrivateKey.from_seed(bytes(range(1, 33)))
TRUST = TrustStore((TrustedKey(PUBLISHER.public_key.key_id, "publisher"),))

MANIFEST = Manifest(
    name="acme/m",
    piece_size=1 << 22,
    files=(FileEntry("f", 3, b"\1" * 32, b"\2" * 32, FileFormat.TEXT),),
)
RAW = MANIFEST.to_bytes()
CID_ = CID.of(RAW)


def _bundle(*keys: PrivateKey) -> bytes:
    bundle = SignatureBundle(CID_)
    for key in keys:
        bundle = bundle.with_signature(key.sign(CID_))
    return bundle.to_bytes()


def test_accepts_a_trusted_manifest_and_lists_its_holders() -> None:
    answers = [
        Answer(A, RAW, _bundle(PUBLISHER)),
        Answer(B),
        Answer(C, RAW, _bundle(STRANGER)),
    ]
    accepted = choose_manifest(CID_, answers, TRUST)
    assert accepted.opened.manifest == MANIFEST
    assert accepted.holders == (A, C)
    # Co-signatures from every holder are kept (each is checked again when used).
    assert len(accepted.bundle.signatures) == 2


def test_signed_only_by_strangers_is_not_trusted() -> None:
    with pytest.raises(TrustError, match="valid, not trusted"):
        choose_manifest(CID_, [Answer(A, RAW, _bundle(STRANGER))], TRUST)


def test_unsigned_is_not_trusted() -> None:
    with pytest.raises(TrustError, match="not signed by anyone"):
        choose_manifest(CID_, [Answer(A, RAW, b"garbage")], TRUST)


def test_bytes_that_are_not_the_cid_are_refused() -> None:
    with pytest.raises(IntegrityError, match="do not hash"):
        choose_manifest(CID_, [Answer(A, RAW + b" ", _bundle(PUBLISHER))], TRUST)


def test_a_forged_signature_does_not_count() -> None:
    bundle = bytearray(_bundle(PUBLISHER))
    at = bundle.index(b'"signature":"') + 14
    bundle[at] = ord("0") if bundle[at] != ord("0") else ord("1")
    with pytest.raises(TrustError, match="invalid signature"):
        choose_manifest(CID_, [Answer(A, RAW, bytes(bundle))], TRUST)


def test_nobody_has_it() -> None:
    with pytest.raises(NotFoundError, match="not found on any of 2 peer"):
        choose_manifest(CID_, [Answer(A), Answer(B, error="B: refused")], TRUST)


def test_no_peers() -> None:
    with pytest.raises(NotFoundError, match="knows no peers"):
        choose_manifest(CID_, [], TRUST)


def test_progress_rate_eta_and_stall() -> None:
    progress = Progress(total=1000, stall_timeout=5, started=100.0)
    progress.update(100, 101.0)
    progress.update(300, 102.0)
    assert progress.rate() == pytest.approx(150.0)
    assert progress.eta() == pytest.approx(700 / 150)
    assert not progress.stalled(106.9)
    progress.update(300, 107.5)  # no new bytes
    assert progress.stalled(107.5)
    progress.update(1000, 108.0)
    assert not progress.stalled(200.0)
    assert progress.eta() == 0.0


def test_bytes_that_fall_and_rise_again_are_no_progress() -> None:
    # What a peer that sends only corrupt pieces looks like: each piece arrives,
    # fails its hash check and is thrown away.
    progress = Progress(total=1000, stall_timeout=5, started=100.0)
    progress.update(400, 101.0)
    for second in range(102, 108):
        progress.update(200, second)
        progress.update(400, second + 0.5)
    assert progress.done == 400
    assert progress.stalled(107.0)
    progress.update(401, 107.5)
    assert not progress.stalled(107.5)
