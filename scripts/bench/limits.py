"""Benchmark: a rate limit changed on a running seeder, measured during one fetch.

Two nodes on 127.0.0.1 (peers on loopback are in the local class). Node a seeds a
GGUF model; node b fetches it. Unlimited, a loopback fetch is over in about a
second, so the fetch begins under a limit on a (`sovnet limits set --local-upload
LOW`), which is then raised to HIGH and lowered to LOW again on the running node,
no restart. Each phase's rate is the bytes b received over the phase (`sovnet
status`) divided by its length, leaving out its first second while the swarm
adapts. Baseline: the first LOW phase; the ratios should follow the limits.

    .venv/bin/python scripts/bench/limits.py [--size-mib 512] [--low-mib 8] [--high-mib 32]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import (
    Cluster,
    Node,
    client_cpu,
    make_gguf,
    server_cpu,
)

MIB = 1024 * 1024


def _received(b: Node, cid: str) -> int:
    for fetch in b.status().get("fetches", []):
        if fetch["cid"] == cid:
            return int(fetch.get("done") or 0)
    return -1  # done, or not begun


def _phase(b: Node, cid: str, seconds: float) -> float | None:
    """Bytes a second b received over ``seconds``, the first one left out."""
    time.sleep(1.0)
    start, at = _received(b, cid), time.monotonic()
    time.sleep(seconds - 1.0)
    end, took = _received(b, cid), time.monotonic() - at
    if start < 0 or end < 0:
        return None  # the fetch ended during the phase: make the model bigger
    return (end - start) / took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--low-mib", type=int, default=8)
    parser.add_argument("--high-mib", type=int, default=32)
    parser.add_argument("--phase", type=float, default=4.0, help="seconds a phase")
    options = parser.parse_args()
    with Cluster() as cluster:
        a, b = cluster.node("a"), cluster.node("b")
        a.start(cpu=server_cpu())
        b.start(cpu=client_cpu())
        model = cluster.root / "model"
        model.mkdir()
        make_gguf(model / "big.gguf", options.size_mib * MIB)
        cid = a.json("publish", model, "--name", "acme/big")["cid"]
        low, high = f"{options.low_mib}MiB", f"{options.high_mib}MiB"
        a.json("limits", "set", "--local-upload", low)
        b.sovnet("peers", "add", a.control)
        fetch = subprocess.Popen(
            b.sovnet_argv("fetch", cid, "--json"),
            env=b.cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while _received(b, cid) <= 0:
                time.sleep(0.05)
            first = _phase(b, cid, options.phase)
            a.json("limits", "set", "--local-upload", high)
            raised = _phase(b, cid, options.phase)
            a.json("limits", "set", "--local-upload", low)
            lowered = _phase(b, cid, options.phase)
        finally:
            fetch.kill()
        free = first
        rows = [
            (f"--local-upload {low} (set before the fetch)", first),
            (f"--local-upload {high} set on the running seeder", raised),
            (f"--local-upload {low} set again", lowered),
        ]
        print(f" #  case{' ' * 50}MiB/s   ratio  vs")
        for k, (case, rate) in enumerate(rows, 1):
            shown = f"{rate / MIB:7.1f}" if rate is not None else "  ended"
            ratio = f"{rate / free:6.2f}" if rate is not None and free else "     -"
            print(f"{k:2}  {case:<54}{shown}  {ratio}  {'#1' if k > 1 else '- '}")
        print(
            f"{options.size_mib} MiB model, 2 nodes on 127.0.0.1, phases of "
            f"{options.phase:g} s (first second left out); limits {low}/s, {high}/s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
