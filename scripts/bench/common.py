"""What every benchmark of the suite shares: the result row, statistics, timing,
CPU pinning, model makers, and real sovnet nodes on 127.0.0.1.

A benchmark module exposes ``run(quick: bool) -> list[Row]``; suite.py runs it
and prints the table. Every case runs as a whole command in its own process,
as a user would run it. Cases alternate within each round (:func:`alternate`),
so that the noise of this shared machine falls on all of them alike, and each
row is compared with a baseline measured in the same run.

Processes started here are always stopped: :func:`spawn` registers them, each
in its own session so that its children (publish workers, nginx workers) go
with it, and :func:`stop_all` runs at exit and on SIGTERM (which
:func:`install_signal_handlers` turns into KeyboardInterrupt so that every
``finally`` runs). Nothing here is a test: nothing passes or fails.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
# The interpreter running the suite is the project's venv (run.sh makes sure):
# its sovnet and sovnetd are the ones measured.
BIN = Path(sys.executable).parent
SOVNET = BIN / "sovnet"
SOVNETD = BIN / "sovnetd"
PYTHON = sys.executable
MIB = 1024 * 1024
GIB = 1024 * MIB

# Every wait is bounded; these are generous for a loaded 2-core machine.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 20.0
COMMAND_TIMEOUT = 600.0


# -- results --------------------------------------------------------------------------


@dataclass
class Row:
    """One measured case. ``baseline`` names the case (of the same benchmark) it is
    compared with; a baseline row names itself. Lower is better for every unit the
    suite uses (seconds, milliseconds, MiB), so ratio = median / baseline median."""

    benchmark: str
    case: str
    baseline: str
    samples: list[float]
    unit: str
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return median(self.samples)

    def to_json(self) -> dict[str, Any]:
        low, high = spread(self.samples)
        return {
            **asdict(self),
            "median": self.median,
            "min": low,
            "max": high,
            "iqr": iqr(self.samples),
            "n": self.n,
        }


def median(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else math.nan


def spread(values: Sequence[float]) -> tuple[float, float]:
    """(min, max): with 3-5 samples a range says more than an IQR."""
    finite = [v for v in values if math.isfinite(v)]
    return (min(finite), max(finite)) if finite else (math.nan, math.nan)


def iqr(values: Sequence[float]) -> tuple[float, float]:
    finite = sorted(v for v in values if math.isfinite(v))
    if len(finite) < 2:
        return spread(finite)
    quartiles = statistics.quantiles(finite, n=4, method="inclusive")
    return quartiles[0], quartiles[2]


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by nearest rank: an observed value, no smoothing."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rate_note(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e9:.2f} GB/s" if seconds > 0 else ""


def log(benchmark: str, message: str) -> None:
    print(f"[{benchmark}] {message}", file=sys.stderr, flush=True)


# -- running things ---------------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without sovnet's own variables (a user's SOVNET_SOCKET must not
    point a benchmark node at their daemon), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SOVNET_", "STATE_DIR"))}
    env.update(extra)
    return env


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(argv: Sequence[str | os.PathLike[str]], cpu: int | None) -> list[str]:
    """``argv`` run on one CPU with taskset, when there is one to pin to.

    A client and a server sharing one core here run up to 4x slower than on two
    (design notes), and the scheduler moves them around between rounds: pinning
    each side to its own core makes rounds comparable. Without taskset, or with a
    single CPU, the command runs unpinned."""
    command = [str(a) for a in argv]
    if cpu is None or shutil.which("taskset") is None or len(cpus()) < 2:
        return command
    return ["taskset", "-c", str(cpu), *command]


def client_cpu() -> int | None:
    """The core for the side that downloads (clients, their verification)."""
    available = cpus()
    return available[0] if len(available) >= 2 else None


def server_cpu() -> int | None:
    """The core for the side that serves (seeders, nginx, the daemon under load)."""
    available = cpus()
    return available[-1] if len(available) >= 2 else None


def pinning_note() -> str:
    if shutil.which("taskset") is None or len(cpus()) < 2:
        return "unpinned (no taskset or one CPU)"
    return f"client on CPU {client_cpu()}, server on CPU {server_cpu()}"


def run_command(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    cpu: int | None = None,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion, capturing its output; raise with its stderr."""
    command = pin(argv, cpu)
    result = subprocess.run(
        command,
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-2000:]}"
        )
    return result


