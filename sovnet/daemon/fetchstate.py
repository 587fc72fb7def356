"""A download's decisions as a state machine, without I/O: what to do next, given
what the swarm reported and the time.

The fetcher (fetcher.py) feeds a :class:`FetchState` the swarm's events
(:meth:`~FetchState.on_event`) and, at the times it asks for
(:meth:`~FetchState.next_wakeup`), the torrent's status
(:meth:`~FetchState.on_status`); each call returns the actions to carry out, in
order. Nothing here awaits, sleeps or reads a clock, so every rule is tested with
plain values (tests/test_fetchstate.py), as fetchplan.py's are.

Rules: progress is reported every ``progress_interval`` seconds; resume data is
asked for when :func:`~sovnet.daemon.fetchplan.resume_due` says so; more peers are
looked for every ``refresh_interval`` seconds; the download fails when the swarm
reports the torrent failed, or when it made no progress for ``stall_timeout``
seconds (the message says what was seen: hash failures, bans, nobody reachable);
it is finished once every wanted byte is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sovnet.daemon.fetchplan import Progress, resume_due
from sovnet.net.swarm import (
    Finished,
    HashFailed,
    PeerBanned,
    SwarmEvent,
    TorrentFailed,
    TransferStatus,
)

PROGRESS_INTERVAL = 0.5  # seconds between a fetch's progress events
# How long the fetcher may sleep between looks at the status: often enough to ask
# for resume data every twentieth of a fast download.
POLL_INTERVAL = 0.1


@dataclass(frozen=True)
class Timings:
    stall_timeout: float
    refresh_interval: float
    resume_interval: float
    peer_timeout: float = 10.0  # for one request to a peer, or resolving its name
    progress_interval: float = PROGRESS_INTERVAL


@dataclass(frozen=True)
class ReportProgress:
    done: int
    total: int
    rate: int
    eta: float | None
    peers: int
    hash_failures: int


@dataclass(frozen=True)
class SaveResume:
    """Ask the swarm for resume data (it arrives later as a ResumeSaved event)."""


@dataclass(frozen=True)
class Refresh:
    """Look for more holders and swarm members, and connect to the new ones."""


@dataclass(frozen=True)
class Fail:
    message: str
    hint: str | None
    disk_full: bool = False  # the fetcher says how much room it needs


@dataclass(frozen=True)
class Finish:
    """Every wanted byte is here and passed the swarm's hash checks."""


Action = ReportProgress | SaveResume | Refresh | Fail | Finish


@dataclass
class FetchState:
    """One download, from the moment it joins the swarm to the last byte."""

    label: str  # names the download in messages: its CID
    wanted: int  # bytes to download
    timings: Timings
    started: float
    progress: Progress = field(init=False)
    hash_failures: int = 0
    banned: list[str] = field(default_factory=list)
    swarm_peers: int = 0  # swarm addresses tried so far
    resume_asked_at: int = 0  # bytes done when resume data was last asked for
    _next_report: float = field(init=False)
    _next_resume: float = field(init=False)
    _next_refresh: float = field(init=False)
    _ended: bool = False

    def __post_init__(self) -> None:
        self.progress = Progress(self.wanted, self.timings.stall_timeout, self.started)
        self._next_report = self.started
        self._next_resume = self.started + self.timings.resume_interval
        self._next_refresh = self.started + self.timings.refresh_interval

    @property
    def ended(self) -> bool:
        return self._ended

    def next_wakeup(self, now: float) -> float:
        """When the fetcher should next call :meth:`on_status`, at the latest."""
        return now + POLL_INTERVAL

    def on_event(self, event: SwarmEvent) -> list[Action]:
        """A swarm event about this download."""
        if self._ended:
            return []
        if isinstance(event, Finished):
            return self._finish()
        if isinstance(event, TorrentFailed):
            self._ended = True
            message = f"the transfer of {self.label} failed: {event.message}"
            return [Fail(message, None, disk_full=event.disk_full)]
        if isinstance(event, HashFailed):
            self.hash_failures += 1
        elif isinstance(event, PeerBanned):
            self.banned.append(event.peer)
        return []

    def on_status(self, status: TransferStatus | None, now: float) -> list[Action]:
        """The torrent's latest status (None: the swarm has none yet), at ``now``."""
        if self._ended:
            return []
        actions: list[Action] = []
        if status is not None:
            self.progress.update(status.wanted_done, now)
            if now >= self._next_report:
                self._next_report = now + self.timings.progress_interval
                actions.append(self.report(status.peers))
            if status.wanted_done >= status.wanted > 0 and status.state in ("finished", "seeding"):
                return [*actions, *self._finish()]
        if self.progress.stalled(now):
            self._ended = True
            return [*actions, Fail(self._stall_message(), self._stall_hint())]
        if resume_due(
            done=self.progress.done,
            asked_at=self.resume_asked_at,
            total=self.wanted,
            now=now,
            next_time=self._next_resume,
        ):
            actions.append(SaveResume())
        if now >= self._next_refresh:
            self._next_refresh = now + self.timings.refresh_interval
            actions.append(Refresh())
        return actions

    def resume_asked(self, now: float) -> None:
        """The swarm took a SaveResume request (it may refuse while one is on its way)."""
        self._next_resume = now + self.timings.resume_interval
        self.resume_asked_at = self.progress.done

    def report(self, peers: int) -> ReportProgress:
        return ReportProgress(
            done=self.progress.done,
            total=self.progress.total,
            rate=round(self.progress.rate()),
            eta=self.progress.eta(),
            peers=peers,
            hash_failures=self.hash_failures,
        )

    def _finish(self) -> list[Action]:
        self._ended = True
        return [Finish()]

    def _stall_message(self) -> str:
        parts = [
            f"the transfer of {self.label} made no progress for "
            f"{self.timings.stall_timeout:.0f} s ({self.progress.done} of "
            f"{self.progress.total} bytes)"
        ]
        if self.hash_failures:
            parts.append(f"{self.hash_failures} piece(s) failed their hash check")
        if self.banned:
            parts.append("banned for corrupt data: " + ", ".join(sorted(set(self.banned))))
        if not self.swarm_peers:
            parts.append("no peer in the swarm could be reached")
        return "; ".join(parts)

    def _stall_hint(self) -> str:
        if self.hash_failures:
            return "the peers that hold it sent corrupt data; ask an honest holder to seed it"
        return "check that a node holding it is running and reachable (`sovnet peers ls`)"
