"""What sovnetd does for publishers by itself: a publisher's node signs snapshot and
timestamp again before they expire; a node refreshes the roots it pinned and so
hears advisories nobody asked for."""

from __future__ import annotations

import asyncio
import datetime
import logging
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Snapshot, Timestamp

from sovnet.daemon.publisher_upkeep import PublisherUpkeep
from sovnet.errors import TrustError
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.publisherfiles import PublisherFiles
from sovnet.trust import publisher_root as pr
from sovnet.trust import publisher_targets as pt
from tests.test_publisher_advisories import HOLDERS, NOW, ONLINE, World

HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _versions(files: PublisherFiles) -> tuple[int, int, datetime.datetime]:
    timestamp = Metadata[Timestamp].from_bytes(files.file("timestamp.json") or b"").signed
    snapshot = files.latest("snapshot")
    assert snapshot is not None
    return timestamp.version, snapshot[0], timestamp.expires


def test_snapshot_and_timestamp_are_signed_again_before_they_expire(world: World) -> None:
    files = world.files
    timestamp, snapshot, expires = _versions(files)
    assert not files.renew(ONLINE, NOW)  # fresh: nothing to do
    assert not files.renew(ONLINE, NOW + 11 * HOUR)
    assert files.renew(ONLINE, NOW + 13 * HOUR)  # past half of the timestamp's day
    after = _versions(files)
    assert after[:2] == (timestamp + 1, snapshot) and after[2] > expires
    assert files.renew(ONLINE, NOW + 4 * 24 * HOUR)  # past half of the snapshot's week
    later = _versions(files)
    assert later[:2] == (timestamp + 2, snapshot + 1)
    new_snapshot = Metadata[Snapshot].from_bytes(files.latest("snapshot")[1]).signed  # type: ignore[index]
    assert new_snapshot.meta["targets.json"].version == pt.version_of(world.targets())


def test_a_node_whose_key_is_no_longer_the_online_key_cannot_renew(world: World) -> None:
    stranger = pr.signer(NodeFiles(world.node).key_path.read_bytes())
    with pytest.raises(TrustError, match="not the online key"):
        world.files.renew(stranger, NOW + 13 * HOUR)


def test_the_daemon_renews_what_it_can_and_says_what_it_cannot(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The upkeep signs with the node's own key: here world.node's key is not acme's
    online key (ONLINE is), so it says so in the log and goes on."""
    (world.node / "publishers").mkdir()
    world.files.directory.rename(world.node / "publishers" / "acme")
    upkeep = PublisherUpkeep(world.node, world.metadata(), 600)
    with caplog.at_level(logging.ERROR):
        asyncio.run(upkeep.renew())
    assert "publisher acme: cannot renew its timestamp" in caplog.text
    assert "not the online key" in caplog.text


def test_a_node_hears_an_advisory_at_its_next_refresh_without_being_asked(world: World) -> None:
    world.refresh()
    revoked = world.advise("acme/model@1", "revoked", "bad weights")
    world.files.install_advisories(world.sign(revoked, *HOLDERS[:2]), ONLINE, NOW)
    assert world.heard() == {}
    asyncio.run(PublisherUpkeep(world.node, world.metadata(), 600).refresh())
    assert world.heard() == {"acme/model@1": "revoked"}
