"""End to end: a stored model whose files change under sovnet, and fetches that
another command stops."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import flip_byte
from tests.e2e.conftest import Cluster, make_model, same_files, wait_for
from tests.e2e.test_swarm import MIB, _slow_fetch


def test_a_seeder_whose_published_file_is_edited_in_place_stops_seeding_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    a.start(SOVNET_CHECK_INTERVAL="0.5")
    model = make_model(tmp_path / "m", megabytes=4)
    # Without --copy the store hard-links the publisher's own files.
    cid = a.sovnet.json("publish", model, "--name", "acme/edited")["cid"]
    assert a.status()["seeding"] == 1
    flip_byte(model / "model.safetensors", 1000)  # the publisher edits their file

    damaged = wait_for("the seeder to notice the edit", lambda: a.status()["damaged"], timeout=30)
    assert "model.safetensors" in damaged[cid], damaged
    assert a.status()["seeding"] == 0
    assert "not seeding" in a.log_text()
    shown = a.sovnet("status")
    assert "DAMAGED" in shown.stdout and cid in shown.stdout


def test_a_fetch_of_a_damaged_model_fetches_the_damaged_files_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    a.start()
    b.start()
    model = make_model(tmp_path / "m", megabytes=8)
    cid = a.sovnet.json("publish", model, "--name", "acme/x")["cid"]
    b.sovnet("fetch", cid, "--peer", a.control, check=True)
    flip_byte(b.state / "models" / cid / "model.safetensors", 4 * MIB + 7)
    assert b.sovnet("verify", cid).returncode == 5

    again = b.sovnet("fetch", cid, "--json")
    assert again.returncode == 0, again.stderr + b.log_text()[-2000:]
    result = json.loads(again.stdout.splitlines()[-1])
    assert not result["already_here"]
    size = (model / "model.safetensors").stat().st_size
    assert size <= result["downloaded"] < size + 2 * MIB  # that file, not the model
    assert b.sovnet("verify", cid).returncode == 0
    assert same_files(model, b.state / "models" / cid)
    assert cid not in b.status()["damaged"]
    assert b.status()["seeding"] == 1


def test_rm_during_a_fetch_tells_its_follower_who_cancelled_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    fetch = _slow_fetch(cluster, tmp_path, 24)
    b, cid, follower = fetch.b, fetch.cid, fetch.follower
    fetch.wait_until("done", 1)
    removed = b.sovnet("rm", cid, "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout)["freed_bytes"] > 0  # what had arrived
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 8, err
    error = json.loads(out.splitlines()[-1])["error"]
    assert "cancelled by `sovnet rm`" in error["message"], error
    assert b.status()["pid"]  # the daemon is alive: it did not stop


def test_a_published_file_put_back_is_seeded_again(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.node("a")
    a.start(SOVNET_CHECK_INTERVAL="0.5")
    model = make_model(tmp_path / "m", megabytes=2)
    cid = a.sovnet.json("publish", model, "--name", "acme/edited")["cid"]
    flip_byte(model / "model.safetensors", 1000)
    wait_for("the seeder to notice the edit", lambda: a.status()["damaged"], timeout=30)
    flip_byte(model / "model.safetensors", 1000)  # undone
    wait_for("the model to be seeded again", lambda: a.status()["seeding"] == 1, timeout=30)
    assert cid not in a.status()["damaged"]


def test_a_fetch_puts_back_a_model_view_s_missing_or_linked_files(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    a.start()
    b.start()
    model = make_model(tmp_path / "m", megabytes=1)
    cid = a.sovnet.json("publish", model, "--name", "acme/x")["cid"]
    b.sovnet("fetch", cid, "--peer", a.control, check=True)
    view = b.state / "models" / cid
    (view / "config.json").unlink()
    (view / "model.safetensors").unlink()
    (view / "model.safetensors").symlink_to("/etc/passwd")
    assert b.sovnet("verify", cid).returncode == 5

    again = b.sovnet("fetch", cid)
    assert again.returncode == 0, again.stderr
    assert "2 file(s) of its view were missing or replaced" in again.stderr
    assert not (view / "model.safetensors").is_symlink()
    assert same_files(model, view)
    assert b.sovnet("verify", cid).returncode == 0
