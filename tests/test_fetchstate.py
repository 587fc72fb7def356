"""The download's state machine (daemon/fetchstate.py): statuses and events in,
actions out, with the time as an argument. No swarm, no sleeps."""

from __future__ import annotations

from sovnet.daemon.fetchstate import (
    Fail,
    FetchState,
    Finish,
    Refresh,
    ReportProgress,
    SaveResume,
    Timings,
)
from sovnet.net.swarm import Finished, HashFailed, PeerBanned, TorrentFailed, TransferStatus

MIB = 1024 * 1024
TIMINGS = Timings(stall_timeout=30.0, refresh_interval=5.0, resume_interval=5.0)
HASH = b"\x01" * 32


def status(done: int, wanted: int = 100 * MIB, state: str = "downloading") -> TransferStatus:
    return TransferStatus(HASH, state, wanted, done, 0, 0, 1, 1, done, 0, 0)


def fresh(wanted: int = 100 * MIB) -> FetchState:
    return FetchState("bcid", wanted, TIMINGS, started=1000.0)


def kinds(actions: list[object]) -> list[type]:
    return [type(a) for a in actions]


def test_progress_is_reported_at_once_then_every_half_second() -> None:
    state = fresh()
    first = state.on_status(status(0), 1000.0)
    assert kinds(first) == [ReportProgress]
    assert state.on_status(status(MIB), 1000.2) == []
    [report] = state.on_status(status(2 * MIB), 1000.5)
    assert isinstance(report, ReportProgress)
    assert (report.done, report.total, report.peers) == (2 * MIB, 100 * MIB, 1)


def test_it_finishes_when_every_wanted_byte_is_there_or_the_swarm_says_so() -> None:
    by_status = fresh()
    assert Finish() in by_status.on_status(status(100 * MIB, state="finished"), 1001.0)
    assert by_status.ended
    assert by_status.on_status(status(100 * MIB, state="finished"), 1002.0) == []
    by_event = fresh()
    assert by_event.on_event(Finished(HASH)) == [Finish()]
    assert by_event.on_status(status(5), 1001.0) == []


def test_a_torrent_failure_fails_the_fetch_with_the_swarm_s_message() -> None:
    state = fresh()
    [fail] = state.on_event(TorrentFailed(HASH, "disk full"))
    assert fail == Fail("the transfer of bcid failed: disk full", None)
    assert state.ended


def test_no_progress_for_the_stall_timeout_fails_and_says_what_was_seen() -> None:
    state = fresh()
    state.swarm_peers = 1
    state.on_status(status(10 * MIB), 1001.0)
    assert not any(isinstance(a, Fail) for a in state.on_status(status(10 * MIB), 1030.9))
    state.on_event(HashFailed(HASH, 3))
    state.on_event(PeerBanned(HASH, "127.0.0.1:7000", "corrupt"))
    actions = state.on_status(status(10 * MIB), 1031.1)
    [fail] = [a for a in actions if isinstance(a, Fail)]
    assert fail.message.startswith("the transfer of bcid made no progress for 30 s (10485760 of")
    assert "1 piece(s) failed their hash check" in fail.message
    assert "banned for corrupt data: 127.0.0.1:7000" in fail.message
    assert fail.hint is not None and "sent corrupt data" in fail.hint


def test_bytes_that_fall_and_rise_again_are_not_progress() -> None:
    state = fresh()
    state.on_status(status(20 * MIB), 1000.0)
    state.on_status(status(12 * MIB), 1010.0)  # pieces failed their check: thrown away
    state.on_status(status(20 * MIB), 1020.0)  # the same again: no new bytes
    assert any(isinstance(a, Fail) for a in state.on_status(status(20 * MIB), 1031.0))


def test_nobody_reachable_is_said_when_no_swarm_peer_was_tried() -> None:
    state = fresh()
    [fail] = [a for a in state.on_status(None, 1031.0) if isinstance(a, Fail)]
    assert "no peer in the swarm could be reached" in fail.message
    assert fail.hint is not None and "`sovnet peers ls`" in fail.hint


def test_resume_data_every_twentieth_and_by_time_only_once_worth_it() -> None:
    state = fresh(wanted=1000 * MIB)
    assert SaveResume() not in state.on_status(status(10 * MIB, 1000 * MIB), 1001.0)
    assert SaveResume() in state.on_status(status(50 * MIB, 1000 * MIB), 1002.0)
    state.resume_asked(1002.0)
    assert state.resume_asked_at == 50 * MIB
    # 5 s later, few new bytes: not worth rewriting the hashes of all that is done
    assert SaveResume() not in state.on_status(status(51 * MIB, 1000 * MIB), 1007.5)


def test_peers_are_looked_for_every_refresh_interval() -> None:
    state = fresh()
    assert Refresh() not in state.on_status(status(1), 1004.9)
    assert Refresh() in state.on_status(status(2), 1005.0)
    assert Refresh() not in state.on_status(status(3), 1009.0)
    assert Refresh() in state.on_status(status(4), 1010.0)
