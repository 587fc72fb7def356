"""Benchmark: the cost of sovnet's gate at the start of a run.

For a model that is already verified (published, stamps in place), compares the
wall time of

    sovnet run MODEL -p PROMPT -n 16 --seed 1

with a plain Python script that loads the same GGUF file with llama-cpp-python
(same context size, same seed) and streams 16 tokens. Both are whole commands in
their own processes, interpreter start and imports included, alternated within
each round so that the noise of a shared machine falls on both alike. sovnet's
extra work: the CLI, name resolution, signature check, a stat per file against
its stamp, the GGUF header check in a forked child, and the fork of the gate.

    .venv/bin/python scripts/bench/run_load.py [--gguf PATH] [--rounds 7] [--cpus 0,1]

Without --gguf it uses the tiny model of scripts/make_tiny_gguf.py, where start-up
is nearly all there is to measure (the hardest case for the ratio). A --gguf file
is published with --copy into a scratch store, so the original is left as it was.
Not a test: nothing passes or fails; the target is a ratio of at most 1.15.
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

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SOVNET = BIN / "sovnet"
NAME = "bench/model"
TARGET = 1.15

BASELINE = """\
import sys
import llama_cpp

path, n_ctx, prompt, tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, seed=1, verbose=False)
for chunk in llm.create_completion(prompt, max_tokens=tokens, stream=True):
    sys.stdout.write(chunk["choices"][0]["text"])
    sys.stdout.flush()
sys.stdout.write("\\n")
"""


def _run(command: list[str], env: dict[str, str], cpus: str | None) -> tuple[float, str]:
    if cpus:
        command = ["taskset", "-c", cpus, *command]
    started = time.perf_counter()
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    if "Re-verified" in done.stderr:
        sys.exit("sovnet re-hashed a file: the model is not in its verified state")
    return elapsed, done.stdout


def _context_size(gguf: Path) -> int:
    """The context `sovnet run` picks for this file, so the baseline asks for the same."""
    sys.path.insert(0, str(REPO))
    from sovnet.formats.gguf import parse_gguf
    from sovnet.runner import context_size

    with open(gguf, "rb") as handle:

        def read_at(offset: int, n: int) -> bytes:
            return os.pread(handle.fileno(), n, offset)

        header = parse_gguf(read_at, os.fstat(handle.fileno()).st_size)
    return context_size(None, header.context_length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="a GGUF model [default: the tiny test model]")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (at least 5)")
    parser.add_argument("--prompt", default="Hello world")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--cpus", help="pin both commands to these CPUs (taskset -c LIST)")
    args = parser.parse_args()
    if args.rounds < 5:
        parser.error("at least 5 rounds")

    scratch = Path(tempfile.mkdtemp(prefix="sovnet-bench-run-"))
    try:
        if args.gguf is None:
            subprocess.run(
                [sys.executable, str(REPO / "scripts" / "make_tiny_gguf.py"), str(scratch / "m")],
                check=True,
                capture_output=True,
            )
            gguf = scratch / "m" / "sovnet-tiny.gguf"
        else:
            gguf = args.gguf.resolve()
        # As an installed sovnet runs: bytecode caches on, our own scratch state.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONDONTWRITEBYTECODE", "STATE_DIRECTORY", "XDG_DATA_HOME")
        }
        env["SOVNET_STATE_DIR"] = str(scratch / "state")
        for command in (["key", "gen"], ["publish", str(gguf), "--name", NAME, "--copy"]):
            done = subprocess.run(
                [str(SOVNET), *command], env=env, check=True, capture_output=True, text=True
            )
        cid = done.stdout.strip()
        script = scratch / "run.py"
        script.write_text(BASELINE)
        n_ctx = _context_size(gguf)
        prompt, tokens = args.prompt, str(args.tokens)
        plain = [sys.executable, str(script), str(gguf), str(n_ctx), prompt, tokens]
        cases = {
            "sovnet run": [str(SOVNET), "run", NAME, "-p", prompt, "-n", tokens, "--seed", "1"],
            "llama-cpp-python": plain,
        }

        outputs = {case: _run(command, env, args.cpus)[1] for case, command in cases.items()}
        if len(set(outputs.values())) != 1:
            print("note: the two generated different text:", outputs, file=sys.stderr)
        times: dict[str, list[float]] = {case: [] for case in cases}
        for round_no in range(args.rounds):
            order = list(cases) if round_no % 2 == 0 else list(reversed(cases))
            for case in order:
                times[case].append(_run(cases[case], env, args.cpus)[0])

        base = statistics.median(times["llama-cpp-python"])
        print(f"model: {gguf.name} ({gguf.stat().st_size / 1e6:.1f} MB), cid {cid}")
        print(f"prompt {args.prompt!r}, {args.tokens} tokens, n_ctx {n_ctx}, {args.rounds} rounds")
        print(f"cpus: {args.cpus or 'all'} of {os.cpu_count()}")
        print()
        print(f"{'case':<18} {'median s':>9} {'min s':>8} {'max s':>8} {'ratio':>6}")
        for case, samples in times.items():
            median = statistics.median(samples)
            print(
                f"{case:<18} {median:>9.3f} {min(samples):>8.3f} {max(samples):>8.3f} "
                f"{median / base:>6.2f}"
            )
        ratio = statistics.median(times["sovnet run"]) / base
        # Each round's two commands ran back to back: their ratio is less exposed to
        # the drift of a shared machine's load than a ratio of medians.
        paired = statistics.median(
            ours / plain
            for ours, plain in zip(times["sovnet run"], times["llama-cpp-python"], strict=True)
        )
        verdict = "within" if ratio <= TARGET else "OVER"
        print(f"\nsovnet run / llama-cpp-python = {ratio:.2f} ({verdict} the {TARGET} target)")
        print(f"median of the per-round ratios = {paired:.2f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
