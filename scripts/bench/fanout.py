"""Benchmark: one seeder behind a limited uplink, N clients that all want the model.

This is the case a swarm exists for. The topology is built from network
namespaces on this machine: a seeder namespace whose egress is shaped with
``tc`` (token bucket, 400 Mbit/s by default), N client namespaces with
unshaped links, all joined by a bridge in a switch namespace. Each case starts
all N clients at once and measures the makespan (until the last client holds
the model) and the bytes that left the seeder's interface (its tx counter, so
TLS and TCP overhead count for sovnet as for HTTP):

* sovnet: a sovnetd per namespace; every client runs ``sovnet fetch CID``,
  which returns once the model is verified and committed. Clients share
  pieces with each other.
* HTTP: nginx in the seeder namespace; every client runs ``curl`` (download
  only, no verification: the baseline is given that advantage).

Every namespace, interface and process is removed at the end, on failure too.
Needs root (``ip netns``). Not a test: nothing here passes or fails.

    .venv/bin/python scripts/bench/fanout.py [--quick] [--clients 4,8] [--mbit 400]
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "svf"  # namespaces svf-sw, svf-0 (seeder), svf-1..N
SUBNET = "10.77.0"
HTTP_PORT = 8080
MIB = 1024 * 1024


def sh(
    *argv: str, ns: str | None = None, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    return subprocess.run(full, check=check, capture_output=True, text=True, **kw)


@dataclass
class Topology:
    clients: int
    mbit: int
    namespaces: list[str] = field(default_factory=list)

    def ip(self, index: int) -> str:
        return f"{SUBNET}.{index + 1}"

    def ns(self, index: int) -> str:
        return f"{PREFIX}-{index}"

    def up(self) -> None:
        self.down()  # a previous run that was killed hard
        switch = f"{PREFIX}-sw"
        sh("ip", "netns", "add", switch)
        self.namespaces.append(switch)
        sh("ip", "link", "add", "br0", "type", "bridge", ns=switch)
        sh("ip", "link", "set", "br0", "up", ns=switch)
        for index in range(self.clients + 1):
            ns = self.ns(index)
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            inside, outside = f"{PREFIX}{index}i", f"{PREFIX}{index}o"
            sh("ip", "link", "add", inside, "type", "veth", "peer", "name", outside)
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "link", "set", outside, "netns", switch)
            sh("ip", "link", "set", outside, "master", "br0", ns=switch)
            sh("ip", "link", "set", outside, "up", ns=switch)
            sh("ip", "link", "set", "lo", "up", ns=ns)
            sh("ip", "addr", "add", f"{self.ip(index)}/24", "dev", inside, ns=ns)
            sh("ip", "link", "set", inside, "up", ns=ns)
        # The seeder's uplink: what leaves its interface is shaped. The bucket
        # holds a few milliseconds of traffic, as a real link's buffers would.
        sh(
            "tc", "qdisc", "add", "dev", f"{PREFIX}0i", "root", "tbf",
            "rate", f"{self.mbit}mbit", "burst", "256kb", "latency", "20ms",
            ns=self.ns(0),
        )  # fmt: skip

    def seeder_tx(self) -> int:
        out = sh("cat", f"/sys/class/net/{PREFIX}0i/statistics/tx_bytes", ns=self.ns(0))
        return int(out.stdout)

    def down(self) -> None:
        listed = sh("ip", "netns", "list", check=False).stdout.split()
        for name in listed:
            if name.startswith(f"{PREFIX}-"):
                for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


def _clients_in_parallel(
    topology: Topology, argvs: dict[int, list[str]], env: dict[str, str] | None = None
) -> float:
    """Start one command per client namespace at once; the makespan in seconds."""
    started = time.monotonic()
    running = {
        index: subprocess.Popen(
            ["ip", "netns", "exec", topology.ns(index), *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        for index, argv in argvs.items()
    }
    last = started
    for index, process in running.items():
        _, err = process.communicate(timeout=900)
        if process.returncode:
            raise RuntimeError(f"client {index} failed: {err.decode()[-500:]}")
        last = max(last, time.monotonic())
    return last - started


def sovnet_round(topology: Topology, nodes: list[Any], cid: str) -> tuple[float, int]:
    before = topology.seeder_tx()
    argvs = {
        i: nodes[i].sovnet_argv("--state-dir", nodes[i].state, "fetch", cid)
        for i in range(1, topology.clients + 1)
    }
    makespan = _clients_in_parallel(topology, argvs)
    uploaded = topology.seeder_tx() - before
    for index in argvs:
        nodes[index].remove(cid)
    return makespan, uploaded


@contextlib.contextmanager
def nginx(topology: Topology, root: Path, directory: Path) -> Iterator[None]:
    """nginx in the seeder's namespace, with the fetch benchmark's configuration."""
    from fetch import NGINX_CONF, nginx_binary  # type: ignore[import-not-found]

    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/bench/run.sh installs it)")
    work = root / "nginx"
    work.mkdir()
    conf = work / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            user="user root;\n", work=work, host=topology.ip(0), port=HTTP_PORT, root=directory
        )
    )
    process = subprocess.Popen(
        ["ip", "netns", "exec", topology.ns(0), binary, "-p", str(work), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while sh("curl", "-sf", "-o", "/dev/null", f"http://{topology.ip(0)}:{HTTP_PORT}/",
                 ns=topology.ns(1), check=False).returncode not in (0, 22):  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not start")
            time.sleep(0.1)
        yield
    finally:
        process.terminate()
        process.wait(10)


def http_round(topology: Topology, root: Path, name: str) -> tuple[float, int]:
    before = topology.seeder_tx()
    url = f"http://{topology.ip(0)}:{HTTP_PORT}/{name}"
    argvs = {
        i: ["curl", "-sSf", "-o", str(root / f"http-{i}.bin"), url]
        for i in range(1, topology.clients + 1)
    }
    makespan = _clients_in_parallel(topology, argvs)
    uploaded = topology.seeder_tx() - before
    for index in argvs:
        (root / f"http-{index}.bin").unlink(missing_ok=True)
    return makespan, uploaded


@dataclass
class Result:
    clients: int
    size: int
    sovnet: list[tuple[float, int]] = field(default_factory=list)
    http: list[tuple[float, int]] = field(default_factory=list)


def measure(clients: int, size_mib: int, rounds: int, mbit: int) -> Result:
    sys.path.insert(0, str(Path(__file__).parent))
    from common import Cluster, make_gguf  # type: ignore[import-not-found]

    topology = Topology(clients, mbit)
    cleanup = atexit.register(topology.down)
    try:
        topology.up()
        with Cluster("fanout") as cluster:
            root = cluster.root
            root.chmod(0o711)  # nginx's workers must reach the model
            model = root / "model"
            model.mkdir(mode=0o755)
            make_gguf(model / "model.gguf", size_mib * MIB)
            size = (model / "model.gguf").stat().st_size
            nodes = [cluster.node(f"n{i}") for i in range(clients + 1)]
            for index, node in enumerate(nodes):
                node.env["SOVNET_STALL_TIMEOUT"] = "60"
                node.start(host=topology.ip(index), netns=topology.ns(index))
            for node in nodes[1:]:
                node.sovnet("peers", "add", nodes[0].control)
            cid = nodes[0].publish(model, "bench/fanout", "--copy")
            result = Result(clients, size)
            with nginx(topology, root, model):
                for _ in range(rounds):
                    result.sovnet.append(sovnet_round(topology, nodes, cid))
                    result.http.append(http_round(topology, root, "model.gguf"))
                    print(
                        f"  N={clients}: sovnet {result.sovnet[-1][0]:.1f} s, "
                        f"HTTP {result.http[-1][0]:.1f} s",
                        file=sys.stderr,
                    )
            return result
    finally:
        topology.down()
        atexit.unregister(cleanup)


def run(quick: bool) -> list[Any]:
    """The suite's interface: rows of makespan and seeder upload for N = 4 and 8."""
    from common import Row  # type: ignore[import-not-found]

    if os.geteuid() != 0 or shutil.which("tc") is None:
        return [Row("fanout", "skipped", "skipped", [], "s", "needs root, ip and tc (iproute2)")]
    rows = []
    # 256 MiB even when quick: with 4 MiB pieces (the publish rule), fewer pieces
    # than that leave too little to share and measure the start-up, not the swarm.
    size_mib, rounds = (256, 1) if quick else (256, 5)
    for clients in (4, 8):
        result = measure(clients, size_mib, rounds, 400)
        label = f"N={clients}, {size_mib} MiB, seeder uplink 400 Mbit/s"
        http_case = f"HTTP (nginx + curl) makespan, {label}"
        sovnet_case = f"sovnet fetch makespan, {label}"
        rows.append(Row("fanout", http_case, http_case, [m for m, _ in result.http], "s"))
        rows.append(Row("fanout", sovnet_case, http_case, [m for m, _ in result.sovnet], "s"))
        http_up = f"HTTP seeder upload, N={clients}"
        rows.append(
            Row("fanout", http_up, http_up, [u / result.size for _, u in result.http], "x model")
        )
        rows.append(
            Row(
                "fanout",
                f"sovnet seeder upload, N={clients}",
                http_up,
                [u / result.size for _, u in result.sovnet],
                "x model",
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", default="4,8")
    parser.add_argument("--size-mib", type=int)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--mbit", type=int, default=400)
    args = parser.parse_args()
    size = args.size_mib or 256
    rounds = args.rounds or (1 if args.quick else 5)
    print(
        f"{'N':>3} {'case':8} {'makespan s (median)':>20} "
        f"{'seeder upload (x model)':>24} {'ratio':>6}"
    )
    for clients in (int(c) for c in args.clients.split(",")):
        result = measure(clients, size, rounds, args.mbit)
        http_m = statistics.median(m for m, _ in result.http)
        for name, samples in (("HTTP", result.http), ("sovnet", result.sovnet)):
            makespan = statistics.median(m for m, _ in samples)
            upload = statistics.median(u for _, u in samples) / result.size
            print(f"{clients:>3} {name:8} {makespan:20.2f} {upload:24.2f} {makespan / http_m:6.2f}")


if __name__ == "__main__":
    main()
