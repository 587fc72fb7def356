"""Benchmark: sovnetd's footprint.

(a) Memory: sovnetd's resident set (VmRSS, and its peak VmHWM, from
    /proc/PID/status) while seeding 200 small models, against an idle sovnetd
    (empty store) and against the floor any libtorrent-based Python daemon pays:
    a bare Python process that imports libtorrent and creates a session. Also the
    daemon's start time with 200 models (until its API answers, which it opens
    only once every model is seeding) against an empty store.
(b) Latency of the local status API, GET /v1/status on the Unix socket, under an
    open-loop load of 200 requests a second: requests are sent at fixed times
    whatever the answers do, and each latency is measured from the time the
    request was *due*, so a server that falls behind is charged for the queue it
    builds (no coordinated omission). Each request opens its own connection, as
    each `sovnet` command does. Baseline: the same load against a trivial aiohttp
    app on a Unix socket that returns a fixed copy of sovnetd's status JSON (the
    cost of aiohttp itself). Server on one core, load generator on the other.
(c) `sovnet --help` and `sovnet status` wall time against `python -c pass` with
    the same interpreter (the floor of any Python CLI).

    .venv/bin/python scripts/bench/footprint.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from common import (
    PYTHON,
    SOVNET,
    Cluster,
    Node,
    Row,
    alternate,
    client_cpu,
    install_signal_handlers,
    log,
    make_small_model,
    median,
    percentile,
    pin,
    pinning_note,
    server_cpu,
    spawn,
    stop,
    timed,
    vm_status,
    wait_for,
)

NAME = "footprint"
MODELS = 200
RATE = 200.0  # requests a second
REQUEST_TIMEOUT = 5.0

# The floor: what the same interpreter pays for libtorrent and one session with
# sovnet's kind of settings, before any sovnet code, aiohttp or torrent.
FLOOR = """
import time, libtorrent as lt
session = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False,
    "enable_lsd": False, "enable_upnp": False, "enable_natpmp": False})
print("ready", flush=True)
time.sleep(600)
"""

# The latency baseline: aiohttp on a Unix socket answering with fixed bytes.
FIXED_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
async def status(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/v1/status", status)
web.run_app(app, path=sys.argv[1], access_log=None, print=None, handle_signals=True)
"""


# -- (a) memory ------------------------------------------------------------------------


def settled_memory(pid: int, timeout: float = 10.0) -> dict[str, int]:
    """VmRSS/VmHWM once VmRSS has stopped moving (within 1% over a second), so a
    process still faulting in its libraries is not caught half-way."""
    history: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        values = vm_status(pid)
        history.append(values["VmRSS"])
        recent = history[-5:]
        if len(recent) == 5 and max(recent) - min(recent) <= 0.01 * max(recent):
            return values
        if time.monotonic() > deadline:
            return values
        time.sleep(0.25)


def floor_memory(work: Path) -> dict[str, int]:
    out = work / "floor.log"
    out.unlink(missing_ok=True)
    process = spawn([PYTHON, "-c", FLOOR], log_path=out, cpu=server_cpu())
    try:
        wait_for("the libtorrent floor process", lambda: "ready" in _text(out), 30)
        return settled_memory(process.pid)
    finally:
        stop(process)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def daemon_memory(node: Node, models: int) -> tuple[dict[str, int], float]:
    """Start the daemon, wait for it to seed ``models`` models; its memory and how
    long the start took (until its API answered)."""
    started = time.perf_counter()
    node.start(cpu=server_cpu())
    seconds = time.perf_counter() - started
    try:
        status = node.status()
        if status["seeding"] != models:
            raise RuntimeError(f"{node.name} seeds {status['seeding']} models, not {models}")
        return settled_memory(node.pid), seconds
    finally:
        node.stop()


def publish_many(node: Node, root: Path, count: int) -> None:
    """``count`` distinct small models, published with the daemon stopped (each a
    `sovnet publish`, two at a time: the 2 cores)."""

    def one(index: int) -> None:
        model = make_small_model(root / f"m{index:03d}", seed=index)
        node.sovnet("publish", model, "--name", f"bench/small-{index:03d}")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(count)))


# -- (b) latency -------------------------------------------------------------------------


async def _one_request(path: str, due: float, latencies: list[float], errors: list[str]) -> None:
    loop = asyncio.get_running_loop()
    delay = due - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            reader, writer = await asyncio.open_unix_connection(path)
            try:
                writer.write(
                    b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                )
                answer = await reader.read()  # to EOF: the server closes
            finally:
                writer.close()
        if not answer.startswith(b"HTTP/1.1 200"):
            errors.append(answer[:40].decode(errors="replace"))
    except (OSError, TimeoutError) as exc:
        errors.append(type(exc).__name__)
    latencies.append(loop.time() - due)


