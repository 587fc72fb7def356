"""Payload bytes by peer class: each torrent's exact bytes shared out among the
classes of its peers (net/peerbytes.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sovnet.net.peerbytes import GLOBAL, LOCAL, Connection, PeerBytes
from sovnet.net.swarm import LOOPBACK_NETWORKS

TORRENT = b"t" * 32
OTHER = b"o" * 32
HOSTS = ["127.0.0.1", "::1", "10.1.2.3", "192.0.2.7", "2001:db8::1"]


def test_addresses_fall_in_the_local_class_by_the_networks_named_local() -> None:
    tally = PeerBytes((*LOOPBACK_NETWORKS, "10.0.0.0/8"))
    for host in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1", "10.1.2.3"):
        assert tally.peer_class(host) == LOCAL, host
    for host in ("192.0.2.7", "2001:db8::1", "11.0.0.1", "not an address", ""):
        assert tally.peer_class(host) == GLOBAL, host


def test_a_transfer_no_sample_saw_goes_to_the_class_of_the_peers_that_connected() -> None:
    tally = PeerBytes(LOOPBACK_NETWORKS)
    tally.connected(TORRENT, "127.0.0.1")
    tally.update({TORRENT: (8 << 20, 0)})  # a fetch over before the first sample
    assert tally.totals() == {LOCAL: (8 << 20, 0), GLOBAL: (0, 0)}


def test_a_torrent_with_peers_of_both_classes_shares_by_what_each_moved() -> None:
    tally = PeerBytes(LOOPBACK_NETWORKS)
    tally.sample(
        [
            Connection(TORRENT, "127.0.0.1", 7000, 0, 300),
            Connection(TORRENT, "192.0.2.7", 7001, 0, 100),
        ],
        [TORRENT],
    )
    tally.update({TORRENT: (0, 800)})  # exact: more than sampled (a peer left meanwhile)
    assert tally.totals() == {LOCAL: (0, 600), GLOBAL: (0, 200)}


def test_a_torrent_left_out_of_a_sample_keeps_its_connections_for_the_next() -> None:
    tally = PeerBytes(LOOPBACK_NETWORKS)
    tally.sample([Connection(TORRENT, "192.0.2.7", 7000, 100, 0)], [TORRENT])
    tally.sample([Connection(OTHER, "127.0.0.1", 7001, 5, 5)], [OTHER])  # TORRENT not asked
    tally.sample([Connection(TORRENT, "192.0.2.7", 7000, 150, 0)], [TORRENT])
    tally.update({TORRENT: (150, 0), OTHER: (5, 5)})
    assert tally.totals() == {GLOBAL: (150, 0), LOCAL: (5, 5)}  # not 250: counted once


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[list[Connection], dict[bytes, tuple[int, int]]]]:
    """Rounds of a sample of arbitrary connections (reopened, repeated, nonsense) and
    each torrent's exact totals, which only grow."""
    exact = {TORRENT: (0, 0), OTHER: (0, 0)}
    rounds = []
    for _ in range(draw(st.integers(1, 6))):
        connections = draw(
            st.lists(
                st.builds(
                    Connection,
                    st.sampled_from([TORRENT, OTHER]),
                    st.sampled_from(HOSTS),
                    st.integers(6881, 6883),
                    st.integers(-(10**9), 10**12),
                    st.integers(-(10**9), 10**12),
                ),
                max_size=6,
            )
        )
        exact = {
            k: (d + draw(st.integers(0, 10**9)), u + draw(st.integers(0, 10**9)))
            for k, (d, u) in exact.items()
        }
        rounds.append((connections, dict(exact)))
    return rounds


@given(histories(), st.lists(st.sampled_from(HOSTS), max_size=3))
def test_the_classes_add_up_to_the_exact_totals_and_never_go_back(
    rounds: list[tuple[list[Connection], dict[bytes, tuple[int, int]]]], connected: list[str]
) -> None:
    tally = PeerBytes(LOOPBACK_NETWORKS)
    for host in connected:
        tally.connected(TORRENT, host)
    before = tally.totals()
    for connections, exact in rounds:
        tally.sample(connections, [TORRENT, OTHER])
        tally.update(exact)
        now = tally.totals()
        for name in (LOCAL, GLOBAL):
            assert now[name][0] >= before[name][0] and now[name][1] >= before[name][1]
        for way in (0, 1):
            assert sum(now[name][way] for name in (LOCAL, GLOBAL)) == sum(
                e[way] for e in exact.values()
            )
        before = now


def test_what_was_sampled_before_the_exact_count_caught_up_still_weighs() -> None:
    tally = PeerBytes(LOOPBACK_NETWORKS)
    tally.sample(
        [
            Connection(TORRENT, "127.0.0.1", 7000, 0, 300),
            Connection(TORRENT, "192.0.2.7", 7001, 0, 100),
        ],
        [TORRENT],
    )
    tally.update({TORRENT: (0, 0)})  # libtorrent has not added them up yet
    tally.update({TORRENT: (0, 800)})
    assert tally.totals() == {LOCAL: (0, 600), GLOBAL: (0, 200)}
