"""A pinned publisher's releases, refreshed through peers that are not the publisher,
with python-tuf's client over the control plane (in memory: tests/fakes.py): whole
nodes in one process, as in tests/test_node.py."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from sovnet.core.cid import CID
from sovnet.errors import TransferError, TrustError
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.publisherfiles import PublisherFiles
from sovnet.store.rootfiles import RootFiles
from sovnet.store.store import Store
from sovnet.trust import publisher_root as pr
from sovnet.trust import publisher_targets as pt
from tests.test_node import Cluster, control, publish_model

NOW = datetime.datetime.now(datetime.UTC)


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = Cluster(tmp_path)
    try:
        yield made
    finally:
        for node in list(made.nodes):
            await made.stop(node)


HOLDERS = [
    pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([k]) * 32))
    for k in (1, 2, 3)
]


def _make_publisher(nodes: Cluster, tmp_path: Path) -> tuple[Path, bytes, CID]:
    """Node a publishes for acme: a 2-of-3 root whose online key is a's key, and
    acme/model@1 released (a's model) and signed by two holders."""
    a = nodes.prepare("a")
    online = pr.signer(NodeFiles(a).key_path.read_bytes())
    root = pr.new_root(
        "acme", [h.public_key for h in HOLDERS], 2, now=NOW, online=online.public_key
    )
    root = pr.sign(pr.sign(root, HOLDERS[0]), HOLDERS[1])
    files = PublisherFiles(a, "acme")
    files.install_root(root)
    cid = publish_model(a, tmp_path, version="1")
    _release(a, root, cid, "1")
    return a, root, cid


def _release(state: Path, root: bytes, cid: CID, version: str) -> None:
    files = PublisherFiles(state, "acme")
    current = files.latest("targets")
    draft = pt.release(
        current[1] if current else None, root=root, name="acme/model", version=version,
        manifest=Store(state).manifest_bytes(cid), now=NOW,
    )  # fmt: skip
    for holder in HOLDERS[1:]:
        draft = pt.sign(draft, holder, root=root)
    files.install_targets(draft, pr.signer(NodeFiles(state).key_path.read_bytes()), NOW)


def _pinning(nodes: Cluster, name: str, a_state: Path, root: bytes) -> Path:
    state = nodes.prepare(name, owner=a_state)
    RootFiles(state).pin(root)
    return state


async def test_a_node_resolves_a_channel_through_a_peer_that_is_not_the_publisher(
    nodes: Cluster, tmp_path: Path
) -> None:
    a_state, root, cid = _make_publisher(nodes, tmp_path)
    a = await nodes.start(a_state)
    c = await nodes.start(_pinning(nodes, "c", a_state, root), control(a))
    release, _ = await c.publishers.resolve("acme/model")  # c refreshes from a
    assert release.cid == cid

    await nodes.stop(a)  # the publisher is gone; c still holds what it trusted
    b = await nodes.start(_pinning(nodes, "b", a_state, root), control(c))
    for ref in ("acme/model", "acme/model:latest", "acme/model@1"):
        release, target = await b.publishers.resolve(ref)
        assert (release.name, release.version, release.cid) == ("acme/model", "1", cid)
        target.verify_length_and_hashes(Store(a_state).manifest_bytes(cid))


async def test_a_moved_channel_is_followed_and_the_old_one_refused_after_a_restart(
    nodes: Cluster, tmp_path: Path
) -> None:
    a_state, root, _ = _make_publisher(nodes, tmp_path)
    old = {
        name: PublisherFiles(a_state, "acme").file(name)
        for name in ("1.targets.json", "1.snapshot.json", "timestamp.json")
    }
    second = publish_model(a_state, tmp_path / "two", version="2")
    _release(a_state, root, second, "2")
    a = await nodes.start(a_state)
    b_state = _pinning(nodes, "b", a_state, root)
    b = await nodes.start(b_state, control(a))
    release, _ = await b.publishers.resolve("acme/model:latest")
    assert release.cid == second

    # a now serves the previous, validly signed metadata (as a stale or hostile
    # peer would); b, restarted, refuses to go back.
    await nodes.stop(a)
    directory = PublisherFiles(a_state, "acme").directory
    for name in ("2.targets.json", "2.snapshot.json"):
        (directory / name).unlink()
    for name, data in old.items():
        assert data is not None
        (directory / name).write_bytes(data)
    await nodes.stop(b)
    a = await nodes.start(a_state)
    b = await nodes.start(b_state, control(a))
    with pytest.raises(TrustError, match="refused"):
        await b.publishers.resolve("acme/model:latest")


async def test_without_a_pinned_root_or_any_peer_that_has_it_a_name_resolves_nothing(
    nodes: Cluster, tmp_path: Path
) -> None:
    a_state, root, _ = _make_publisher(nodes, tmp_path)
    lone = await nodes.start(nodes.prepare("lone", owner=a_state))
    with pytest.raises(TrustError, match="no root of publisher acme is pinned"):
        await lone.publishers.resolve("acme/model")
    b = await nodes.start(_pinning(nodes, "b", a_state, root))  # no peers
    with pytest.raises(TransferError, match="no peer sent"):
        await b.publishers.resolve("acme/model")


async def test_a_release_is_fetched_by_name_and_trusted_for_its_release_alone(
    nodes: Cluster, tmp_path: Path
) -> None:
    a_state, root, cid = _make_publisher(nodes, tmp_path)
    a = await nodes.start(a_state)
    # b trusts no key of a's: only the root it pinned vouches for the release.
    b_state = _pinning(nodes, "b", a_state, root)
    b = await nodes.start(b_state, control(a))
    result = await b.fetch_release("acme/model:latest", [], lambda event: None)
    assert result.cid == str(cid) and b.store.has(cid)
    opened = b.store.open(cid, NodeFiles(b_state).load_trust())
    assert opened.trusted and opened.released_as is not None
    assert "acme/model@1" in opened.released_as

    # A node that pinned nothing fetches it by CID no more than before: untrusted.
    d = await nodes.start(nodes.prepare("d", owner=a_state), control(a))
    with pytest.raises(TrustError, match="no valid signature from a trusted key"):
        await d.fetch(cid, [], lambda event: None)


async def test_with_no_peer_reachable_a_name_of_a_model_here_is_no_fetch(
    nodes: Cluster, tmp_path: Path
) -> None:
    """Offline, `fetch NAME` of a release here succeeds by the metadata trusted before
    (a fetch of a model here fetches nothing); a release not here fails as before."""
    a_state, root, cid = _make_publisher(nodes, tmp_path)
    a = await nodes.start(a_state)
    b_state = _pinning(nodes, "b", a_state, root)
    b = await nodes.start(b_state, control(a))
    await b.fetch_release("acme/model@1", [], lambda event: None)
    cid_2 = publish_model(a_state, tmp_path / "two", version="2")
    _release(a_state, root, cid_2, "2")
    await b.publishers.refresh("acme")  # b has heard of 2, and holds only 1
    await nodes.stop(a)
    again = await b.fetch_release("acme/model@1", [], lambda event: None)
    assert again.cid == str(cid) and again.already_here
    with pytest.raises(TransferError, match="no peer sent publisher acme's metadata"):
        await b.fetch_release("acme/model@2", [], lambda event: None)


async def test_a_pinned_root_damaged_on_disk_is_said_as_such(
    nodes: Cluster, tmp_path: Path
) -> None:
    a_state, root, _ = _make_publisher(nodes, tmp_path)
    a = await nodes.start(a_state)
    b_state = _pinning(nodes, "b", a_state, root)
    b = await nodes.start(b_state, control(a))
    (RootFiles(b_state).metadata_dir("acme") / "root.json").write_bytes(b"")
    with pytest.raises(TrustError, match=r"pinned here .* cannot be used"):
        await b.publishers.resolve("acme/model")


async def test_a_peer_with_stale_metadata_does_not_keep_a_node_from_the_newest(
    nodes: Cluster, tmp_path: Path
) -> None:
    a_state, root, _ = _make_publisher(nodes, tmp_path)
    a = await nodes.start(a_state)
    c = await nodes.start(_pinning(nodes, "c", a_state, root), control(a))
    await c.publishers.resolve("acme/model")  # c holds release 1's metadata, and stays so
    second = publish_model(a_state, tmp_path / "two", version="2")
    _release(a_state, root, second, "2")
    b_state = _pinning(nodes, "b", a_state, root)
    b = await nodes.start(b_state, control(a))
    assert (await b.publishers.resolve("acme/model"))[0].cid == second
    await nodes.stop(b)
    # Asked first, c now serves what b has outgrown (a rollback, to b): b asks a next.
    b = await nodes.start(b_state, control(c), control(a))
    release, _ = await b.publishers.resolve("acme/model")
    assert release.cid == second
