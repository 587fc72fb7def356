"""Benchmark: sovnetd's footprint at a mirror's scale.

(a) Memory: sovnetd's resident set (VmRSS, and its peak VmHWM, from
    /proc/PID/status) while seeding 5,000 small models, against an idle sovnetd
    (empty store) and against the floor any libtorrent-based Python daemon pays:
    a bare Python process that imports libtorrent and creates a session; and
    while seeding a few models of realistic size (4 GiB each, sparse files: their
    piece layers are what grows with size). Also the daemon's start time until its
    API answers, for each. The memory is read once the models the swarm may hold
    at once (active_seeds) are in it.
(b) Latency of the local status API, GET /v1/status on the Unix socket, under an
    open-loop load of 200 requests a second: requests are sent at fixed times
    whatever the answers do, and each latency is measured from the time the
    request was *due*, so a server that falls behind is charged for the queue it
    builds (no coordinated omission). Each request opens its own connection, as
    each `sovnet` command does. Baseline: the same load against a trivial aiohttp
    app on a Unix socket that returns a fixed copy of sovnetd's status JSON (the
    cost of aiohttp itself). Server on one core, load generator on the other.
(c) A Prometheus scrape, GET /metrics, against GET /healthz on the same listener
    (an answer with no work behind it).
(d) `sovnet --help` and `sovnet status` wall time against `python -c pass` with
    the same interpreter (the floor of any Python CLI).

The models are published by sovnet's own publish function in this process, not
by 5,000 `sovnet publish` commands (each a Python start: 20 minutes on 2 cores);
the daemon under test is started afterwards and reads the store as any would.

    .venv/bin/python scripts/bench/footprint.py [--quick] [--models N]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common import (
    GIB,
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
MODELS = 5000
LARGE_MODELS = 8
LARGE_BYTES = 4 * GIB  # a 7B model quantised to 4 bits
SCRAPES = 20  # a round
RATE = 200.0  # requests a second
REQUEST_TIMEOUT = 5.0
ACTIVE_SEEDS = 1000  # sovnetd's default: seeded models in the swarm at once

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
    """Start the daemon, wait for it to seed ``models`` models with as many in the
    swarm as it may hold; its memory and how long the start took (until its API
    answered)."""
    started = time.perf_counter()
    node.start(cpu=server_cpu())
    seconds = time.perf_counter() - started
    try:
        status = node.api("/v1/status")
        if status["seeding"] != models:
            raise RuntimeError(f"{node.name} seeds {status['seeding']} models, not {models}")
        joined = min(models, ACTIVE_SEEDS)
        wait_for(
            f"{node.name}'s torrents to join the swarm",
            lambda: node.api("/v1/status").get("in_swarm", 0) >= joined,
            120,
        )
        return settled_memory(node.pid), seconds
    finally:
        node.stop()


def publish_many(node: Node, root: Path, count: int) -> None:
    """``count`` distinct small models, published into ``node``'s store (its daemon
    stopped) by sovnet's publish function, as `sovnet publish` would."""
    from sovnet.store.keyfiles import NodeFiles
    from sovnet.store.publish import publish
    from sovnet.store.store import Store

    store = Store(node.state).init()
    key = NodeFiles(node.state).load_key()
    for index in range(count):
        model = make_small_model(root / f"m{index:05d}", seed=index)
        publish(store, key, model, name=f"bench/small-{index:05d}", copy=True)
        shutil.rmtree(model)
        if index % 1000 == 999:
            log(NAME, f"  {index + 1} published")


def publish_large(node: Node, root: Path, count: int) -> None:
    """``count`` models of LARGE_BYTES each: a safetensors file whose tensor data is
    a hole (sparse: no disk taken; hashed as zeros), distinct by its header."""
    from sovnet.store.keyfiles import NodeFiles
    from sovnet.store.publish import publish
    from sovnet.store.store import Store

    store = Store(node.state).init()
    key = NodeFiles(node.state).load_key()
    for index in range(count):
        directory = root / f"large{index}"
        directory.mkdir(parents=True)
        header = json.dumps(
            {
                "__metadata__": {"seed": str(index)},
                "w": {"dtype": "U8", "shape": [LARGE_BYTES], "data_offsets": [0, LARGE_BYTES]},
            }
        ).encode()
        header += b" " * ((-len(header)) % 8)
        with open(directory / "model.safetensors", "wb") as handle:
            handle.write(len(header).to_bytes(8, "little") + header)
            handle.truncate(8 + len(header) + LARGE_BYTES)
        publish(store, key, directory, name=f"bench/large-{index}")  # hard-linked
        log(NAME, f"  large model {index + 1}/{count} published")


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


