"""End to end: a node that seeds more models than ``active_seeds`` keeps only that
many torrents in its swarm (libtorrent gives each SSL torrent a TLS context of its
own), and still serves every model it seeds: a fetch announces to the holder before
it connects, and the announce puts the torrent in the swarm before it is answered
(issue #14, the footprint at a mirror's scale)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Cluster, make_model, wait_for


def test_a_node_over_active_seeds_serves_every_model_it_seeds(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    b = cluster.node("b")
    cids = [
        a.sovnet.json("publish", make_model(tmp_path / f"m{i}", 1, seed=i), "--name", f"acme/m{i}")[
            "cid"
        ]
        for i in range(4)
    ]
    a.start(SOVNET_ACTIVE_SEEDS="2")
    wait_for("two of a's torrents to join its swarm", lambda: a.status()["in_swarm"] == 2)
    status = a.status()
    assert status["seeding"] == 4
    assert (
        "(2 in the swarm now, the others join when a peer asks)"
        in a.sovnet("status", check=True).stdout
    )
    assert a.scrape()[("sovnet_models_in_swarm", ())] == 2
    assert a.scrape()[("sovnet_models_seeded", ())] == 4

    b.start()
    b.sovnet("peers", "add", a.control, check=True)
    for cid in cids:  # two of them are in nobody's swarm until b asks
        fetched = b.sovnet("fetch", cid)
        assert fetched.returncode == 0, fetched.stderr + a.log_text()[-2000:]
        assert b.sovnet("verify", cid).returncode == 0
    # Each asked for joined; none has been idle long enough to leave yet.
    assert a.status()["in_swarm"] == 4
