"""What a node learns of its network's peers, and what it forgets (issue #12, defect 7).

Whole nodes in one process over the real control plane (HTTPS on 127.0.0.1 with
the network's certificates; the swarm is tests/fakes.py's): a member announcing
ports nobody listens on must not put them in anyone's peer list, a peer learned
from another is kept only once it answered, and a learned peer that stopped
answering is neither waited for nor, once aged out, asked at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sovnet.core.address import PeerAddress
from sovnet.daemon.node import Node
from sovnet.net.control import ControlPlane
from sovnet.net.control_client import PeerClient
from sovnet.store.networkfiles import NetworkFiles
from tests.test_node import Cluster, publish_model


class TlsCluster(Cluster):
    """In-process nodes whose control planes are the real HTTPS ones."""

    def control(self) -> ControlPlane | None:
        return None


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[TlsCluster]:
    made = TlsCluster(tmp_path)
    try:
        yield made
    finally:
        for node in list(made.nodes):
            await made.stop(node)


def control(node: Node) -> PeerAddress:
    return PeerAddress("127.0.0.1", node.control_port)


class Tarpit:
    """A TCP port that accepts connections and never says anything: a peer that is
    down behind a firewall that drops, the slowest kind of dead."""

    def __init__(self) -> None:
        self.accepted = 0
        self.open: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> PeerAddress:
        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self.open.append(writer)

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        return PeerAddress("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self.open:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def dead_port() -> int:
    """A port of 127.0.0.1 nobody listens on (refused at once)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def until(condition: object, timeout: float = 20.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_ports_a_member_announces_reach_no_peer_list_unless_they_answer(
    cluster: TlsCluster, tmp_path: Path
) -> None:
    a_state = cluster.prepare("a")
    cid = publish_model(a_state, tmp_path)
    a = await cluster.start(a_state)
    b = await cluster.start(cluster.prepare("b", owner=a_state, trusts=a_state), control(a))
    mallory = cluster.prepare("mallory", owner=a_state)  # a member, and hostile
    tarpit = Tarpit()
    try:
        junk = [PeerAddress("127.0.0.1", 2), await tarpit.start()]
        junk += [PeerAddress("127.0.0.1", dead_port()) for _ in range(30)]
        async with PeerClient(NetworkFiles(mallory).tls_files(), timeout=5) as client:
            for address in junk:
                await client.announce(control(a), cid, swarm_port=1, control_port=address.port)
            # b fetches: it announces itself to a, and a hears of it the same way.
            await b.fetch(cid, [], lambda event: None)
            # a checks what it was told, in the background: b answers, the rest not.
            await until(lambda: control(b) in a.book.addresses())
            for address in junk:
                assert address not in a.book.addresses(), address
            await until(lambda: a.book.pending_candidates() == 0)
            listed = await client.peers(control(a))
        for address in junk:
            assert address not in a.book.addresses(), address
            assert address not in listed, address
        assert control(b) in listed
        assert {p.address: p.state for p in a.peers()}[str(control(b))] == "verified"
    finally:
        await tarpit.close()


async def test_a_dead_learned_peer_is_not_waited_for_and_once_aged_out_not_asked(
    cluster: TlsCluster, tmp_path: Path
) -> None:
    cluster.peer_timeout = 60.0  # a fetch that waited for a dead peer would take a minute
    a_state = cluster.prepare("a")
    first = publish_model(a_state, tmp_path)
    a = await cluster.start(a_state)
    c = await cluster.start(cluster.prepare("c", owner=a_state, trusts=a_state), control(a))
    await c.fetch(first, [], lambda event: None)  # c announces itself to a
    await until(lambda: control(c) in a.book.addresses())
    b = await cluster.start(cluster.prepare("b", owner=a_state, trusts=a_state), control(a))
    await b.fetch(first, [], lambda event: None)  # b hears of c from a, and checks it
    await until(lambda: control(c) in b.book.addresses())
    assert {p.address: p.source for p in b.peers()}[str(control(c))] == "learned"

    # c goes away, and where it was, connections are held and never answered.
    c_address = control(c)
    await cluster.stop(c)
    tarpit = Tarpit()
    try:
        tarpit._server = await asyncio.start_server(
            lambda r, w: _hold(tarpit, w), "127.0.0.1", c_address.port, reuse_address=True
        )
        second = publish_model(a_state, tmp_path, size=1024 * 1024)
        await a.seeder.seed(second)
        loop = asyncio.get_running_loop()
        started = loop.time()
        result = await asyncio.wait_for(b.fetch(second, [], lambda event: None), 50)
        assert result.cid == str(second)
        # Not waited for: the fetch ended long before c's 60 s could have run out.
        assert loop.time() - started < 30
        assert tarpit.accepted >= 1  # c was asked (it was not known to be dead yet)
        states = {p.address: p.state for p in b.peers()}
        assert states.get(str(c_address)) in ("failing", None)
    finally:
        await tarpit.close()

    # Now nobody listens there: checked again in the background, c is forgotten
    # after a few failures, and no longer listed to others nor asked. (a, which
    # has not asked c since, would name it again: as if a had noticed too.)
    a.book.remove(c_address)
    await until(lambda: c_address not in b.book.addresses(), timeout=30)
    async with PeerClient(NetworkFiles(a_state).tls_files(), timeout=5) as client:
        assert c_address not in await client.peers(control(b))
    third = publish_model(a_state, tmp_path, size=512 * 1024)
    await a.seeder.seed(third)
    again = Tarpit()
    try:
        again._server = await asyncio.start_server(
            lambda r, w: _hold(again, w), "127.0.0.1", c_address.port, reuse_address=True
        )
        await b.fetch(third, [], lambda event: None)
        assert again.accepted == 0  # aged out: not asked, not even checked
    finally:
        await again.close()


async def _hold(tarpit: Tarpit, writer: asyncio.StreamWriter) -> None:
    tarpit.accepted += 1
    tarpit.open.append(writer)


def test_the_candidate_queue_is_bounded_and_failures_age_learned_peers_out(
    tmp_path: Path,
) -> None:
    from sovnet.net import peerbook
    from sovnet.net.peerbook import FAILING, VERIFIED, PeerBook

    now = [0.0]
    configured = PeerAddress("192.0.2.1", 6880)
    book = PeerBook(tmp_path / "peers.json", (configured,), clock=lambda: now[0])
    # One host announcing every port fills no more than its share of the queue.
    queued = [book.learn(PeerAddress("192.0.2.66", port)) for port in range(1000, 1100)]
    assert sum(queued) == peerbook.MAX_CANDIDATES_PER_HOST
    for host in range(300):
        book.learn(PeerAddress(f"198.51.{host // 200}.{host % 200 + 1}", 6880))
    assert book.pending_candidates() == peerbook.MAX_CANDIDATES
    assert book.addresses() == [configured]  # candidates are not the book

    [checked, dead] = book.take_candidates(2)
    book.answered(checked, "alice")
    book.failed(dead)  # a candidate that failed its check is dropped
    assert book.addresses() == [configured, checked]
    assert book.state(checked) == VERIFIED and book.listed() == [configured, checked]

    for _ in range(peerbook.FORGET_AFTER_FAILURES):
        assert checked in book.addresses()
        book.failed(checked)
        book.failed(configured)
        assert checked not in book.listed() and book.failing()[0] == configured
        now[0] += 1
    assert checked not in book.addresses()  # learned: forgotten
    assert book.state(configured) == FAILING and configured in book.addresses()  # kept
    assert book.due_for_retry() == []  # asked again later, ever less often
    now[0] += peerbook.RETRY_MAX
    assert book.due_for_retry() == [configured]
    book.answered(configured)
    assert book.live() == [configured] and book.failing() == []
