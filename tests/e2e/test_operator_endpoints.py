"""End to end: what an operator sees of a running sovnetd on its metrics listener.

/metrics parses as Prometheus text (with prometheus_client's own parser) and its
counters move as a fetch runs; /healthz answers while the node lives; /readyz says
not ready, and why, while the swarm cannot listen, and ready once it does."""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SOVNET, cli_env
from tests.e2e.conftest import Cluster, Node, make_model, wait_for

MIB = 1024 * 1024


def _get(node: Node, path: str) -> tuple[int, str]:
    url = f"http://{node.status()['metrics']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _scrape(node: Node) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = _get(node, "/metrics")
    assert code == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_parse_and_their_counters_move_as_a_fetch_runs(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    # A fetch of seconds, to scrape during; a summary of what moved every second.
    a.start(SOVNET_UPLOAD_RATE_LIMIT=str(8 * MIB), SOVNET_SUMMARY_INTERVAL="1")
    b.start()
    model = make_model(tmp_path / "m", megabytes=24)
    cid = a.sovnet.json("publish", model, "--name", "acme/big")["cid"]
    size = sum(p.stat().st_size for p in model.iterdir())
    b.sovnet("peers", "add", a.control, check=True)

    before = _scrape(b)
    assert before[("sovnet_fetches_started_total", ())] == 0
    assert before[("sovnet_downloaded_bytes_total", ())] == 0
    assert before[("sovnet_swarm_listening", ())] == 1
    assert before[("sovnet_models_seeded", ())] == 0
    assert ("process_resident_memory_bytes", ()) in before  # the usual process metrics
    assert before[("sovnet_store_quota_bytes", ())] == 0  # no budget set
    assert ("sovnet_store_bytes", ()) in before
    info = [k for k in before if k[0] == "sovnet_info"]
    assert info and ("node", "b") in info[0][1], info
    assert _scrape(a)[("sovnet_models_seeded", ())] == 1

    follower = subprocess.Popen(
        [str(SOVNET), "fetch", cid, "--json"],
        env=cli_env(b.state),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        during = wait_for(
            "a scrape while the fetch has bytes but is not done",
            lambda: (
                m if 0 < (m := _scrape(b))[("sovnet_downloaded_bytes_total", ())] < size else None
            ),
            timeout=60,
            every=0.2,
        )
        assert during[("sovnet_fetches_started_total", ())] == 1
        assert during[("sovnet_fetches_under_way", ())] == 1
        assert during[("sovnet_peer_connections", ())] >= 1
        out, err = follower.communicate(timeout=90)
    finally:
        follower.kill()
    assert follower.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["cid"] == cid

    after = _scrape(b)
    assert after[("sovnet_fetches_ended_total", (("result", "ok"),))] == 1
    assert after[("sovnet_fetches_under_way", ())] == 0
    assert after[("sovnet_downloaded_bytes_total", ())] >= size * 0.9  # the safetensors, most
    assert after[("sovnet_models_seeded", ())] == 1
    assert after[("sovnet_seeded_bytes", ())] == size
    # libtorrent adds up a torrent's payload once a second: the seeder's counter
    # catches up within a few seconds of the end.
    wait_for(
        "a's uploaded bytes to count the model",
        lambda: _scrape(a)[("sovnet_uploaded_bytes_total", ())] >= size * 0.9,
        timeout=10,
    )
    # One line a fetch for the operator, as it starts and ends.
    log = b.log_text()
    assert f"fetch {cid} started" in log
    assert f"fetch {cid} done: acme/big verified and seeding" in log, log[-2000:]
    assert "in the last 1 s: uploaded" in a.log_text() and cid in a.log_text()

    # A fetch that fails is counted by why.
    missing = "bafkr4iauqeduauv2vts4spip7cisgg2pf6onw45jehxhdton3o7cclfpqa"  # nobody's
    assert b.sovnet("fetch", missing).returncode == 3
    failed = _scrape(b)
    assert failed[("sovnet_fetches_ended_total", (("result", "not-found"),))] == 1
    assert f"fetch {missing} failed after" in b.log_text()


def test_readyz_is_not_ready_while_the_swarm_cannot_listen(cluster: Cluster) -> None:
    a = cluster.node("a")
    with socket.socket() as holder:  # another process's listener on the swarm port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        a.start(swarm_port=port)
        assert _get(a, "/healthz") == (200, "ok\n")
        code, body = _get(a, "/readyz")
        assert code == 503, body
        ready = json.loads(body)
        assert not ready["ready"]
        assert f"cannot listen on 127.0.0.1:{port}" in ready["checks"]["swarm"], ready
        assert ready["checks"]["store"] == "ok" and ready["checks"]["keys"] == "ok"
        shown = a.sovnet("status", check=True).stdout
        assert "NOT READY:" in shown and "trying again" in shown, shown
        assert _scrape(a)[("sovnet_swarm_listening", ())] == 0
    # The port is free now: the swarm takes it on its next try, without a restart.
    wait_for("/readyz to say ready", lambda: _get(a, "/readyz")[0] == 200, timeout=30)
    assert a.status()["swarm_port"] == port
    assert "swarm_problem" not in a.status()
    assert "listening on port" in a.log_text()


def test_log_format_json_is_one_object_a_line(cluster: Cluster) -> None:
    a = cluster.node("a")
    a.start(SOVNET_LOG_FORMAT="json")
    assert a.stop() == 0
    lines = [json.loads(line) for line in a.log_text().splitlines()]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("ready; API on") for m in messages), messages
    assert {line["level"] for line in lines} <= {"debug", "info", "warning", "error"}