def measure(quick: bool, models: int) -> list[Row]:
    rounds = 3 if quick else 5
    load_seconds = 5.0 if quick else 10.0
    cli_runs = 30 if quick else 50
    large_count = 2 if quick else LARGE_MODELS
    rows: list[Row] = []
    with Cluster() as cluster:
        mirror = cluster.node("mirror")
        empty = cluster.node("empty")
        large = cluster.node("large")
        log(NAME, f"publishing {models} small models ...")
        started = time.monotonic()
        publish_many(mirror, cluster.root / "models", models)
        log(NAME, f"published in {time.monotonic() - started:.0f} s")
        log(NAME, f"publishing {large_count} models of {LARGE_BYTES // GIB} GiB (sparse) ...")
        publish_large(large, cluster.root / "large", large_count)

        # (a) memory and start time, alternating the processes each round.
        memory: dict[str, list[dict[str, int]]] = {k: [] for k in ("floor", "empty", "mirror")}
        memory["large"] = []
        starts: dict[str, list[float]] = {"empty": [], "mirror": [], "large": []}

        def floor_case() -> float:
            memory["floor"].append(floor_memory(cluster.root))
            return 0.0

        def daemon_case(node: Node, count: int, key: str) -> Callable[[], float]:
            def case() -> float:
                values, seconds = daemon_memory(node, count)
                memory[key].append(values)
                starts[key].append(seconds)
                return seconds

            return case

        alternate(
            NAME,
            {
                "floor": floor_case,
                "empty": daemon_case(empty, 0, "empty"),
                "mirror": daemon_case(mirror, models, "mirror"),
                "large": daemon_case(large, large_count, "large"),
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
        empty_rss = median(mib("empty", "VmRSS"))
        per_model = (median(mib("mirror", "VmRSS")) - empty_rss) / models
        per_large = (median(mib("large", "VmRSS")) - empty_rss) / large_count
        joined = min(models, ACTIVE_SEEDS)
        start_base = "sovnetd start, empty store"
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
                f"sovnetd seeding {models} models, VmRSS",
                floor_case_name,
                mib("mirror", "VmRSS"),
                "MiB",
                f"{joined} in the swarm; {per_model * 1024:.0f} KiB per model over the empty store",
            ),
            Row(
                NAME,
                f"sovnetd seeding {models} models, VmHWM (peak)",
                floor_case_name,
                mib("mirror", "VmHWM"),
                "MiB",
            ),
            Row(
                NAME,
                f"sovnetd seeding {large_count} models of {LARGE_BYTES // GIB} GiB, VmRSS",
                floor_case_name,
                mib("large", "VmRSS"),
                "MiB",
                f"{per_large * 1024:.0f} KiB per model over the empty store",
            ),
            Row(NAME, start_base, start_base, starts["empty"], "s", "until the API answers"),
            Row(
                NAME,
                f"sovnetd start, {models} models",
                start_base,
                starts["mirror"],
                "s",
                "the API answers while the torrents join the swarm",
            ),
            Row(
                NAME,
                f"sovnetd start, {large_count} models of {LARGE_BYTES // GIB} GiB",
                start_base,
                starts["large"],
                "s",
            ),
        ]

        # (b) status latency under load, (c) scrapes and (d) CLI wall times.
        large.start(cpu=server_cpu())
        try:
            rows += scrape_rows(large, f"{large_count} models of {LARGE_BYTES // GIB} GiB", rounds)
        finally:
            large.stop()
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
                rows += latency_rows(mirror.socket, fixed_socket, rounds, load_seconds, models)
            finally:
                stop(fixed)
            rows += scrape_rows(mirror, f"{models} models", rounds)
            rows += cli_rows(mirror, cli_runs, models)
        finally:
            mirror.stop()
    return rows


def _get(address: str, path: str) -> float:
    """Seconds for one GET on a new connection, the whole body read (as Prometheus
    does: a scrape is a new connection unless kept alive)."""
    host, port = address.rsplit(":", 1)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"GET {path} answered {answer.status}")
    finally:
        connection.close()
    return time.perf_counter() - started


def scrape_rows(node: Node, label: str, rounds: int) -> list[Row]:
    address = node.api("/v1/status")["metrics"]
    wait_for(  # the store's size is measured off the loop, once started
        "the first measure of the store",
        lambda: b"sovnet_store_bytes " in _scrape_body(address),
        30,
    )
    log(NAME, f"/metrics of {label}: {rounds * SCRAPES} scrapes, each beside a /healthz")
    samples: dict[str, list[float]] = {"/healthz": [], "/metrics": []}
    _get(address, "/metrics")  # not recorded: first-time set-up of the collectors
    for number in range(rounds * SCRAPES):
        # Alternating which goes first, so neither always follows the other.
        order = ("/healthz", "/metrics") if number % 2 else ("/metrics", "/healthz")
        for path in order:
            samples[path].append(_get(address, path) * 1000)
    base = f"GET /healthz ({label})"
    scrapes = samples["/metrics"]
    return [
        Row(NAME, base, base, samples["/healthz"], "ms", "the same listener, no work behind it"),
        Row(
            NAME,
            f"GET /metrics, a scrape ({label})",
            base,
            scrapes,
            "ms",
            f"p99 {percentile(scrapes, 99):.1f} ms, worst {max(scrapes):.1f} ms of {len(scrapes)}",
        ),
    ]


def _scrape_body(address: str) -> bytes:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/metrics")
        return connection.getresponse().read()
    finally:
        connection.close()


def latency_rows(
    sovnet_socket: Path, fixed_socket: Path, rounds: int, seconds: float, models: int
) -> list[Row]:
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
        ("sovnetd", f"sovnetd ({models} models)"),
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


def cli_rows(node: Node, runs: int, models: int) -> list[Row]:
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
        Row(NAME, status, base, samples[status], "ms", f"sovnetd seeding {models} models"),
    ]


def run(quick: bool) -> list[Row]:
    return measure(quick, MODELS)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", type=int, default=MODELS, help=f"small models [{MODELS}]")
    parser.add_argument(
        "--load", nargs=3, metavar=("SOCKET", "RATE", "SECONDS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.load:
        load_generator(args.load[0], float(args.load[1]), float(args.load[2]))
        return
    install_signal_handlers()
    rows = measure(args.quick, args.models)
    from suite import render_text

    print(render_text(rows))


if __name__ == "__main__":
    main()
