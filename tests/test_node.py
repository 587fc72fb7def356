"""Whole nodes in one process, over the in-memory swarm and control plane of
tests/fakes.py: a fetch that succeeds, one from a corrupt peer, one that stalls,
one cancelled by `rm`, and one that continues after a restart, each in well under
a second. The same behaviours over real libtorrent, TLS and processes are in
tests/e2e/."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sovnet.api.messages import FetchProgress, FetchVerifying, ManifestAccepted
from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.core.config import DaemonConfig
from sovnet.daemon.node import Node
from sovnet.daemon.supervisor import Supervisor
from sovnet.errors import FetchCancelledError, NotFoundError, TransferError, TrustError
from sovnet.net.control import ControlPlane
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.networkfiles import NetworkFiles
from sovnet.store.partial import PartialDownload
from sovnet.store.publish import publish
from sovnet.store.store import Store
from sovnet.trust.keys import TrustedKey
from tests.fakes import FakeSwarm, LoopbackControlPlane, Network

NOW = datetime.datetime.now(datetime.UTC)
LOOPBACK = PeerAddress("127.0.0.1", 0)


@dataclass
class Cluster:
    root: Path
    network: Network = field(default_factory=Network)
    nodes: list[Node] = field(default_factory=list)
    stall_timeout: float = 5.0
    peer_timeout: float = 10.0
    active_seeds: int = 1000

    def state(self, name: str) -> Path:
        return self.root / name

    def prepare(self, name: str, *, owner: Path | None = None, trusts: Path | None = None) -> Path:
        """A node's keys and network files, as `key gen` and `network create/join` make them."""
        state = self.state(name)
        NodeFiles(state).generate_key()
        if owner is None:
            NetworkFiles(state).create("lab", name)
        else:
            request = NetworkFiles(state).request(name)
            NetworkFiles(state).join(NetworkFiles(owner).invite(request=request))
        if trusts is not None:
            key_id = NodeFiles(trusts).load_key().public_key.key_id
            NodeFiles(state).update_trust(lambda t: t.with_key(TrustedKey(key_id, "publisher")))
        return state

    async def start(self, state: Path, *peers: PeerAddress) -> Node:
        config = DaemonConfig(
            state_dir=state,
            socket=state / "api.sock",
            swarm_listen=LOOPBACK,
            control_listen=LOOPBACK,
            peers=peers,
            stall_timeout=self.stall_timeout,
            peer_timeout=self.peer_timeout,
            refresh_interval=0.2,
            resume_interval=0.2,
            active_seeds=self.active_seeds,
        )
        node = await Node.start(config, FakeSwarm(self.network), Supervisor(), self.control())
        self.nodes.append(node)
        return node

    def control(self) -> ControlPlane | None:
        """The nodes' control plane: in memory (None: the real HTTPS one)."""
        return LoopbackControlPlane(self.network)

    async def stop(self, node: Node) -> None:
        self.nodes.remove(node)
        await node.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path)
    try:
        yield cluster
    finally:
        for node in list(cluster.nodes):
            await cluster.stop(node)


def control(node: Node) -> PeerAddress:
    return PeerAddress("127.0.0.1", node.control_port)


def publish_model(
    state: Path, tmp_path: Path, size: int = 3 * 1024 * 1024, version: str | None = None
) -> CID:
    model = tmp_path / "model"
    model.mkdir(parents=True, exist_ok=True)
    (model / "weights.safetensors").write_bytes(_safetensors(size))
    (model / "config.json").write_text('{"model_type": "llama"}\n')
    key = NodeFiles(state).load_key()
    store = Store(state).init()
    return publish(store, key, model, name="acme/model", version=version, copy=True).cid


def _safetensors(size: int) -> bytes:
    import json
    import struct

    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    padded = header.encode() + b" " * (-len(header) % 8)
    return struct.pack("<Q", len(padded)) + padded + os.urandom(size)