async def _load(path: str, rate: float, seconds: float) -> dict[str, object]:
    loop = asyncio.get_running_loop()
    # A few requests first, not recorded: the first connection pays for lazy imports
    # and first-time set-up on both sides, which is not what this measures.
    for _ in range(5):
        await _one_request(path, loop.time(), [], [])
    count = int(rate * seconds)
    start = loop.time() + 0.1
    latencies: list[float] = []
    errors: list[str] = []
    tasks = []
    for index in range(count):
        due = start + index / rate
        # Open loop: each request is due at its own time, sent whether or not the
        # earlier ones were answered. Tasks are made a little ahead of time and
        # sleep until they are due.
        ahead = due - loop.time() - 0.05
        if ahead > 0:
            await asyncio.sleep(ahead)
        tasks.append(asyncio.create_task(_one_request(path, due, latencies, errors)))
    await asyncio.gather(*tasks)
    return {
        "latencies": latencies,
        "errors": errors,
        "seconds": loop.time() - start,
    }


def load_generator(path: str, rate: float, seconds: float) -> None:
    """The --load child: run the load, print the result as JSON."""
    print(json.dumps(asyncio.run(_load(path, rate, seconds))))


@dataclass
class LoadResult:
    latencies: list[float]  # ms, from each request's due time
    errors: int

    def percentile(self, q: float) -> float:
        return percentile(self.latencies, q)


def run_load(socket_path: Path, seconds: float) -> LoadResult:
    """The load generator in its own process, on the client's core."""
    argv = pin(
        [PYTHON, __file__, "--load", str(socket_path), str(RATE), str(seconds)], client_cpu()
    )
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True)
    result = json.loads(done.stdout)
    return LoadResult([v * 1000 for v in result["latencies"]], len(result["errors"]))


# -- the benchmark --------------------------------------------------------------------------


def measure(quick: bool) -> list[Row]:
    rounds = 3 if quick else 5
    load_seconds = 5.0 if quick else 10.0
    cli_runs = 30 if quick else 50
    rows: list[Row] = []
    with Cluster() as cluster:
        mirror = cluster.node("mirror")
        empty = cluster.node("empty")
        log(NAME, f"publishing {MODELS} small models ...")
        started = time.monotonic()
        publish_many(mirror, cluster.root / "models", MODELS)
        log(NAME, f"published in {time.monotonic() - started:.0f} s")

        # (a) memory and start time, alternating the three processes each round.
        memory: dict[str, list[dict[str, int]]] = {"floor": [], "empty": [], "mirror": []}
        starts: dict[str, list[float]] = {"empty": [], "mirror": []}

        def floor_case() -> float:
            memory["floor"].append(floor_memory(cluster.root))
            return 0.0

        def daemon_case(node: Node, models: int, key: str) -> Callable[[], float]:
            def case() -> float:
                values, seconds = daemon_memory(node, models)
                memory[key].append(values)
                starts[key].append(seconds)
                return seconds

            return case

        alternate(
            NAME,
            {
                "floor": floor_case,
                "empty": daemon_case(empty, 0, "empty"),
                "mirror": daemon_case(mirror, MODELS, "mirror"),
            },
            rounds,
            warmup=True,
        )
        # The warm-up round was recorded too: drop it (first-start costs).
        for measured in memory.values():
            del measured[0]
        for seconds in starts.values():
            del seconds[0]

        def mib(key: str, field: str) -> list[float]:
            return [v[field] / 1024 for v in memory[key]]

        floor_case_name = "python + libtorrent session (floor), VmRSS"
        per_model = (median(mib("mirror", "VmRSS")) - median(mib("empty", "VmRSS"))) / MODELS
        rows += [
            Row(
                NAME,
                floor_case_name,
                floor_case_name,
                mib("floor", "VmRSS"),
                "MiB",
                "a bare Python that imports libtorrent and opens one session",
            ),
            Row(NAME, "sovnetd, empty store, VmRSS", floor_case_name, mib("empty", "VmRSS"), "MiB"),
            Row(
                NAME,
                f"sovnetd seeding {MODELS} models, VmRSS",
                floor_case_name,
                mib("mirror", "VmRSS"),
                "MiB",
                f"{per_model * 1024:.0f} KiB per model over the empty store",
            ),
            Row(
                NAME,
                f"sovnetd seeding {MODELS} models, VmHWM (peak)",
                floor_case_name,
                mib("mirror", "VmHWM"),
                "MiB",
            ),
            Row(
                NAME,
                "sovnetd start, empty store",
                "sovnetd start, empty store",
                starts["empty"],
                "s",
                "until the API answers",
            ),
            Row(
                NAME,
                f"sovnetd start, {MODELS} models",
                "sovnetd start, empty store",
                starts["mirror"],
                "s",
                "the API opens once every model is seeding",
            ),
        ]

        # (b) status latency under load, and (c) CLI wall times, against the mirror.
        mirror.start(cpu=server_cpu())
        try:
            body = cluster.root / "status.json"
            body.write_bytes(json.dumps(mirror.status()).encode())
            fixed_socket = cluster.root / "fixed.sock"
            fixed = spawn(
                [PYTHON, "-c", FIXED_SERVER, fixed_socket, body],
                log_path=cluster.root / "fixed.log",
                cpu=server_cpu(),
            )
            try:
                wait_for("the aiohttp baseline", fixed_socket.exists, 30)
                rows += latency_rows(mirror.socket, fixed_socket, rounds, load_seconds)
            finally:
                stop(fixed)
            rows += cli_rows(mirror, cli_runs)
        finally:
            mirror.stop()
    return rows


