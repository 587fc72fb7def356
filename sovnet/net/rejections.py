"""Connections this node refused, counted and logged without flooding the log.

Both listeners report here: the control plane (a TLS handshake without a member
certificate, too many connections, a request too slow) and the swarm (a
BitTorrent handshake libtorrent refused). Every refusal is counted by where and
why, for `sovnet status`. The log gets one INFO line per source and listener per
``interval``, with the count and the reasons: a member scanning or flooding the
ports shows up once a minute, not once a connection::

    rejected 37 connections from 203.0.113.9 to the control plane in the last 60 s:
    no member certificate (30), a certificate of another network (7)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CONTROL = "control"
SWARM = "swarm"
METRICS = "metrics"
_WHERE = {CONTROL: "the control plane", SWARM: "the swarm", METRICS: "the metrics listener"}


@dataclass(frozen=True)
class RejectionCount:
    plane: str  # "control" or "swarm"
    reason: str
    count: int
    last_from: str  # the source of the latest one


@dataclass
class _Window:
    started: float
    reasons: Counter[str] = field(default_factory=Counter)
    timer: asyncio.TimerHandle | None = None


def handshake_reason(error: str) -> str:
    """Why a TLS handshake failed, from OpenSSL's words (as Python's ssl module or
    libtorrent report them), in the words `status` and the log use."""
    text = error.lower().replace("_", " ")
    if "taking longer" in text or "timed out" in text:
        return "TLS handshake timed out"
    if "did not return a certificate" in text or "no certificate" in text:
        return "no member certificate"
    if "certificate verify failed" in text:
        return "a certificate of another network"
    if "callback failed" in text:  # libtorrent: the name it asked for is no swarm of ours
        return "asked for no swarm of this network"
    if any(
        words in text
        for words in (
            "wrong version number",
            "http request",
            "unknown protocol",
            "packet length too long",
            "record layer failure",
        )
    ):
        return "not TLS"
    if any(words in text for words in ("eof", "end of file", "reset", "connection lost")):
        return "closed during the TLS handshake"
    return f"TLS handshake failed ({error})"


class Rejections:
    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self._clock = clock
        self._counts: Counter[tuple[str, str]] = Counter()
        self._last: dict[tuple[str, str], str] = {}
        self._windows: dict[tuple[str, str], _Window] = {}

    def record(self, plane: str, source: str, reason: str) -> None:
        """One connection from ``source`` refused by ``plane`` for ``reason``."""
        self._counts[(plane, reason)] += 1
        self._last[(plane, reason)] = source
        now = self._clock()
        key = (plane, source)
        window = self._windows.get(key)
        if window is not None and now - window.started >= self.interval:
            self._flush(key)  # no loop ran its timer (or it is late): log it now
            window = None
        if window is None:
            window = self._windows[key] = _Window(now)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass  # flushed by the next record() or close()
            else:
                window.timer = loop.call_later(self.interval, self._flush, key)
        window.reasons[reason] += 1
        if len(self._windows) > 10_000:  # a flood from everywhere: log what is there
            self.close()

    def counts(self) -> list[RejectionCount]:
        return [
            RejectionCount(plane, reason, count, self._last[(plane, reason)])
            for (plane, reason), count in sorted(self._counts.items())
        ]

    def close(self) -> None:
        """Log every window still open."""
        for key in list(self._windows):
            self._flush(key)

    def _flush(self, key: tuple[str, str]) -> None:
        window = self._windows.pop(key, None)
        if window is None:
            return
        if window.timer is not None:
            window.timer.cancel()
        plane, source = key
        total = sum(window.reasons.values())
        reasons = ", ".join(f"{r} ({n})" for r, n in window.reasons.most_common())
        log.info(
            "rejected %d connection%s from %s to %s in the last %g s: %s",
            total,
            "" if total == 1 else "s",
            source,
            _WHERE.get(plane, plane),
            self.interval,
            reasons,
        )
