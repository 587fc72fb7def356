"""Benchmark: `sovnet publish` of a single-file GGUF model against libtorrent's own
BitTorrent v2 hashing (create_torrent + set_piece_hashes) of the same file, and
against b3sum; with the page cache warm, and dropped before each run where the
machine allows it.

sovnet publish does strictly more than either: it computes BLAKE3 *and* the v2
SHA-256 merkle roots in one read, validates the GGUF header, signs and commits.
libtorrent is the baseline because a user sharing a model over BitTorrent would
pay its hashing anyway. Every case is a whole command in its own process
(interpreter start and imports included), unpinned: all three use every core.
Dropping the page cache (as root) empties it for the whole machine: anything
else running slows down for a moment.

    .venv/bin/python scripts/bench/publish.py [--quick] [--size-gib 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from collections.abc import Callable

from common import (
    GIB,
    MIB,
    PYTHON,
    SOVNET,
    Row,
    alternate,
    clean_env,
    drop_caches,
    install_signal_handlers,
    log,
    make_gguf,
    median,
    rate_note,
    run_command,
    scratch,
    timed,
)

NAME = "publish"
LIBTORRENT_HASH = """
import sys, libtorrent as lt
path, size = sys.argv[1], int(sys.argv[2])
entries = [lt.create_file_entry("model/" + path.rsplit("/", 1)[-1], size)]
torrent = lt.create_torrent(entries, 4 * 1024 * 1024, lt.create_torrent.v2_only)
lt.set_piece_hashes(torrent, path.rsplit("/", 2)[0])
torrent.generate()
"""
BASELINE = "libtorrent v2 create_torrent+set_piece_hashes"
COLD = " (page cache dropped)"


def cold(case: Callable[[], float]) -> Callable[[], float]:
    """``case`` run right after the page cache is dropped."""

    def run_cold() -> float:
        drop_caches()
        return case()

    return run_cold


def run_benchmark(size: int, rounds: int) -> list[Row]:
    with scratch() as work:
        model = work / "model" / "model.gguf"
        log(NAME, f"writing a {size / GIB:.2f} GiB GGUF ...")
        make_gguf(model, size)
        real_size = model.stat().st_size
        # The model sits on the store's filesystem, so publish hard-links it.
        subprocess.run(["cat", str(model)], check=True, stdout=subprocess.DEVNULL)

        def sovnet_publish(copy: bool) -> float:
            state = work / "state"
            shutil.rmtree(state, ignore_errors=True)
            env = clean_env(SOVNET_STATE_DIR=str(state))
            run_command([SOVNET, "key", "gen"], env=env)
            argv: list[str | os.PathLike[str]] = [SOVNET, "publish", model]
            argv += ["--name", "bench/model"]
            return timed(argv + (["--copy"] if copy else []), env)

        def libtorrent() -> float:
            return timed([PYTHON, "-c", LIBTORRENT_HASH, model, str(real_size)])

        def b3sum() -> float:
            return timed(["b3sum", model])

        def copy() -> float:
            # Made durable, as the store makes its copy (fsync before the rename).
            target = work / "copy.gguf"
            target.unlink(missing_ok=True)
            return timed(["sh", "-c", 'cp "$1" "$2" && sync "$2"', "cp", model, target])

        cases: dict[str, Callable[[], float]] = {
            BASELINE: libtorrent,
            "sovnet publish (hard link into the store)": lambda: sovnet_publish(copy=False),
            "sovnet publish --copy (copies into the store)": lambda: sovnet_publish(copy=True),
        }
        notes = {name: "" for name in cases}
        if shutil.which("b3sum"):
            cases["b3sum (BLAKE3 only, reference)"] = b3sum
        else:
            notes[BASELINE] = "b3sum not installed: its row is missing"
        cold_cases = dict(cases)
        # What --copy's writing costs by itself (this VM writes fresh blocks slowly).
        cases["cp + sync (plain durable copy, reference)"] = copy

        # Cold cache: drop it right before each run. Tried once first: a container
        # or an unprivileged user cannot, and then the table says so.
        cold_problem = drop_caches()
        if cold_problem is None:
            for name, case in cold_cases.items():
                cases[name + COLD] = cold(case)
                notes[name + COLD] = ""
        else:
            notes[BASELINE] = (notes[BASELINE] + "; " if notes[BASELINE] else "") + (
                f"no page-cache-dropped rows: {cold_problem}"
            )

        samples = alternate(NAME, cases, rounds)

    rows = []
    for name, values in samples.items():
        baseline = BASELINE + COLD if name.endswith(COLD) else BASELINE
        row = Row(NAME, name, baseline, values, "s", rate_note(real_size, median(values)))
        if name == BASELINE:
            row.note += (
                f"; {real_size / GIB:.2f} GiB GGUF, page cache warm, unpinned (all use every core)"
            )
        elif name == BASELINE + COLD:
            row.note += "; page cache dropped right before each run"
        if notes.get(name):
            row.note += "; " + notes[name]
        rows.append(row)
    return rows


def run_quick_or_full(quick: bool) -> tuple[int, int]:
    return (512 * MIB, 3) if quick else (2 * GIB, 5)


def run(quick: bool) -> list[Row]:
    size, rounds = run_quick_or_full(quick)
    return run_benchmark(size, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="512 MiB, 3 rounds")
    parser.add_argument("--size-gib", type=float, help="model size [2, quick 0.5]")
    parser.add_argument("--rounds", type=int, help="rounds [5, quick 3]")
    args = parser.parse_args()
    install_signal_handlers()
    size, rounds = run_quick_or_full(args.quick)
    if args.size_gib is not None:
        size = int(args.size_gib * GIB)
    rows = run_benchmark(size, args.rounds or rounds)
    from suite import render_text

    print(render_text(rows))


if __name__ == "__main__":
    main()
