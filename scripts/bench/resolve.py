"""Benchmark: getting a model by name (``ORG/MODEL:latest``, a release of a pinned
publisher root, resolved through a peer that is not the publisher) against getting
it by CID.

Three nodes on 127.0.0.1, made the way tests/e2e/test_publisher_release.py makes
them: publisher ``a`` (a root of 2 keys, its node key and an offline holder's,
with ``a`` as the online key) publishes a small model and releases it; ``b`` pins
the root, fetches ``acme/model:latest`` through ``a`` and so holds the model and
the publisher's verified metadata; then ``b`` forgets ``a`` and ``a`` stops. ``c``,
the node that measures, pins the root (and trusts no key of the publisher's) and
knows only ``b``: every name it resolves is TUF metadata asked of ``b`` over the
control plane and verified by python-tuf's Updater in ``c``'s daemon.

What is comparable, from the code (sovnet/daemon/node.py, fetcher.py,
publisher_metadata.py):

- ``sovnet fetch ORG/MODEL:latest`` always refreshes the publisher's metadata
  through the peers first (``fetch_release`` -> ``PublisherMetadata.resolve``:
  python-tuf asks for root N+1 and the timestamp, and snapshot/targets when they
  changed), then does exactly what ``sovnet fetch CID`` does, then checks the
  manifest against the release's hashes. ``Fetcher.fetch`` of a model already here
  answers at once (a stat check of its blobs). So with the model in the store,
  by name vs by CID is the name -> CID resolution alone, plus the same
  everything else: the "model here" rows. Measured twice: as whole CLI commands
  (process start and imports included, what a user waits for) and as requests
  to the daemon's API over its Unix socket from this process (no CLI process: the
  resolution's own cost, in ms).
- ``sovnet ls --remote --json`` refreshes every pinned root the same way, then asks
  each peer what it holds: shown against the same by-CID baseline.
- ``sovnet show`` of a name resolves offline, from the metadata trusted here
  (no refresh): shown against ``sovnet show CID``.
- The full fetch: ``sovnet rm`` first, then a fetch by name against a fetch by CID
  of the same small model from ``b`` (as in fetch.py, each waits first for ``b`` to
  drop the previous connection, so no fetch pays for the one before).

Cases alternate within each round (common.alternate), the API requests in rounds of
their own (more of them: they take milliseconds); medians of the rounds. Commands
are timed with a blocking wait (see :func:`command`), not common.timed, whose
polling rounds short commands up to a 50 ms step. The difference between the two
"model here" CLI rows is a few ms, inside the run-to-run noise of a ~0.2 s Python
process: the API rows are the ones that resolve it.

    .venv/bin/python scripts/bench/resolve.py [--quick] [--rounds 21] [--api-rounds 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from common import (
    COMMAND_TIMEOUT,
    MIB,
    Cluster,
    Node,
    Row,
    alternate,
    client_cpu,
    install_signal_handlers,
    log,
    make_small_model,
    pin,
    pinning_note,
    server_cpu,
    wait_for,
)

NAME = "resolve"
ORG = "acme"
MODEL = f"{ORG}/model"
REF = f"{MODEL}:latest"
MODEL_BYTES = 1 * MIB

CLI_CID = "sovnet fetch CID, model here"
CLI_NAME = f"sovnet fetch {REF}, model here (TUF refresh via peer)"
CLI_LS = "sovnet ls --remote --json (TUF refresh + who holds what)"
API_CID = "API fetch CID, model here"
API_NAME = f"API fetch {REF}, model here (TUF refresh via peer)"
API_RELEASES = "API GET /v1/releases (ls --remote without the CLI)"
SHOW_CID = "sovnet show CID"
SHOW_NAME = f"sovnet show {REF} (offline, metadata trusted here)"
FULL_CID = "sovnet fetch CID, after rm (full fetch)"
FULL_NAME = f"sovnet fetch {REF}, after rm (full fetch)"


def sizes(quick: bool) -> tuple[int, int]:
    """Rounds of whole commands, rounds of API requests."""
    return (9, 30) if quick else (21, 100)


def public_key(node: Node, into: Path) -> Path:
    into.write_text(node.sovnet("key", "show", "--public").stdout)
    return into


def command(node: Node, *args: str, cpu: int | None = None) -> tuple[float, str]:
    """Run ``sovnet ARGS`` on ``node``: its wall time, to the microsecond, and its stdout.

    Not common.timed: with a timeout, Popen.wait polls (Python 3.11 sleeps up to
    50 ms between polls), which rounds a 0.2 s command up to the next 50 ms step.
    Here the wait blocks in waitpid and a timer enforces the time limit. Output goes
    to files, so that no pipe reader paces the command. A failure says what the
    command printed (with --json, an error is on stdout) and the end of the node's
    log."""
    argv = pin(node.sovnet_argv(*args), cpu)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(
            argv, env=node.cli_env(), stdin=subprocess.DEVNULL, stdout=out, stderr=err
        )
        watchdog = threading.Timer(COMMAND_TIMEOUT, process.kill)
        watchdog.start()
        try:
            code = process.wait()
        finally:
            watchdog.cancel()
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError(
            f"sovnet {' '.join(args)} on {node.name} exited {code} after {seconds:.2f} s:"
            f"\n{stdout[-1500:]}{stderr[-1500:]}\n"
            f"{node.name}'s log:\n{node.log_text()[-2500:]}"
        )
    return seconds, stdout


def fetch(node: Node, ref: str, cpu: int | None = None) -> tuple[float, dict[str, Any]]:
    """``sovnet fetch REF --json`` on ``node``: its wall time and its result."""
    seconds, stdout = command(node, "fetch", ref, "--json", cpu=cpu)
    lines = stdout.splitlines()
    result = json.loads(lines[-1]) if lines else {}
    if result.get("event") != "result":
        raise RuntimeError(f"sovnet fetch {ref} on {node.name} ended without a result: {stdout}")
    return seconds, result


def setup(cluster: Cluster, work: Path) -> tuple[Node, Node, str]:
    """The publisher root, the release, and the nodes: (b, c, CID)."""
    # Every node made before any daemon runs: no invite names the publisher as a peer.
    a, b, c = cluster.node("a"), cluster.node("b"), cluster.node("c")
    holder = Node("holder", cluster.root / "holder")  # an offline key holder: no network
    holder.sovnet("key", "gen")
    a_pub, holder_pub = public_key(a, work / "a.pub"), public_key(holder, work / "holder.pub")
    root = work / "root.json"
    a.sovnet(
        "publisher", "init", ORG, "--key", a_pub, "--key", holder_pub,
        "--threshold", "2", "--online-key", a_pub, "-o", root,
    )  # fmt: skip
    a.sovnet("publisher", "sign", root)
    holder.sovnet("publisher", "sign", root)
    a.sovnet("publisher", "install", root)
    a.start(cpu=server_cpu())
    cid = a.publish(make_small_model(work / "model", 1, MODEL_BYTES), MODEL, "--version", "1")
    release = work / "release.json"
    a.sovnet("publisher", "release", f"{MODEL}@1", "-o", release)
    a.sovnet("publisher", "sign", release)
    holder.sovnet("publisher", "sign", release, "--root", root)
    a.sovnet("publisher", "install", release)

    # b and c trust the root only (Cluster.node made them trust a's key: undone).
    for node in (b, c):
        node.sovnet("trust", "rm", a.key_id())
        node.sovnet("trust", "add", root)
    b.start(cpu=server_cpu())
    b.sovnet("peers", "add", a.control)
    # Through a, by name: b now holds the model and serves the metadata too.
    _, fetched = fetch(b, REF)
    if fetched["cid"] != cid:
        raise RuntimeError(f"b resolved {REF} to {fetched['cid']}, not {cid}")
    b.sovnet("peers", "rm", a.control)
    a.stop()  # from now on only b has the release and its metadata

    c.start(cpu=client_cpu())
    c.sovnet("peers", "add", b.control)
    first, _ = fetch(c, REF, client_cpu())  # the first resolution: every file new
    log(NAME, f"c's first fetch of {REF} (every TUF file new): {first:.2f} s")
    return b, c, cid


def measure(rounds: int, api_rounds: int) -> tuple[list[Row], dict[str, str]]:
    from sovnet.api.client import Client

    client = client_cpu()
    facts: dict[str, str] = {}
    with Cluster() as cluster:
        work = cluster.root / "work"
        work.mkdir()
        b, c, cid = setup(cluster, work)
        api = Client(c.socket, timeout=60)

        def cli(*args: str) -> Callable[[], float]:
            return lambda: command(c, *args, cpu=client)[0]

        def full(ref: str) -> float:
            c.remove(cid)
            # b notices the closed connection a few seconds later, and would refuse
            # the next one from c meanwhile (see fetch.py): not a cost of either path.
            wait_for("b to drop the connection", lambda: b.seeding_peers(cid) == 0, 30, every=0.1)
            seconds, result = fetch(c, ref, client)
            if result["cid"] != cid or result["already_here"]:
                raise RuntimeError(f"sovnet fetch {ref} measured nothing: {result}")
            return seconds

        def api_fetch(ref: str) -> float:
            start = time.perf_counter()
            events = list(api.fetch(ref, []))
            seconds = time.perf_counter() - start
            result = events[-1]
            if result.cid != cid or not result.already_here:
                raise RuntimeError(f"API fetch {ref}: {result}")
            return seconds * 1000

        def api_releases() -> float:
            start = time.perf_counter()
            listed = api.releases()
            seconds = time.perf_counter() - start
            if [r.cid for r in listed.releases] != [cid] or listed.problems:
                raise RuntimeError(f"GET /v1/releases: {listed}")
            return seconds * 1000

        cases: Mapping[str, Callable[[], float]] = {
            CLI_CID: cli("fetch", cid),
            CLI_NAME: cli("fetch", REF),
            CLI_LS: cli("ls", "--remote", "--json"),
            SHOW_CID: cli("show", cid, "--json"),
            SHOW_NAME: cli("show", REF, "--json"),
            FULL_CID: lambda: full(cid),
            FULL_NAME: lambda: full(REF),
        }
        log(NAME, f"{rounds} rounds of whole commands, {pinning_note()}")
        samples = alternate(NAME, cases, rounds)
        api_cases: Mapping[str, Callable[[], float]] = {
            API_CID: lambda: api_fetch(cid),
            API_NAME: lambda: api_fetch(REF),
            API_RELEASES: api_releases,
        }
        log(NAME, f"{api_rounds} rounds of API requests")
        samples.update(alternate(NAME, api_cases, api_rounds))

        peers = c.json("peers", "ls")
        facts["c's peers"] = ", ".join(
            f"{p['address']} ({p['source']}, {p.get('state')})" for p in peers
        )
        if [p["address"] for p in peers] != [b.control]:
            raise RuntimeError(f"c knew other peers than b, the measure is off: {peers}")
        facts["b's control plane"] = b.control

    where = f"1 MiB model, 3 nodes on 127.0.0.1, {pinning_note()}"
    plan = [
        (CLI_CID, CLI_CID, "s", f"whole command; {where}"),
        (CLI_NAME, CLI_CID, "s", "same, plus the name resolved through b (c knows only b)"),
        (CLI_LS, CLI_CID, "s", "refresh of the pinned root + asking each peer what it holds"),
        (API_CID, API_CID, "ms", "POST /v1/fetch over c's Unix socket from the bench process"),
        (API_NAME, API_CID, "ms", "python-tuf Updater.refresh in c, files asked of b"),
        (API_RELEASES, API_CID, "ms", "the daemon side of ls --remote"),
        (SHOW_CID, SHOW_CID, "s", "whole command, no daemon involved"),
        (SHOW_NAME, SHOW_CID, "s", "name -> CID from c's trusted metadata, no network"),
        (FULL_CID, FULL_CID, "s", "sovnet rm, wait for b to drop c, then the timed fetch"),
        (FULL_NAME, FULL_CID, "s", "same, plus the name resolved through b"),
    ]
    rows = [Row(NAME, case, base, samples[case], unit, note) for case, base, unit, note in plan]
    return rows, facts


def run(quick: bool) -> list[Row]:
    rounds, api_rounds = sizes(quick)
    rows, _ = measure(rounds, api_rounds)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="9 rounds, 30 of API requests")
    parser.add_argument("--rounds", type=int, help="rounds of whole commands [21, quick 9]")
    parser.add_argument("--api-rounds", type=int, help="rounds of API requests [100, quick 30]")
    args = parser.parse_args()
    install_signal_handlers()
    rounds, api_rounds = sizes(args.quick)
    started = time.monotonic()
    rows, facts = measure(args.rounds or rounds, args.api_rounds or api_rounds)
    from suite import render_text

    print(render_text(rows))
    for key, value in facts.items():
        print(f"{key}: {value}")
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