def latency_rows(sovnet_socket: Path, fixed_socket: Path, rounds: int, seconds: float) -> list[Row]:
    each = seconds / rounds
    log(
        NAME,
        f"status API: {RATE:.0f} requests/s, {rounds} rounds of {each:.1f} s each, "
        f"{pinning_note()}",
    )
    found: dict[str, list[LoadResult]] = {"sovnetd": [], "aiohttp": []}

    def case(key: str, path: Path) -> Callable[[], float]:
        def load() -> float:
            result = run_load(path, each)
            found[key].append(result)
            return result.percentile(50)

        return load

    alternate(
        NAME,
        {"sovnetd": case("sovnetd", sovnet_socket), "aiohttp": case("aiohttp", fixed_socket)},
        rounds,
        warmup=False,
    )
    rows = []
    base = {q: f"aiohttp app, fixed JSON: GET /v1/status p{q}" for q in (50, 99)}
    for key, label in (
        ("aiohttp", "aiohttp app, fixed JSON"),
        ("sovnetd", f"sovnetd ({MODELS} models)"),
    ):
        pooled = LoadResult(
            [v for r in found[key] for v in r.latencies], sum(r.errors for r in found[key])
        )
        for q in (50, 99):
            note = (
                f"all {len(pooled.latencies)} requests: {pooled.percentile(q):.2f} ms; "
                f"{pooled.errors} errors"
            )
            if key == "aiohttp" and q == 50:
                note += f"; {RATE:.0f} req/s open loop, a new connection each"
            rows.append(
                Row(
                    NAME,
                    f"{label}: GET /v1/status p{q}",
                    base[q],
                    [r.percentile(q) for r in found[key]],
                    "ms",
                    note,
                )
            )
    return rows


def cli_rows(node: Node, runs: int) -> list[Row]:
    # Unpinned: a short command pinned to a core that other work happens to occupy
    # waits a whole time slice (bimodal samples); unpinned, it takes the idle core.
    env = node.cli_env()
    base = "python -c pass"
    status = "sovnet status (CLI round trip to sovnetd)"
    cases: dict[str, Callable[[], float]] = {
        base: lambda: timed([PYTHON, "-c", "pass"], env) * 1000,
        "sovnet --help": lambda: timed([SOVNET, "--help"], env) * 1000,
        status: lambda: timed([SOVNET, "status"], env) * 1000,
    }
    log(NAME, f"CLI start: {runs} runs each")
    samples = alternate(NAME, cases, runs)
    return [
        Row(NAME, base, base, samples[base], "ms", "the same interpreter: the floor; unpinned"),
        Row(NAME, "sovnet --help", base, samples["sovnet --help"], "ms"),
        Row(NAME, status, base, samples[status], "ms", f"sovnetd seeding {MODELS} models"),
    ]


def run(quick: bool) -> list[Row]:
    return measure(quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--load", nargs=3, metavar=("SOCKET", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.load:
        load_generator(args.load[0], float(args.load[1]), float(args.load[2]))
        return
    install_signal_handlers()
    rows = measure(args.quick)
    from suite import render_text

    print(render_text(rows))


if __name__ == "__main__":
    main()
