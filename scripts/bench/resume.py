"""Benchmark: how much of a model is downloaded again after sovnetd is killed.

One seeder, one client, over loopback. The client's sovnetd is killed with SIGKILL
when its fetch is about half done (as its status reports it), and started again;
the fetch resumes by itself. Printed: the model's size, how far the fetch was,
how much the client's resume data had recorded, how many bytes the restarted
daemon downloaded, and that as a share of the model (the design asks for less
than 25 % at about half of 1 GiB). The seeder's upload is limited so that "about
half" is a moment the status poll can catch (--rate-mib, 0 = unlimited).

    .venv/bin/python scripts/bench/resume.py [--size-mib 1024] [--at 0.5] [--rate-mib 200]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from typing import Any

from common import (
    MIB,
    Cluster,
    client_cpu,
    install_signal_handlers,
    log,
    make_gguf,
    scratch,
    server_cpu,
    wait_for,
)

NAME = "resume"


def fetches(status: dict[str, Any], cid: str, key: str) -> list[dict[str, Any]]:
    return [f for f in status.get(key, []) if f.get("cid") == cid]


def measure(size: int, at: float, rate: int) -> dict[str, float]:
    with scratch() as work, Cluster() as cluster:
        model_dir = work / "model"
        log(NAME, f"writing a {size / MIB:.0f} MiB GGUF ...")
        make_gguf(model_dir / "model.gguf", size)
        real_size = (model_dir / "model.gguf").stat().st_size
        seeder, client = cluster.node("seeder"), cluster.node("client")
        if rate:
            seeder.env["SOVNET_UPLOAD_RATE_LIMIT"] = str(rate)
        seeder.start(cpu=server_cpu())
        client.start(cpu=client_cpu())
        cid = seeder.publish(model_dir, "bench/resume")
        client.sovnet("peers", "add", seeder.control)

        command = subprocess.Popen(
            client.sovnet_argv("fetch", cid, "--json"),
            env=client.cli_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def far_enough() -> dict[str, Any] | None:
                found = fetches(client.api("/v1/status"), cid, "fetches")
                return found[0] if found and found[0].get("done", 0) >= at * real_size else None

            progress = wait_for(f"the fetch to reach {at:.0%}", far_enough, 300, every=0.05)
            assert client.process is not None
            client.process.send_signal(signal.SIGKILL)
            client.process.wait(30)
            client.process = None
        finally:
            command.wait(60)
        log(NAME, f"killed at {progress['done'] / real_size:.0%}; starting it again")

        started = time.perf_counter()
        client.start(cpu=client_cpu())

        def finished() -> dict[str, Any] | None:
            found = fetches(client.api("/v1/status"), cid, "recent_fetches")
            return found[-1] if found else None

        result = wait_for("the resumed fetch to finish", finished, 600, every=0.1)
        seconds = time.perf_counter() - started
        if "error" in result or client.sovnet("verify", cid, check=False).returncode != 0:
            raise RuntimeError(f"the resumed fetch did not end in a verified model: {result}")
    return {
        "size": real_size,
        "done_at_kill": progress["done"],
        "saved_at_kill": progress.get("resumable", 0),
        "downloaded_after": result["downloaded"],
        "seconds_after": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="model size [1024]")
    parser.add_argument("--at", type=float, default=0.5, help="kill at this share done [0.5]")
    parser.add_argument(
        "--rate-mib", type=int, default=200, help="seeder upload limit, MiB/s [200; 0 = none]"
    )
    args = parser.parse_args()
    install_signal_handlers()
    found = measure(args.size_mib * MIB, args.at, args.rate_mib * MIB)
    size = found["size"]
    again = found["done_at_kill"] + found["downloaded_after"] - size
    lines = [
        ("model", size),
        ("done when killed", found["done_at_kill"]),
        ("in resume data then", found["saved_at_kill"]),
        ("downloaded after restart", found["downloaded_after"]),
        ("downloaded twice", again),
    ]
    for label, value in lines:
        print(f"{label:26s}{value / MIB:10.1f} MiB {value / size:7.1%}")
    print(f"{'restart to verified model':26s}{found['seconds_after']:10.2f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