async def two_nodes(cluster: Cluster, tmp_path: Path) -> tuple[Node, Node, CID]:
    a_state = cluster.prepare("a")
    b_state = cluster.prepare("b", owner=a_state, trusts=a_state)
    cid = publish_model(a_state, tmp_path)
    a = await cluster.start(a_state)
    b = await cluster.start(b_state, control(a))
    return a, b, cid


async def test_a_fetch_downloads_verifies_commits_and_seeds(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b, cid = await two_nodes(cluster, tmp_path)
    events: list[object] = []
    result = await b.fetch(cid, [], events.append)
    assert result.cid == str(cid) and not result.already_here
    assert result.downloaded == result.size
    assert isinstance(events[0], ManifestAccepted) and events[0].signers[0].trusted_as
    *_, last_progress, verifying = events
    assert isinstance(last_progress, FetchProgress)
    assert last_progress.done == last_progress.total
    assert verifying == FetchVerifying(files=2, size=result.size)
    model = Path(result.path)
    for entry in Store(a.store.root).open(cid, NodeFiles(a.store.root).load_trust()).manifest.files:
        assert (model / entry.path).read_bytes() == (
            a.store.model_dir(cid) / entry.path
        ).read_bytes()
    assert b.seeding()[str(cid)] is not None
    assert [f.cid for f in b.status().recent_fetches] == [str(cid)]
    again = await b.fetch(cid, [], events.append)
    assert again.already_here and again.downloaded == 0


async def test_a_manifest_nobody_trusted_signed_is_refused_before_any_download(
    cluster: Cluster, tmp_path: Path
) -> None:
    a_state = cluster.prepare("a")
    b_state = cluster.prepare("b", owner=a_state)  # trusts nobody
    cid = publish_model(a_state, tmp_path)
    a = await cluster.start(a_state)
    b = await cluster.start(b_state, control(a))
    with pytest.raises(TrustError) as refused:
        await b.fetch(cid, [], lambda event: None)
    assert refused.value.exit_code == 6
    assert "no valid signature from a trusted key" in refused.value.message
    assert str(NodeFiles(a_state).load_key().public_key.key_id) in refused.value.message
    assert refused.value.hint is not None and "sovnet trust add" in refused.value.hint
    # Nothing joined a swarm or landed anywhere.
    assert list(b.store.partial.iterdir()) == []
    assert not b.store.has(cid)
    assert a.status().uploaded == 0 and not b.swarm.statuses()


async def test_a_cid_nobody_has_fails_at_once(cluster: Cluster, tmp_path: Path) -> None:
    _, b, _ = await two_nodes(cluster, tmp_path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(NotFoundError) as missing:
        await b.fetch(CID.of(b"nothing"), [], lambda event: None)
    assert missing.value.exit_code == 3
    assert "was not found on any of 1 peer(s)" in missing.value.message
    assert loop.time() - started < 15
    alone = await cluster.start(cluster.prepare("alone"))  # a network of its own, no peers
    with pytest.raises(NotFoundError) as nobody:
        await alone.fetch(CID.of(b"nothing"), [], lambda event: None)
    assert nobody.value.hint is not None and "sovnet peers add" in nobody.value.hint


async def test_only_a_corrupt_seeder_means_hash_failures_a_ban_and_a_stall(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.stall_timeout = 0.5
    a, b, cid = await two_nodes(cluster, tmp_path)
    cluster.network.corrupt.add(PeerAddress("127.0.0.1", a.swarm.port))
    with pytest.raises(TransferError) as caught:
        await b.fetch(cid, [], lambda event: None)
    assert "made no progress" in caught.value.message
    assert "failed their hash check" in caught.value.message
    assert f"banned for corrupt data: 127.0.0.1:{a.swarm.port}" in caught.value.message
    status = b.status()
    assert status.hash_failures >= 3 and status.banned_peers[0].cid == str(cid)
    assert not b.store.has(cid)
    failed = b.store.partial / str(cid) / "failed"
    assert "made no progress" in failed.read_text()


async def test_with_an_honest_seeder_too_the_fetch_completes(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, _, cid = await two_nodes(cluster, tmp_path)
    c_state = cluster.prepare("c", owner=a.store.root, trusts=a.store.root)
    c = await cluster.start(c_state, control(a))
    await c.fetch(cid, [], lambda event: None)  # c holds it, honestly, too
    d_state = cluster.prepare("d", owner=a.store.root, trusts=a.store.root)
    cluster.network.corrupt.add(PeerAddress("127.0.0.1", a.swarm.port))
    d = await cluster.start(d_state, control(a), control(c))
    result = await d.fetch(cid, [], lambda event: None)
    assert result.cid == str(cid)
    assert d.status().banned_peers[0].peer == f"127.0.0.1:{a.swarm.port}"


async def test_a_stalled_fetch_fails_and_the_next_attempt_continues(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.stall_timeout = 0.5
    cluster.network.block_delay = 0.02
    a, b, cid = await two_nodes(cluster, tmp_path)
    fetch = asyncio.create_task(b.fetch(cid, [], lambda event: None))
    await _until(lambda: _done(b) > 0)
    await cluster.stop(a)  # the only holder goes away
    with pytest.raises(TransferError, match="made no progress"):
        await fetch
    a = await cluster.start(a.store.root)
    b.book.add(control(a))
    cluster.network.block_delay = 0.0
    result = await b.fetch(cid, [], lambda event: None)
    assert result.downloaded < result.size  # what had arrived was not downloaded again


async def test_rm_cancels_a_fetch_and_removes_what_arrived(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.network.block_delay = 0.02
    _, b, cid = await two_nodes(cluster, tmp_path)
    fetch = asyncio.create_task(b.fetch(cid, [], lambda event: None))
    await _until(lambda: _done(b) > 0)
    removed = await b.remove(cid)
    assert removed.removed == str(cid)
    with pytest.raises(FetchCancelledError, match="cancelled by `sovnet rm`"):
        await fetch
    assert not (b.store.partial / str(cid)).exists()
    assert b.status().fetches == ()
    assert not any(s.state == "downloading" for s in b.swarm.statuses().values())


async def test_a_restarted_node_continues_its_download(cluster: Cluster, tmp_path: Path) -> None:
    cluster.network.block_delay = 0.01
    a, b, cid = await two_nodes(cluster, tmp_path)
    fetch = asyncio.create_task(b.fetch(cid, [], lambda event: None))
    await _until(lambda: _done(b) > 1024 * 1024)
    await cluster.stop(b)  # as on SIGTERM: resume data saved
    with pytest.raises(asyncio.CancelledError):
        await fetch
    assert (b.store.partial / str(cid) / "resume").is_file()
    cluster.network.block_delay = 0.0
    b = await cluster.start(b.store.root, control(a))  # resumes by itself
    await _until(lambda: b.status().recent_fetches, timeout=10)  # committed and seeded
    [ended] = b.status().recent_fetches
    assert b.store.has(cid)
    assert 0 < ended.downloaded < ended.size


def _done(node: Node) -> int:
    return sum(f.done or 0 for f in node.status().fetches)


async def _until(condition: object, timeout: float = 5.0) -> None:
    assert callable(condition)
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def test_a_commit_cut_short_by_a_crash_completes_without_downloading_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    # The commit moves the verified files into blobs/, then records the model. A
    # crash in between (kill -9) leaves blobs no committed model references and the
    # download's manifest in partial/: the store's repair used to delete those blobs,
    # and the resumed fetch downloaded the whole model again.
    a, b, cid = await two_nodes(cluster, tmp_path)
    await b.fetch(cid, [], lambda event: None)
    state = b.store.root
    raw, bundle = b.store.manifest_bytes(cid), b.store.bundle(cid)
    blobs = sorted(p.name for p in (state / "blobs").iterdir())
    await cluster.stop(b)
    for path in (b.store.manifest_path(cid), b.store.bundle_path(cid)):
        path.unlink()
    shutil.rmtree(b.store.model_dir(cid))  # as if the crash came before the commit's end
    PartialDownload(Store(state), cid).keep_accepted(raw, bundle)
    b = await cluster.start(state, control(a))
    await _until(lambda: b.status().recent_fetches, timeout=10)
    [ended] = b.status().recent_fetches
    assert ended.downloaded == 0
    assert b.store.has(cid) and sorted(p.name for p in (state / "blobs").iterdir()) == blobs


# The commit's steps that change the disk: each os call below is one. A child
# process dies (os._exit, as kill -9: no clean-up runs) at the Nth of them. A
# fresh interpreter, not a fork: this test process has threads (a fork's child
# can inherit a lock some thread held, and wait on it for ever).
_COMMIT_DYING = """
import os, sys
from pathlib import Path
from sovnet.core import torrent
from sovnet.core.cid import CID
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.networkfiles import NetworkFiles
from sovnet.store.partial import PartialDownload
from sovnet.store.store import Store

state, cid, step = Path(sys.argv[1]), CID.parse(sys.argv[2]), int(sys.argv[3])
count = 0

def dying(real):
    def call(*args, **kwargs):
        global count
        count += 1
        if count == step:
            os._exit(9)
        return real(*args, **kwargs)
    return call

for name in ("replace", "rename", "link", "unlink", "rmdir", "mkdir", "chmod"):
    setattr(os, name, dying(getattr(os, name)))
partial = PartialDownload(Store(state), cid)
opened, bundle = partial.accepted(NodeFiles(state).load_trust())
spec = torrent.derive(cid, opened.manifest, NetworkFiles(state).ca_pem())
verified = partial.verify(spec.files, (), opened.manifest.piece_size, {})
partial.commit(opened, bundle, verified)
"""


def _commit_dying_at(state: Path, cid: CID, step: int) -> bool:
    """Verify and commit the download in ``state``'s partial/ in a child process that
    dies at its ``step``-th change to the disk; whether it died (False: the commit
    had fewer steps and finished)."""
    child = subprocess.run(
        [sys.executable, "-c", _COMMIT_DYING, str(state), str(cid), str(step)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode in (0, 9), child.stderr
    return child.returncode == 9


@pytest.mark.parametrize("step", range(1, 40, 2))
async def test_kill_9_at_any_step_of_the_commit_loses_no_download(
    cluster: Cluster, tmp_path: Path, step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, cid = await two_nodes(cluster, tmp_path)
    state = b.store.root
    # The fetch runs to the moment its commit starts, and stops there: the disk holds
    # what a fetch leaves for its commit (verified files, their resume data).
    reached, release = threading.Event(), threading.Event()

    def stop_before(*args: object) -> None:
        reached.set()
        release.wait(30)
        raise RuntimeError("the node stopped before its commit")

    monkeypatch.setattr(PartialDownload, "commit", stop_before)
    fetch = asyncio.create_task(b.fetch(cid, [], lambda event: None))
    await _until(reached.is_set, timeout=10)
    await cluster.stop(b)
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await fetch
    monkeypatch.undo()
    opened = PartialDownload(Store(state), cid).accepted(NodeFiles(state).load_trust())
    assert opened is not None
    manifest = opened[0].manifest
    files = {e.blake3: (a.store.model_dir(cid) / e.path).read_bytes() for e in manifest.files}

    died = _commit_dying_at(state, cid, step)

    b = await cluster.start(state, control(a))
    await _until(lambda: b.store.has(cid) and not b.status().fetches, timeout=10)
    downloaded = sum(f.downloaded for f in b.status().recent_fetches)
    assert downloaded <= manifest.total_size // 10, (step, died, downloaded)
    for entry in manifest.files:
        assert (b.store.model_dir(cid) / entry.path).read_bytes() == files[entry.blake3]
    assert b.seeder.is_seeding(cid)
    assert not (b.store.partial / str(cid)).exists()


async def test_over_active_seeds_the_least_recently_wanted_idle_torrent_leaves_the_swarm(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sovnet.daemon.seeder.STAY", 0.0)  # idle at once, not in 2 minutes
    monkeypatch.setattr("sovnet.daemon.seeder.JOIN_GRACE", 0.0)
    cluster.active_seeds = 1
    a_state = cluster.prepare("a")
    b_state = cluster.prepare("b", owner=a_state, trusts=a_state)
    cids = [publish_model(a_state, tmp_path / str(i), size=256 * 1024) for i in range(3)]
    a = await cluster.start(a_state)
    b = await cluster.start(b_state, control(a))
    for cid in reversed(cids):  # the last in store order first: not the one joined at start
        result = await b.fetch(cid, [], lambda event: None)
        assert result.cid == str(cid)
        assert a.seeder.joined() == 1  # the one just asked for; the others left
        assert a.status().in_swarm == 1
    assert a.status().seeding == 3  # all still seeded: one that left joins again if asked
    c = await cluster.start(cluster.prepare("c", owner=a_state, trusts=a_state), control(a))
    assert (await c.fetch(cids[-1], [], lambda event: None)).cid == str(cids[-1])
    assert a.seeder.joined() == 1


async def test_a_model_whose_files_went_missing_before_it_joined_is_damaged_not_a_crash(
    cluster: Cluster, tmp_path: Path
) -> None:
    cluster.active_seeds = 1
    a_state = cluster.prepare("a")
    b_state = cluster.prepare("b", owner=a_state, trusts=a_state)
    # Over one piece (4 MiB): joining the swarm reads its piece layer, or its blob.
    cids = [publish_model(a_state, tmp_path / str(i), size=5 * 1024 * 1024) for i in range(2)]
    a = await cluster.start(a_state)
    b = await cluster.start(b_state, control(a))
    async with asyncio.timeout(30):
        while a.seeder.joined() < 1:  # the first in store order joins as sovnetd starts
            await asyncio.sleep(0.01)
    [waiting] = [cid for cid in cids if not a.seeder.in_swarm(cid)]
    manifest = a.store.manifest(waiting)
    assert manifest is not None
    for entry in manifest.files:  # gone behind sovnetd's back
        a.store.blob_path(entry.blake3).unlink()
        for layer in a.store.layers.glob(f"{entry.blake3.hex()}.*"):
            layer.unlink()
    with pytest.raises(TransferError, match="no peer in the swarm"):  # a says: not here
        await b.fetch(waiting, [], lambda event: None)
    assert "cannot be read" in a.status().damaged[str(waiting)]
    assert not a.seeder.is_seeding(waiting)


async def test_a_burst_of_announces_leaves_the_swarm_once_its_grace_is_over(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sovnet.daemon.seeder.JOIN_GRACE", 0.3)  # not 30 s for a peer
    cluster.active_seeds = 2
    a_state = cluster.prepare("a")
    cids = [publish_model(a_state, tmp_path / str(i), size=64 * 1024) for i in range(6)]
    a = await cluster.start(a_state)
    member = PeerAddress("127.0.0.1", 40000)
    for cid in cids:  # a member announces every model, and connects to none
        reply = await a.announce(cid, member)
        assert reply is not None and reply.complete  # answered: it is seeded
    async with asyncio.timeout(10):
        while a.seeder.joined() > 2:  # back within the limit, unasked
            await asyncio.sleep(0.05)
    assert a.status().seeding == 6


async def test_a_model_answered_complete_stays_in_the_swarm_for_its_asker(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sovnet.daemon.seeder.JOIN_GRACE", 0.5)
    cluster.active_seeds = 1
    a_state = cluster.prepare("a")
    x, y = [publish_model(a_state, tmp_path / str(i), size=64 * 1024) for i in range(2)]
    a = await cluster.start(a_state)
    member = PeerAddress("127.0.0.1", 40000)
    await a.announce(x, member)
    await asyncio.sleep(1.0)  # x idle past its grace
    reply = await a.announce(x, member)  # asked again: "complete", so the asker connects
    assert reply is not None and reply.complete
    await a.announce(y, member)  # another join, over the limit: not x, just promised
    assert a.seeder.in_swarm(x)
