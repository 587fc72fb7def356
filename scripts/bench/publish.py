"""Benchmark: `sovnet publish` of a single-file GGUF model against libtorrent's own
BitTorrent v2 hashing (create_torrent + set_piece_hashes) of the same cached file,
and against b3sum.

Every case runs as a whole command in its own process (interpreter start and
imports included, as a user would see it), cases alternate within each round so
that machine noise falls on all of them alike, and the table reports medians and
ratios against libtorrent measured in the same run. Not a test: nothing here
passes or fails.

    .venv/bin/python scripts/bench/publish.py [--size-gib 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

VENV_BIN = Path(sys.executable).parent
LIBTORRENT_HASH = """
import sys, libtorrent as lt
path, size = sys.argv[1], int(sys.argv[2])
entries = [lt.create_file_entry("model/" + path.rsplit("/", 1)[-1], size)]
torrent = lt.create_torrent(entries, 4 * 1024 * 1024, lt.create_torrent.v2_only)
lt.set_piece_hashes(torrent, path.rsplit("/", 2)[0])
torrent.generate()
"""


def make_gguf(path: Path, size: int) -> None:
    """A GGUF with a realistic header (32k-token vocabulary) and ``size`` bytes of F16 data."""
    import gguf

    rows = size // (4096 * 2)
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
    rng = np.random.default_rng(0)
    with open(path, "ab") as handle:
        pad = (-handle.tell()) % 32
        handle.write(b"\0" * pad)
        block = 64 * 1024 * 1024
        remaining = rows * 4096 * 2
        while remaining:
            n = min(block, remaining)
            handle.write(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
            remaining -= n


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-gib", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    size = int(args.size_gib * 1024**3)

    with tempfile.TemporaryDirectory(prefix="sovnet-bench-") as tmp:
        work = Path(tmp)
        model = work / "model" / "model.gguf"
        model.parent.mkdir()
        print(f"writing a {size / 1024**3:.1f} GiB GGUF ...", file=sys.stderr)
        make_gguf(model, size)
        real_size = model.stat().st_size
        subprocess.run(["cat", str(model)], check=True, stdout=subprocess.DEVNULL)  # cache it

        def sovnet_publish(copy: bool) -> float:
            state = work / "state"
            shutil.rmtree(state, ignore_errors=True)
            env = {**os.environ, "SOVNET_STATE_DIR": str(state)}
            subprocess.run(
                [str(VENV_BIN / "sovnet"), "key", "gen"], check=True, env=env, capture_output=True
            )
            argv = [str(VENV_BIN / "sovnet"), "publish", str(model), "--name", "bench/model"]
            return timed(argv + (["--copy"] if copy else []), env)

        cases = {
            "libtorrent v2 create_torrent+set_piece_hashes": lambda: timed(
                [sys.executable, "-c", LIBTORRENT_HASH, str(model), str(real_size)]
            ),
            "sovnet publish (hard link into the store)": lambda: sovnet_publish(copy=False),
            "b3sum (BLAKE3 only, reference)": lambda: (
                timed(["b3sum", str(model)]) if shutil.which("b3sum") else float("nan")
            ),
            "sovnet publish --copy (copies into the store)": lambda: sovnet_publish(copy=True),
        }
        times: dict[str, list[float]] = {name: [] for name in cases}
        for run in cases.values():
            run()  # warm-up: caches, first-run effects
        for round_no in range(args.rounds):
            for name, run in cases.items():
                times[name].append(run())
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)

    baseline = statistics.median(times["libtorrent v2 create_torrent+set_piece_hashes"])
    print(
        f"\nPublish of a {real_size / 1024**3:.2f} GiB single-file GGUF, page-cached, "
        f"{args.rounds} rounds"
    )
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"{'case':50} {'median s':>9} {'min':>6} {'max':>6} {'GB/s':>6} {'ratio':>6}")
    for name, values in times.items():
        median = statistics.median(values)
        print(
            f"{name:50} {median:9.3f} {min(values):6.2f} {max(values):6.2f} "
            f"{real_size / median / 1e9:6.2f} {median / baseline:6.2f}"
        )
    print("ratio = median / median of libtorrent in the same run (lower is faster)")


if __name__ == "__main__":
    main()
