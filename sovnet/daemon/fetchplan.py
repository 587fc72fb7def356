"""The decisions of a fetch, without I/O: which manifest to accept, and when a
transfer has stalled.

:func:`choose_manifest` takes what peers answered for a CID and returns the one
manifest the node may act on, or the error that explains why there is none.
Nothing joins a swarm for a manifest that did not pass the trust gate here.

:class:`Progress` follows a download's byte count over time (``now`` is an
argument) and says when it has made no progress for too long; :func:`resume_due`
says when its resume data is worth saving.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.signing import SignatureBundle
from sovnet.errors import IntegrityError, NotFoundError, SovnetError, TrustError
from sovnet.trust.gate import UNTRUSTED_HINT, OpenedManifest, open_manifest, untrusted_reason
from sovnet.trust.keys import TrustStore


@dataclass(frozen=True)
class Answer:
    """What one peer said when asked for a CID's manifest."""

    peer: PeerAddress
    raw: bytes | None = None  # None: the peer does not have it
    bundle: bytes | None = None
    error: str | None = None  # the peer could not be asked


@dataclass(frozen=True)
class Accepted:
    opened: OpenedManifest
    bundle: SignatureBundle  # every valid signature any peer sent, merged
    holders: tuple[PeerAddress, ...]  # peers that sent the accepted manifest


def choose_manifest(cid: CID, answers: Sequence[Answer], trust: TrustStore) -> Accepted:
    """The manifest of ``cid`` as peers sent it, through the trust gate."""
    if not answers:
        raise NotFoundError(
            f"{cid}: this node knows no peers to ask",
            hint="add one with `sovnet peers add HOST:PORT` or pass --peer HOST:PORT",
        )
    offered = [a for a in answers if a.raw is not None]
    if not offered:
        unreachable = [a for a in answers if a.error]
        hint = "check the CID, or ask whoever gave it to you which node holds it"
        if unreachable:
            hint = "could not ask: " + "; ".join(str(a.error) for a in unreachable[:5])
        raise NotFoundError(
            f"{cid} was not found on any of {len(answers)} peer(s)",
            hint=hint,
        )
    genuine = [a for a in offered if a.raw is not None and cid.matches(a.raw)]
    if not genuine:
        raise IntegrityError(
            f"peers sent a manifest for {cid} whose bytes do not hash to it: "
            + ", ".join(str(a.peer) for a in offered[:5]),
            hint="those peers are faulty or hostile; nothing was downloaded",
        )
    raw = genuine[0].raw
    assert raw is not None
    valid = SignatureBundle(cid)  # what is kept: valid signatures only
    seen = SignatureBundle(cid)  # what is reported: one signature a key, valid if any is
    for answer in genuine:
        try:
            offered_bundle = SignatureBundle.from_bytes(answer.bundle or b"", cid)
        except SovnetError:
            continue  # a malformed bundle from one peer does not spoil the others
        valid = valid.merged(offered_bundle)
        for signature in offered_bundle.signatures:
            known = [s for s in seen.signatures if s.key_id == signature.key_id]
            if not known or (signature.verify(cid) and not known[0].verify(cid)):
                seen = seen.with_signature(signature)
    if not open_manifest(cid, raw, valid, trust, require_trusted=False).trusted:
        reported = open_manifest(cid, raw, seen, trust, require_trusted=False)
        raise TrustError(untrusted_reason(cid, reported.signers), hint=UNTRUSTED_HINT)
    opened = open_manifest(cid, raw, valid, trust)
    return Accepted(opened, valid, tuple(a.peer for a in genuine))


@dataclass
class Progress:
    """Bytes done over time: rate, ETA and stall detection for one download."""

    total: int
    stall_timeout: float
    started: float
    done: int = 0
    last_progress: float = field(default=0.0)
    best: int = 0  # the most bytes ever done: only going past it is progress
    _samples: list[tuple[float, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.last_progress = self.started
        self.best = self.done
        self._samples = [(self.started, self.done)]

    def update(self, done: int, now: float) -> None:
        # Bytes done also fall: a piece that fails its hash check is thrown away.
        # A peer sending only corrupt pieces makes them rise and fall forever, and
        # that is a stall.
        if done > self.best:
            self.best = done
            self.last_progress = now
        self.done = done
        self._samples.append((now, done))
        # Keep about ten seconds of samples for the rate.
        while len(self._samples) > 2 and now - self._samples[1][0] > 10:
            self._samples.pop(0)

    def rate(self) -> float:
        """Bytes per second over the last few seconds."""
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self) -> float | None:
        rate = self.rate()
        if self.done >= self.total:
            return 0.0
        return (self.total - self.done) / rate if rate > 0 else None

    def stalled(self, now: float) -> bool:
        return self.done < self.total and now - self.last_progress > self.stall_timeout


RESUME_STEPS = 20  # resume data is saved at least every 1/20 of a download...
MIN_RESUME_STEP = 4 * 1024 * 1024  # ...but not more often than every 4 MiB of it
# By time, a save waits until the bytes it protects are at least this many times
# the hashes it rewrites. libtorrent's resume data holds the merkle tree nodes it
# checked, about 4 MiB a GiB done: every save rewrites all of them.
RESUME_COST_SHARE = 16
RESUME_BYTES_PER_DONE = 256  # bytes done per byte of resume data (4 MiB a GiB)


def resume_due(*, done: int, asked_at: int, total: int, now: float, next_time: float) -> bool:
    """Whether a download should ask for resume data now.

    ``done`` bytes are complete, ``asked_at`` were when it was last asked for,
    ``total`` is the whole download; ``next_time`` is when a save by time is due.
    By bytes, every 1/20 of the download: on a LAN a few seconds can be most of a
    model, all of it downloaded again after a crash. By time, only once the new
    bytes outweigh the cost: with a save every few seconds regardless, a 140 GiB
    model at 10 MB/s rewrote about six times its size in resume data (its hashes,
    over and over); this way resume data stays near 6% of a download of any
    size, and a crash still costs at most 1/20 of the download.
    """
    unsaved = done - asked_at
    if unsaved <= 0:
        return False
    if unsaved >= max(total // RESUME_STEPS, MIN_RESUME_STEP):
        return True
    cost = done // RESUME_BYTES_PER_DONE
    return now >= next_time and unsaved >= RESUME_COST_SHARE * cost