def timed(
    argv: Sequence[str | os.PathLike[str]],
    env: Mapping[str, str] | None = None,
    *,
    cpu: int | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> float:
    """Wall time of a whole command (process start, imports and exit included), in
    seconds. Output goes to /dev/null: a terminal or pipe reader must not pace it.
    Errors are kept (a failed command raises with its stderr)."""
    command = pin(argv, cpu)
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        process = subprocess.Popen(
            command,
            env=dict(env) if env is not None else None,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        # wait() without a timeout blocks in waitpid and returns as the command ends;
        # with one, Python polls every 50 ms and every short command rounds up to that.
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        try:
            code = process.wait()
        finally:
            watchdog.cancel()
        elapsed = time.perf_counter() - start
        if code != 0:
            errors.seek(0)
            text = errors.read().decode(errors="replace")
            raise RuntimeError(f"{' '.join(command)} exited {code}:\n{text[-2000:]}")
    return elapsed


Case = Callable[[], "float | Mapping[str, float]"]


def alternate(
    benchmark: str, cases: Mapping[str, Case], rounds: int, *, warmup: bool = True
) -> dict[str, list[float]]:
    """Run every case once per round, alternating, and collect the samples.

    A case returns its time, or a mapping of several measurements (say, a download
    and download+verify) keyed by row name. The order rotates each round so no case
    always follows the same one (a case that leaves dirty pages behind would
    otherwise always tax the same neighbour). A warm-up round, not recorded, pays
    first-run costs (page cache, lazy imports, bytecode compiling)."""
    samples: dict[str, list[float]] = {}
    names = list(cases)
    if warmup:
        for name in names:
            cases[name]()
    for number in range(rounds):
        shift = number % len(names)
        for name in names[shift:] + names[:shift]:
            value = cases[name]()
            measured = {name: value} if isinstance(value, (int, float)) else value
            for key, seconds in measured.items():
                samples.setdefault(key, []).append(float(seconds))
        log(benchmark, f"round {number + 1}/{rounds} done")
    return samples


def drop_caches() -> str | None:
    """Drop the page cache; None if it worked, else why not (for the table's note)."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
    except OSError as exc:
        return f"cannot drop the page cache here ({exc.strerror})"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], Any], timeout: float = START_TIMEOUT, every: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy; raise after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# -- processes that must not outlive the benchmark ---------------------------------------

_LIVE: set[subprocess.Popen[bytes]] = set()


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    cpu: int | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-lived process in its own session (so its children can be stopped
    with it) and register it to be stopped at exit."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log_path, "ab")) if log_path else subprocess.DEVNULL
        process = subprocess.Popen(
            pin(argv, cpu),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    _LIVE.add(process)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM the process (then its whole session if it lingers); its exit code."""
    try:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        # Children it left behind in its session (a publish worker, say).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.returncode
    finally:
        _LIVE.discard(process)


def stop_all() -> None:
    for process in list(_LIVE):
        with contextlib.suppress(Exception):
            stop(process, timeout=5)


atexit.register(stop_all)


def install_signal_handlers() -> None:
    """SIGTERM (the suite's time limit, a user's kill) and SIGINT raise
    KeyboardInterrupt, so that every ``finally`` (daemons, nginx, namespaces, temp
    dirs) runs. Only the first: a second signal (Ctrl-C in a terminal reaches the
    suite and the benchmark, and the suite then sends SIGTERM too) must not break
    off the clean-up the first one started."""
    interrupted = False

    def interrupt(signum: int, frame: object) -> None:
        nonlocal interrupted
        if interrupted:
            print(f"signal {signum}: already cleaning up", file=sys.stderr, flush=True)
            return
        interrupted = True
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


@contextlib.contextmanager
def scratch(prefix: str = "svb-") -> Iterator[Path]:
    """A temp dir under /tmp with a short path (Unix socket paths are limited to 107
    bytes), removed at the end whatever happened, read-only store dirs included."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        yield root
    finally:
        remove_tree(root)


def remove_tree(root: Path) -> None:
    # The store makes blobs and model dirs read-only; make dirs writable to delete.
    for path in root.rglob("*"):
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.chmod(0o700)
    shutil.rmtree(root, ignore_errors=True)


def vm_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... of a process from /proc/PID/status, in KiB."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key.startswith("Vm") or key.startswith("Rss"):
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[key] = int(parts[0])
    return values


# -- models ------------------------------------------------------------------------------


def make_gguf(path: Path, size: int, seed: int = 0) -> None:
    """A GGUF with a realistic header (32k-token vocabulary) and ``size`` bytes of F16
    data (random, so no layer of the stack can compress or deduplicate it)."""
    import gguf
    import numpy as np

    rows = size // (4096 * 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_file_type(1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"tok{i}" for i in range(32_000)])
    writer.add_token_scores([0.0] * 32_000)
    writer.add_tensor_info("token_embd.weight", [rows, 4096], np.dtype(np.float16), rows * 4096 * 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    rng = np.random.default_rng(seed)
    with open(path, "ab") as handle:
        pad = (-handle.tell()) % 32
        handle.write(b"\0" * pad)
        block = 64 * MIB
        remaining = rows * 4096 * 2
        while remaining:
            n = min(block, remaining)
            handle.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            remaining -= n


def make_small_model(directory: Path, seed: int, weight_bytes: int = 64 * 1024) -> Path:
    """A config.json and a ``weight_bytes`` safetensors file (one F32 tensor), distinct
    per ``seed``. Written by hand: the safetensors format is a length-prefixed JSON
    header then raw data, and this keeps 200 models quick to make."""
    import numpy as np

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": "bench", "seed": seed}))
    count = weight_bytes // 4
    header = json.dumps(
        {"w": {"dtype": "F32", "shape": [count], "data_offsets": [0, count * 4]}}
    ).encode()
    header += b" " * ((-len(header)) % 8)
    data = np.random.default_rng(seed).standard_normal(count).astype("<f4").tobytes()
    with open(directory / "model.safetensors", "wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header + data)
    return directory


# -- sovnet nodes --------------------------------------------------------------------------


@dataclass
class Node:
    """One sovnet node: a state dir, the CLI pointed at it, and its daemon."""

    name: str
    state: Path
    process: subprocess.Popen[bytes] | None = None
    cpu: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"  # where its daemon listens

    @property
    def log_path(self) -> Path:
        return self.state.parent / f"{self.name}.log"

    def cli_env(self) -> dict[str, str]:
        return clean_env(SOVNET_STATE_DIR=str(self.state), **self.env)

    def sovnet_argv(self, *args: str | os.PathLike[str]) -> list[str]:
        return [str(SOVNET), *map(str, args)]

    def sovnet(
        self,
        *args: str | os.PathLike[str],
        check: bool = True,
        cpu: int | None = None,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        return run_command(
            self.sovnet_argv(*args), env=self.cli_env(), cpu=cpu, timeout=timeout, check=check
        )

    def json(self, *args: str | os.PathLike[str], **kwargs: Any) -> Any:
        return json.loads(self.sovnet(*args, "--json", **kwargs).stdout)

    # -- the daemon --

    def start(
        self,
        cpu: int | None = None,
        log_level: str = "warning",
        *,
        host: str = "127.0.0.1",
        netns: str | None = None,
    ) -> Node:
        """Start sovnetd listening on ``host`` (ports the kernel picks), inside the
        network namespace ``netns`` if given (its API socket is a file: reachable
        from here all the same)."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"sovnetd {self.name} is already running")
        self.cpu = cpu
        self.host = host
        inside = ["ip", "netns", "exec", netns] if netns else []
        self.process = spawn(
            [
                *inside,
                SOVNETD,
                "--state-dir",
                self.state,
                "--swarm-listen",
                f"{host}:0",
                "--control-listen",
                f"{host}:0",
                "--metrics-listen",
                f"{host}:0",
                "--log-level",
                log_level,
            ],
            log_path=self.log_path,
            env=self.cli_env(),
            cpu=cpu,
        )
        wait_for(f"sovnetd {self.name} to be ready", self._ready, START_TIMEOUT, every=0.02)
        return self

    def _ready(self) -> bool:
        """Whether the API socket accepts connections: sovnetd binds it last, once the
        store is open, every stored model is seeding and the swarm listens. A plain
        connect, not a `sovnet status` (a whole Python process) per poll, which would
        compete with the starting daemon for the CPU and blur its start time."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"sovnetd {self.name} exited:\n{self.log_text()[-3000:]}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(2.0)
            try:
                probe.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError(f"sovnetd {self.name} is not running")
        return self.process.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def status(self) -> dict[str, Any]:
        value: dict[str, Any] = self.json("status", timeout=30)
        return value

    def api(self, path: str) -> Any:
        """GET ``path`` of the daemon's local API, straight over its Unix socket (no
        CLI process: cheap enough to poll)."""
        connection = http.client.HTTPConnection("localhost", timeout=30)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        try:
            sock.connect(str(self.socket))
            connection.sock = sock
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"GET {path}: HTTP {response.status}: {body[:200]!r}")
            return json.loads(body)
        finally:
            connection.close()
            sock.close()

    def seeding_peers(self, cid: str) -> int:
        """How many peers this node's swarm of ``cid`` is connected to now."""
        return int(self.api("/v1/models")["seeding"][cid]["peers"])

    @property
    def control(self) -> str:
        return f"{self.host}:{self.status()['control_port']}"

    @property
    def socket(self) -> Path:
        return self.state / "sovnetd.sock"

    # -- the store --

    def key_id(self) -> str:
        return str(self.json("key", "show")["key_id"])

    def publish(self, path: Path, name: str, *extra: str) -> str:
        """Publish (through the daemon when it runs); the CID."""
        return str(self.json("publish", path, "--name", name, *extra)["cid"])

    def fetch_timed(self, cid: str, cpu: int | None = None) -> dict[str, float]:
        """``sovnet fetch CID --json``: its wall time ("total", from the command's start
        to a verified model in the store: the command returns only after verification
        and commit) and, from its event stream, when the last byte had arrived
        ("transfer") and what came after ("verify")."""
        command = pin(self.sovnet_argv("fetch", cid, "--json"), cpu)
        start = time.perf_counter()
        transferred = math.nan
        result: dict[str, Any] = {}
        with subprocess.Popen(
            command,
            env=self.cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as process:
            # Reading its output blocks: a timer bounds the whole command instead.
            watchdog = threading.Timer(COMMAND_TIMEOUT, process.kill)
            watchdog.start()
            try:
                assert process.stdout is not None
                for line in process.stdout:
                    event = json.loads(line)
                    kind = event.get("event")
                    if kind == "progress" and math.isnan(transferred):
                        if event.get("total") and event.get("done", 0) >= event["total"]:
                            transferred = time.perf_counter() - start
                    elif kind == "result":
                        result = event
                code = process.wait(COMMAND_TIMEOUT)
            finally:
                watchdog.cancel()
                if process.poll() is None:
                    process.kill()
            total = time.perf_counter() - start
            errors = process.stderr.read() if process.stderr else ""
        if code != 0 or not result:
            raise RuntimeError(f"sovnet fetch {cid} exited {code}:\n{errors[-2000:]}")
        if result.get("already_here"):
            raise RuntimeError(f"sovnet fetch {cid}: already here, nothing was measured")
        return {"total": total, "transfer": transferred, "verify": total - transferred}

    def remove(self, cid: str) -> None:
        self.sovnet("rm", cid)


class Cluster:
    """sovnet nodes in one network, made the way a user makes them: ``key gen``; the
    first node creates the network, the others ``request`` / ``invite`` / ``join``
    and trust the first node's publisher key. Use as a context manager: every
    daemon is stopped and the state removed at the end, whatever happened."""

    def __init__(self, network: str = "benchnet") -> None:
        self.network = network
        self.root = Path(tempfile.mkdtemp(prefix="svb-", dir="/tmp"))
        self.nodes: list[Node] = []

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):  # stop the others all the same
                node.stop()
        remove_tree(self.root)

    def node(self, name: str) -> Node:
        node = Node(name, self.root / name)
        node.sovnet("key", "gen")
        owner = self.nodes[0] if self.nodes else None
        if owner is None:
            node.sovnet("network", "create", self.network, "--node-name", name)
        else:
            request = self.root / f"{name}.req"
            invite = self.root / f"{name}.invite"
            node.sovnet("network", "request", "--node-name", name, "-o", request)
            # With its daemon running, the owner would put its host name in the
            # invite as a peer; name 127.0.0.1 so traffic stays on loopback.
            peer = ["--peer", owner.control] if owner.running else []
            owner.sovnet("network", "invite", request, "-o", invite, *peer)
            node.sovnet("network", "join", invite)
            node.sovnet("trust", "add", owner.key_id(), "--name", owner.name)
        self.nodes.append(node)
        return node
