"""End to end: what an operator sees of a running sovnetd on its metrics listener.

/metrics parses as Prometheus text (with prometheus_client's own parser) and its
counters move as a fetch runs; /healthz answers while the node lives; /readyz says
not ready, and why, while the swarm cannot listen, and ready once it does."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import threading
from pathlib import Path

from tests.conftest import SOVNET, cli_env
from tests.e2e.conftest import Cluster, make_model, wait_for

MIB = 1024 * 1024


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

    before = b.scrape()
    assert before[("sovnet_fetches_started_total", ())] == 0
    assert before[("sovnet_downloaded_bytes_total", ())] == 0
    assert before[("sovnet_swarm_listening", ())] == 1
    assert before[("sovnet_models_seeded", ())] == 0
    assert ("process_resident_memory_bytes", ()) in before  # the usual process metrics
    assert before[("sovnet_store_quota_bytes", ())] == 0  # no budget set
    # Measured off the loop, as sovnetd starts: there within moments.
    wait_for("the store's size in /metrics", lambda: ("sovnet_store_bytes", ()) in b.scrape())
    info = [k for k in before if k[0] == "sovnet_info"]
    assert info and ("node", "b") in info[0][1], info
    assert a.scrape()[("sovnet_models_seeded", ())] == 1

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
                m if 0 < (m := b.scrape())[("sovnet_downloaded_bytes_total", ())] < size else None
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

    after = b.scrape()
    assert after[("sovnet_fetches_ended_total", (("result", "ok"),))] == 1
    assert after[("sovnet_fetches_under_way", ())] == 0
    assert after[("sovnet_downloaded_bytes_total", ())] >= size * 0.9  # the safetensors, most
    assert after[("sovnet_models_seeded", ())] == 1
    assert after[("sovnet_seeded_bytes", ())] == size
    # libtorrent adds up a torrent's payload once a second: the seeder's counter
    # catches up within a few seconds of the end.
    wait_for(
        "a's uploaded bytes to count the model",
        lambda: a.scrape()[("sovnet_uploaded_bytes_total", ())] >= size * 0.9,
        timeout=10,
    )
    # By peer class: loopback is local, and each torrent's bytes go to the classes
    # of its peers, so here all of them, on both sides.
    local, world = (("peer_class", "local"),), (("peer_class", "global"),)
    assert (
        after[("sovnet_peer_class_downloaded_bytes_total", local)]
        == (after[("sovnet_downloaded_bytes_total", ())])
    )
    assert after[("sovnet_peer_class_downloaded_bytes_total", world)] == 0
    seeder = a.scrape()
    assert (
        seeder[("sovnet_peer_class_uploaded_bytes_total", local)]
        == (seeder[("sovnet_uploaded_bytes_total", ())])
    )
    assert seeder[("sovnet_peer_class_uploaded_bytes_total", world)] == 0
    shown = b.sovnet("status", check=True).stdout  # what ended recently, in words too
    assert f"fetched:     acme/big ({cid}), " in shown and " downloaded, in " in shown
    # One line a fetch for the operator, as it starts and ends.
    log = b.log_text()
    assert f"fetch {cid} started" in log
    assert f"fetch {cid} done: acme/big verified and seeding" in log, log[-2000:]
    assert "in the last 1 s: uploaded" in a.log_text() and cid in a.log_text()

    # A fetch that fails is counted by why.
    missing = "bafkr4iauqeduauv2vts4spip7cisgg2pf6onw45jehxhdton3o7cclfpqa"  # nobody's
    assert b.sovnet("fetch", missing).returncode == 3
    failed = b.scrape()
    assert failed[("sovnet_fetches_ended_total", (("result", "not-found"),))] == 1
    assert f"fetch {missing} failed after" in b.log_text()


def test_readyz_is_not_ready_while_the_swarm_cannot_listen(cluster: Cluster) -> None:
    a = cluster.node("a")
    with socket.socket() as holder:  # another process's listener on the swarm port
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        a.start(swarm_port=port)
        assert a.get_metrics("/healthz") == (200, "ok\n")
        code, body = a.get_metrics("/readyz")
        assert code == 503, body
        ready = json.loads(body)
        assert not ready["ready"]
        assert f"cannot listen on 127.0.0.1:{port}" in ready["checks"]["swarm"], ready
        assert ready["checks"]["store"] == "ok" and ready["checks"]["keys"] == "ok"
        shown = a.sovnet("status", check=True).stdout
        assert "NOT READY:" in shown and "trying again" in shown, shown
        assert a.scrape()[("sovnet_swarm_listening", ())] == 0
    # The port is free now: the swarm takes it on its next try, without a restart.
    wait_for("/readyz to say ready", lambda: a.get_metrics("/readyz")[0] == 200, timeout=30)
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


def test_metrics_scraped_through_a_storm_of_fetches_answer_and_never_go_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    a.start(SOVNET_UPLOAD_RATE_LIMIT=str(16 * MIB))
    b.start()
    cids = [
        a.sovnet.json("publish", make_model(tmp_path / f"m{i}", 2, seed=i), "--name", f"acme/m{i}")[
            "cid"
        ]
        for i in range(10)
    ]
    b.sovnet("peers", "add", a.control, check=True)
    counters = [
        ("sovnet_fetches_started_total", ()),
        ("sovnet_downloaded_bytes_total", ()),
        ("sovnet_fetches_ended_total", (("result", "ok"),)),
        ("sovnet_peer_class_downloaded_bytes_total", (("peer_class", "local"),)),
    ]
    scrapes: list[dict[tuple[str, tuple[tuple[str, str], ...]], float]] = []
    stop = threading.Event()

    def scrape_until_stopped() -> None:
        while not stop.is_set():
            scrapes.append(b.scrape())  # asserts a 200 and parses it

    scraper = threading.Thread(target=scrape_until_stopped)
    scraper.start()
    fetches = [
        subprocess.Popen(
            [str(SOVNET), "fetch", cid, "--json"],
            env=cli_env(b.state),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cid in cids
    ]
    try:
        for fetch in fetches:
            _, err = fetch.communicate(timeout=180)
            assert fetch.returncode == 0, err
    finally:
        for fetch in fetches:
            fetch.kill()
        stop.set()
        scraper.join(timeout=60)
    scrapes.append(b.scrape())
    assert len(scrapes) >= 10
    for counter in counters:  # a counter never goes back, whatever ran meanwhile
        values = [s.get(counter, 0.0) for s in scrapes]
        assert values == sorted(values), (counter, values)
    assert max(s[("sovnet_fetches_under_way", ())] for s in scrapes) >= 2
    last = scrapes[-1]
    assert last[("sovnet_fetches_started_total", ())] == 10
    assert last[("sovnet_fetches_ended_total", (("result", "ok"),))] == 10
    assert last[("sovnet_fetches_under_way", ())] == 0
    assert last[("sovnet_models_seeded", ())] == 10


def test_idle_connections_to_the_metrics_listener_cannot_take_sovnetd_down(
    cluster: Cluster,
) -> None:
    a = cluster.node("a")
    a.start()
    host, port = a.status()["metrics"].rsplit(":", 1)
    assert a.process is not None
    fds = Path(f"/proc/{a.process.pid}/fd")
    before = len(list(fds.iterdir()))
    idle = []
    try:
        for _ in range(200):  # more than it admits; none sends a byte
            with contextlib.suppress(OSError):  # refused: what the limit is for
                idle.append(socket.create_connection((host, int(port)), timeout=5))
        # Admitted at most its limit of 64: its descriptors stay bounded, and the
        # node goes on answering everywhere else.
        assert len(list(fds.iterdir())) <= before + 64 + 8
        assert a.status()["seeding"] == 0
        refused = [r for r in a.status()["rejected"] if r["plane"] == "metrics"]
        assert refused and "too many connections" in refused[0]["reason"], refused
        # Idle connections are closed after the header timeout (10 s): room again.
        wait_for("/healthz to answer again", lambda: _healthz_answers(host, int(port)), timeout=30)
    finally:
        for connection in idle:
            connection.close()
    assert a.process.poll() is None  # alive all along


def _healthz_answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2) as connection:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return connection.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def test_the_metrics_listener_answers_one_request_a_connection(cluster: Cluster) -> None:
    a = cluster.node("a")
    a.start()
    host, port = a.status()["metrics"].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"  # asks to keep it alive
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(4096):  # to EOF: closed after the one answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1
