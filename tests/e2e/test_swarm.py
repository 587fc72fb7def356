"""End to end: real sovnetd processes share models over libtorrent on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import SOVNET, cli_env, flip_byte
from tests.e2e.conftest import Cluster, Node, make_model, same_files, wait_for

UNKNOWN_CID = "bafkr4iauqeduauv2vts4spip7cisgg2pf6onw45jehxhdton3o7cclfpqa"
MIB = 1024 * 1024
# The seeder of a slow fetch: slow enough to catch the download midway, no slower.
SLOW_RATE = 8 * MIB


def _flip_every_piece(blob: Path, piece: int = 4 * MIB) -> None:
    for offset in range(1000, blob.stat().st_size, piece):
        flip_byte(blob, offset)


def test_publish_fetch_and_seed_onward(cluster: Cluster, tmp_path: Path) -> None:
    a, b, c = cluster.node("a"), cluster.node("b"), cluster.node("c")
    for node in (a, b, c):
        node.start()
    model = make_model(tmp_path / "model", megabytes=12)

    published = a.sovnet.json("publish", model, "--name", "acme/e2e", "--version", "1")
    cid = published["cid"]
    assert published["seeding"] is True  # through the daemon: seeded at once

    b.sovnet("peers", "add", a.control, check=True)
    fetched = b.sovnet("fetch", cid)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout.strip() == cid
    assert "Fetched and verified acme/e2e" in fetched.stderr

    assert same_files(model, b.state / "models" / cid)
    assert a.has(cid) and b.has(cid)
    assert b.sovnet("verify", cid).returncode == 0
    # b made the piece layers it seeds with from the hashes libtorrent checked, not
    # by hashing again: they are the publisher's.
    layers = {p.name: p.read_bytes() for p in (a.state / "layers").iterdir()}
    assert any(layers.values())
    assert {p.name: p.read_bytes() for p in (b.state / "layers").iterdir()} == layers
    assert "do not add up" not in b.log_text()
    # Status figures refresh about twice a second.
    wait_for("a's upload count", lambda: a.status()["uploaded"] >= 12 * MIB, timeout=5)

    # The second node seeds to a third, with the publisher gone.
    a.stop()
    c.sovnet("peers", "add", b.control, check=True)
    third = c.sovnet("fetch", cid, "--json")
    assert third.returncode == 0, third.stderr
    events = [json.loads(line) for line in third.stdout.splitlines()]
    assert events[0]["event"] == "manifest"
    assert any(e["event"] == "progress" for e in events)
    assert events[-1]["event"] == "result" and events[-1]["cid"] == cid
    assert events[-1]["downloaded"] >= 12 * MIB
    assert same_files(model, c.state / "models" / cid)
    wait_for("b's upload count", lambda: b.status()["uploaded"] >= 12 * MIB, timeout=5)

    again = c.sovnet("fetch", cid, "--json", check=True)
    assert json.loads(again.stdout.splitlines()[-1])["already_here"] is True


def test_a_model_of_5000_files_publishes_fetches_and_verifies(
    cluster: Cluster, tmp_path: Path
) -> None:
    # Its manifest is about 1 MiB: peers used to send only what their first read
    # returned, about 64 KiB of it, and the fetch failed as if it were tampered.
    a, b = cluster.node("a"), cluster.node("b")
    a.start()
    b.start()
    model = tmp_path / "many"
    model.mkdir()
    for i in range(5000):
        (model / f"f{i:04d}.json").write_text(f'{{"i": "{i:04d}"}}\n')
    cid = a.sovnet.json("publish", model, "--name", "acme/many")["cid"]
    assert len(a.sovnet("show", cid, "--raw", text=False).stdout) > 512 * 1024
    b.sovnet("peers", "add", a.control, check=True)
    fetched = b.sovnet("fetch", cid)
    assert fetched.returncode == 0, fetched.stderr
    assert same_files(model, b.state / "models" / cid)
    assert b.sovnet("verify", cid).returncode == 0


@pytest.mark.parametrize(("host", "named"), [("127.0.0.1", "localhost"), ("::1", "[::1]")])
def test_a_peer_given_by_host_name_or_ipv6_address(
    cluster: Cluster, tmp_path: Path, host: str, named: str
) -> None:
    # By name, the holder's address went to libtorrent as it was, which takes IP
    # endpoints only: every fetch failed with exit 1 (a TypeError).
    a, b = cluster.node("a"), cluster.node("b")
    a.start(host=host)
    b.start(host=host)
    model = make_model(tmp_path / "m", megabytes=2)
    cid = a.sovnet.json("publish", model, "--name", "acme/named")["cid"]
    b.sovnet("peers", "add", f"{named}:{a.status()['control_port']}", check=True)
    fetched = b.sovnet("fetch", cid)
    assert fetched.returncode == 0, fetched.stderr + b.log_text()[-2000:]
    assert same_files(model, b.state / "models" / cid)


def test_files_already_in_the_store_are_not_downloaded(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    a.start()
    b.start()
    first = make_model(tmp_path / "first", megabytes=8, seed=1)
    second = tmp_path / "second"
    second.mkdir()
    (second / "model.safetensors").write_bytes((first / "model.safetensors").read_bytes())
    (second / "config.json").write_text('{"other": true}')
    cid1 = a.sovnet.json("publish", first, "--name", "acme/one")["cid"]
    cid2 = a.sovnet.json("publish", second, "--name", "acme/two", "--copy")["cid"]
    b.sovnet("peers", "add", a.control, check=True)
    b.sovnet("fetch", cid1, check=True)
    result = json.loads(b.sovnet("fetch", cid2, "--json", check=True).stdout.splitlines()[-1])
    assert result["downloaded"] < MIB  # only config.json was new
    assert same_files(second, b.state / "models" / cid2)


def test_a_node_of_another_network_gets_nothing(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.node("a")
    stranger = cluster.node("stranger", network="othernet")
    a.start()
    stranger.start()
    cid = a.sovnet.json("publish", make_model(tmp_path / "m", 4), "--name", "acme/x")["cid"]

    refused = stranger.sovnet("fetch", cid, "--peer", a.control)
    assert refused.returncode == 3, refused.stderr
    assert "not from this network" in refused.stderr
    assert not stranger.has(cid)
    assert a.status()["uploaded"] == 0


def test_without_a_daemon_commands_say_how_to_start_it(cluster: Cluster) -> None:
    a = cluster.node("a")
    for command in (["status"], ["fetch", UNKNOWN_CID], ["peers", "ls"]):
        result = a.sovnet(*command)
        assert result.returncode == 9, command
        assert "sovnetd is not running" in result.stderr
        assert "start it with `sovnetd`" in result.stderr


def test_a_bad_setting_is_refused_at_start_naming_it(cluster: Cluster) -> None:
    a = cluster.node("a")
    env = {**cli_env(a.state), "SOVNET_STALL_TIMEOUT": "soon"}
    result = subprocess.run(
        [str(SOVNET.parent / "sovnetd"), "--state-dir", str(a.state)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 4
    assert "SOVNET_STALL_TIMEOUT" in result.stderr


def test_a_second_daemon_on_one_state_dir_is_refused(cluster: Cluster) -> None:
    a = cluster.node("a")
    a.start()
    result = subprocess.run(
        [
            str(SOVNET.parent / "sovnetd"),
            "--state-dir",
            str(a.state),
            "--swarm-listen",
            "127.0.0.1:0",
            "--control-listen",
            "127.0.0.1:0",
        ],
        capture_output=True,
        text=True,
        env=cli_env(a.state),
        timeout=30,
    )
    assert result.returncode == 7
    assert "already running" in result.stderr
    assert a.sovnet("status").returncode == 0


def test_a_corrupt_seeder_does_not_poison_the_fetch(cluster: Cluster, tmp_path: Path) -> None:
    a, b, c = (cluster.node(n) for n in "abc")
    # The honest seeder is slow, so the fetching node asks the corrupt one too.
    a.start(SOVNET_UPLOAD_RATE_LIMIT=str(6 * MIB))
    # c stands for a hostile seeder: it never checks the files it serves (an honest
    # one stops seeding them: test_damage.py).
    c.start(SOVNET_CHECK_INTERVAL="3600")
    model = make_model(tmp_path / "m", megabytes=16)
    cid = a.sovnet.json("publish", model, "--name", "acme/x")["cid"]
    c.sovnet("fetch", cid, "--peer", a.control, check=True)
    blob = c.state / "models" / cid / "model.safetensors"
    _flip_every_piece(blob)
    assert c.sovnet("verify", cid).returncode == 5  # c now serves bad bytes

    b.start()
    fetched = b.sovnet("fetch", cid, "--peer", c.control, "--peer", a.control)
    assert fetched.returncode == 0, fetched.stderr + b.log_text()[-2000:]
    assert same_files(model, b.state / "models" / cid)
    status = b.status()
    assert status["hash_failures"] > 0  # c's pieces were caught and thrown away
    assert any(
        ban["peer"].endswith(str(c.status()["swarm_port"])) for ban in status["banned_peers"]
    )
    assert "banned peer" in b.log_text()
    # With only the corrupt seeder left, the fetch fails loudly: tests/test_node.py.


def _fetch_in_background(node_state: Path, cid: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SOVNET), "fetch", cid, "--json"],
        env=cli_env(node_state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class SlowFetch:
    """Node b fetching, in the background, a model node a seeds at SLOW_RATE."""

    a: Node
    b: Node
    model: Path
    cid: str
    total: int
    follower: subprocess.Popen[str]

    def wait_until(self, key: str, at_least: float) -> dict[str, int]:
        """The fetch's status entry once its ``key`` (done, resumable) has reached
        ``at_least`` bytes."""

        def reached() -> dict[str, int] | None:
            for fetch in self.b.status()["fetches"]:
                if fetch.get(key, 0) >= at_least:
                    return dict(fetch)
            return None

        found: dict[str, int] = wait_for(
            f"the fetch's {key} to reach {at_least:.0f} bytes", reached, timeout=60, every=0.2
        )
        return found


def _slow_fetch(cluster: Cluster, tmp_path: Path, megabytes: int, **client_env: str) -> SlowFetch:
    a, b = cluster.node("a"), cluster.node("b")
    a.start(SOVNET_UPLOAD_RATE_LIMIT=str(SLOW_RATE))
    b.start(**client_env)
    model = make_model(tmp_path / "m", megabytes=megabytes)
    cid = a.sovnet.json("publish", model, "--name", "acme/big")["cid"]
    total = sum(p.stat().st_size for p in model.iterdir())
    b.sovnet("peers", "add", a.control, check=True)
    return SlowFetch(a, b, model, cid, total, _fetch_in_background(b.state, cid))


def test_kill_9_mid_download_resumes_without_fetching_again(
    cluster: Cluster, tmp_path: Path
) -> None:
    fetch = _slow_fetch(cluster, tmp_path, 40, SOVNET_RESUME_INTERVAL="0.5")
    b, model, cid, total, follower = fetch.b, fetch.model, fetch.cid, fetch.total, fetch.follower
    before = fetch.wait_until("resumable", total * 0.4)
    b.stop(signal.SIGKILL)
    out, err = follower.communicate(timeout=30)
    assert follower.returncode == 9, err  # the CLI says sovnetd went away
    error = json.loads(out.splitlines()[-1])
    assert "sovnetd stopped" in error["error"]["message"]
    assert not b.has(cid)

    b.start()  # the fetch resumes by itself
    wait_for("the resumed fetch to finish", lambda: b.has(cid), timeout=90, every=0.3)
    recent = [f for f in b.status()["recent_fetches"] if f["cid"] == cid]
    assert recent, "the resumed fetch is not in recent_fetches"
    downloaded_after = recent[-1]["downloaded"]
    piece = 4 * MIB
    # Pieces completed before the kill were not downloaded again (a piece or two
    # in flight at the last resume save may be).
    assert 0 < downloaded_after <= total - before["resumable"] + 2 * piece, (
        downloaded_after,
        before,
        total,
    )
    assert same_files(model, b.state / "models" / cid)
    assert b.sovnet("verify", cid).returncode == 0


def test_sigterm_mid_download_leaves_nothing_half_written(cluster: Cluster, tmp_path: Path) -> None:
    fetch = _slow_fetch(cluster, tmp_path, 24)
    a, b, model, cid, follower = fetch.a, fetch.b, fetch.model, fetch.cid, fetch.follower
    fetch.wait_until("done", 1)  # the download has started
    assert b.stop(signal.SIGTERM) == 0
    follower.communicate(timeout=30)
    assert follower.returncode == 9
    assert not (b.state / "models" / cid).exists()
    assert not (b.state / "manifests" / cid).exists()
    blob = (b.state / "blobs").iterdir()
    big = a.sovnet.json("show", cid)["manifest"]["files"]
    big_hash = next(f["blake3"] for f in big if f["path"] == "model.safetensors")
    assert big_hash not in {p.name for p in blob}
    assert (b.state / "partial" / cid / "resume").is_file()  # saved on the way out

    b.start()
    wait_for("the fetch to finish after the restart", lambda: b.has(cid), timeout=90)
    assert same_files(model, b.state / "models" / cid)


def test_a_fetch_whose_resume_data_is_lost_rechecks_its_files_and_goes_on(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Files on disk and no resume file (lost, or a crash before the first save):
    libtorrent must check the files before the torrent starts, which it does not
    do for a paused torrent. (Without the piece layers, which come from peers, it
    finds no piece it can verify: the download starts over, into the same files.)"""
    fetch = _slow_fetch(cluster, tmp_path, 48)
    b, model, cid = fetch.b, fetch.model, fetch.cid
    fetch.wait_until("done", fetch.total * 0.4)
    assert b.stop(signal.SIGTERM) == 0
    fetch.follower.communicate(timeout=30)
    (b.state / "partial" / cid / "resume").unlink()

    b.start()
    wait_for("the fetch to finish after the restart", lambda: b.has(cid), timeout=90)
    assert same_files(model, b.state / "models" / cid)
    assert b.sovnet("verify", cid).returncode == 0


@pytest.mark.skipif(not Path("/usr/bin/systemd-analyze").exists(), reason="no systemd-analyze")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (Path(__file__).parents[2] / "systemd" / "sovnetd.service").read_text()
    assert "Type=notify" in unit
    local = tmp_path / "sovnetd.service"
    local.write_text(unit.replace("/opt/sovnet/.venv/bin/sovnetd", str(SOVNET.parent / "sovnetd")))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
