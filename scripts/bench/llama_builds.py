"""Benchmark: llama.cpp builds side by side, in tokens per second on a real model.

    python scripts/bench/llama_builds.py --gguf MODEL.gguf NAME=WHEEL [NAME=WHEEL ...]
        [--rounds 5] [--prompt-tokens 256] [--gen-tokens 64]

Each WHEEL is a llama-cpp-python wheel built with other CMake flags (setup.sh builds
one into .cache/llama-cpp-python/VERSION-TAG/; scripts/llama_build.py says which
flags). Each is unpacked into its own directory, and every round runs each build
once, in turn, in a fresh process: load the model, evaluate a prompt of
``--prompt-tokens`` tokens, then generate ``--gen-tokens`` tokens greedily.
llama.cpp's own counters give the prompt and generation rates. Prints the median
of each over the rounds, the ratio to the first build, and the start of each
build's text (greedy decoding: builds that compute alike write alike).

The interpreter running this must have llama-cpp-python's Python dependencies
(numpy, jinja2, diskcache, typing-extensions), as the project's .venv has. Not a
test: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEASURE = """\
import json, sys, llama_cpp
path, prompt_tokens, gen_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
llm = llama_cpp.Llama(model_path=path, n_ctx=prompt_tokens + gen_tokens + 16,
                      n_batch=prompt_tokens, seed=1, verbose=False)
words = "The history of the river valley begins with the first farmers who settled there. "
tokens = llm.tokenize(words.encode() * prompt_tokens)[:prompt_tokens]
llm.reset()
llama_cpp.llama_perf_context_reset(llm.ctx)
out = llm.create_completion(tokens, max_tokens=gen_tokens, temperature=0.0, top_k=1)
perf = llama_cpp.llama_perf_context(llm.ctx)
print(json.dumps({
    "pp": perf.n_p_eval / perf.t_p_eval_ms * 1000, "n_pp": perf.n_p_eval,
    "tg": perf.n_eval / perf.t_eval_ms * 1000, "n_tg": perf.n_eval,
    "text": out["choices"][0]["text"],
    "system": llama_cpp.llama_print_system_info().decode(),
}))
"""


def unpack(wheel: Path, into: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(into)
    return into


def measure(site: Path, gguf: Path, prompt_tokens: int, gen_tokens: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(gguf), str(prompt_tokens), str(gen_tokens)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        # A GGML_BACKEND_DL build's CPU variants land in the wheel's bin/, where ggml does
        # not look; it does look in the current directory.
        cwd=site / "bin" if (site / "bin").is_dir() else site,
        timeout=600,
    )
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("builds", nargs="+", metavar="NAME=WHEEL")
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--gen-tokens", type=int, default=64)
    args = parser.parse_args()
    builds = dict(spec.split("=", 1) for spec in args.builds)
    gguf = args.gguf.resolve()
    results: dict[str, list[dict[str, object]]] = {name: [] for name in builds}
    with tempfile.TemporaryDirectory(prefix="llama-builds-") as scratch:
        sites = {name: unpack(Path(wheel), Path(scratch) / name) for name, wheel in builds.items()}
        for round_no in range(args.rounds):
            for name, site in sites.items():
                result = measure(site, gguf, args.prompt_tokens, args.gen_tokens)
                results[name].append(result)
                shown = result.get("error") or f"pp {result['pp']:.1f} tg {result['tg']:.1f}"
                print(f"round {round_no + 1} {name}: {shown}", file=sys.stderr, flush=True)
    first = next(iter(builds))
    base: dict[str, float] = {}
    print(f"{args.gguf.name}: {args.prompt_tokens} prompt tokens, {args.gen_tokens} generated,")
    print(f"median of {args.rounds} rounds, tokens per second (ratio to {first})")
    print(f"{'build':<16} {'prompt':>14} {'generation':>14}  text")
    for name, runs in results.items():
        good = [r for r in runs if "error" not in r]
        if not good:
            print(f"{name:<16} failed: {runs[0]['error']}")
            continue
        pp = statistics.median(float(str(r["pp"])) for r in good)
        tg = statistics.median(float(str(r["tg"])) for r in good)
        base.setdefault("pp", pp)
        base.setdefault("tg", tg)
        text = str(good[0]["text"]).replace("\n", " ")[:40]
        print(
            f"{name:<16} {pp:8.1f} {pp / base['pp']:4.2f}x {tg:8.1f} {tg / base['tg']:4.2f}x"
            f"  {text!r}" + (f"  ({len(runs) - len(good)} failed)" if len(good) < len(runs) else "")
        )
    print("what each build's llama.cpp says it uses (llama_print_system_info, features on):")
    for name, runs in results.items():
        good = [r for r in runs if "error" not in r]
        if good:
            features = [f for f in str(good[0]["system"]).split("|") if f.strip().endswith("= 1")]
            print(f"  {name}: {' '.join(f.strip().removesuffix(' = 1') for f in features)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
