"""The fetch's decisions, with no sockets: which manifest is accepted, and why not;
when a download has stalled; when its resume data is worth saving."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.core.signing import PrivateKey, SignatureBundle
from sovnet.daemon.fetchplan import Answer, Progress, choose_manifest, resume_due
from sovnet.errors import IntegrityError, NotFoundError, TrustError
from sovnet.formats.fileformat import FileFormat
from sovnet.trust.keys import TrustedKey, TrustStore

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


GIB = 1 << 30
MIB = 1 << 20


def test_resume_is_saved_every_twentieth_of_a_download_whatever_the_clock() -> None:
    assert resume_due(done=52 * MIB, asked_at=0, total=GIB, now=0.0, next_time=5.0)
    assert not resume_due(done=50 * MIB, asked_at=0, total=GIB, now=0.0, next_time=5.0)
    # Not more often than every 4 MiB, however small the download.
    assert not resume_due(done=3 * MIB, asked_at=0, total=10 * MIB, now=0.0, next_time=5.0)
    assert resume_due(done=4 * MIB, asked_at=0, total=10 * MIB, now=0.0, next_time=5.0)


def test_by_time_only_once_the_new_bytes_outweigh_the_hashes_rewritten() -> None:
    # 70 GiB done of 140: a save rewrites about 280 MiB of hashes.
    done = 70 * GIB
    assert not resume_due(done=done, asked_at=done - GIB, total=140 * GIB, now=9.0, next_time=5.0)
    assert resume_due(done=done, asked_at=done - 5 * GIB, total=140 * GIB, now=9.0, next_time=5.0)
    # Early in a download the hashes are few: the clock decides.
    assert resume_due(done=30 * MIB, asked_at=0, total=GIB, now=5.0, next_time=5.0)
    assert not resume_due(done=30 * MIB, asked_at=0, total=GIB, now=4.9, next_time=5.0)


def test_nothing_new_is_never_worth_saving() -> None:
    assert not resume_due(done=GIB, asked_at=GIB, total=2 * GIB, now=99.0, next_time=5.0)
    # A hash failure can take bytes back below what was saved.
    assert not resume_due(done=GIB, asked_at=GIB + MIB, total=2 * GIB, now=99.0, next_time=5.0)


@given(
    total=st.integers(1, 1 << 41),
    rate=st.integers(1 << 16, 1 << 31),
    interval=st.floats(0.5, 60.0),
)
def test_resume_data_written_stays_a_small_share_of_any_download(
    total: int, rate: int, interval: float
) -> None:
    """Saving as told (each save writing a tree of done/256 bytes), the resume data
    written over a whole download is at most about 6% + 4% of it, and no more than
    1/20 of it (or 4 MiB) is ever at risk."""
    done = asked = 0
    now, next_time, written = 0.0, interval, 0
    tick = max(0.1, total / rate / 2000)  # at most a few thousand steps
    step = max(total // 20, 4 * MIB)
    while done < total:
        now += tick
        done = min(total, done + int(rate * tick))
        assert done - asked <= step + int(rate * tick)
        if resume_due(done=done, asked_at=asked, total=total, now=now, next_time=next_time):
            written += done // 256
            asked, next_time = done, now + interval
    assert written <= total * 0.11 + 21 * (4 * MIB // 256)
