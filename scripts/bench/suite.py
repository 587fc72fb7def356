"""The benchmark suite: run each benchmark, print one table, write it as markdown
and JSON.

    python scripts/bench/suite.py [--quick] [--only NAME,...] [--out docs/benchmarks]

Each benchmark is a module of scripts/bench/ with ``run(quick: bool) -> list[Row]``
(common.py). Each runs in a child process of its own, so that a missing module, an
exception, a crash or a hang in one benchmark is recorded in the output and never
hides the others: the child is given a time limit, then SIGTERM (which its
``finally`` blocks see as KeyboardInterrupt, so daemons, nginx and namespaces are
cleaned up), then SIGKILL.

Every row is compared with a baseline row of the same benchmark, measured in the
same run: ratio = median / baseline median, and lower is better for every unit
used (s, ms, MiB, x model). Nothing here passes or fails.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import math
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import REPO, Row, install_signal_handlers, spread

# Benchmark name -> the module(s) that implement it, tried in order.
MODULES: dict[str, tuple[str, ...]] = {
    "publish": ("publish",),
    "fetch": ("fetch",),
    "fanout": ("fanout",),
    "load": ("run_load", "load"),
    "footprint": ("footprint",),
    "peers": ("dead_peers",),
    "resolve": ("resolve",),
}
# Per-benchmark time limits: quick must fit the whole suite in 10 minutes.
QUICK_LIMIT = 300.0
FULL_LIMIT = 3600.0
GRACE = 60.0  # for a benchmark to clean up after SIGTERM
MARKER = "<!-- Written by hand below this line: suite.py keeps it when it rewrites the file. -->"


@dataclass
class Outcome:
    """What one benchmark produced: rows, or the reason it produced none."""

    name: str
    rows: list[Row] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0


# -- running benchmarks -----------------------------------------------------------------


def child(name: str, quick: bool, result_path: Path) -> None:
    """In the child process: import the benchmark lazily, run it, write its rows."""
    install_signal_handlers()
    result: dict[str, Any]
    try:
        module = None
        for module_name in MODULES[name]:
            if (Path(__file__).parent / f"{module_name}.py").is_file():
                module = importlib.import_module(module_name)
                break
        if module is None:
            files = " or ".join(f"scripts/bench/{m}.py" for m in MODULES[name])
            result = {"error": f"not built yet: {files} does not exist"}
        else:
            rows = module.run(quick)
            result = {"rows": [_row_json(row) for row in rows]}
    except BaseException as exc:  # a broken benchmark is reported, whatever it raised
        traceback.print_exc()
        result = {"error": f"{type(exc).__name__}: {exc}".strip()[:2000]}
    result_path.write_text(json.dumps(result))


def _row_json(row: Any) -> dict[str, Any]:
    # Duck-typed: a module may build rows of its own class with the same fields.
    return {
        "benchmark": str(row.benchmark),
        "case": str(row.case),
        "baseline": str(row.baseline),
        "samples": [float(v) for v in row.samples],
        "unit": str(row.unit),
        "note": str(getattr(row, "note", "") or ""),
    }


def run_benchmark(name: str, quick: bool, limit: float) -> Outcome:
    started = time.monotonic()
    with tempfile.NamedTemporaryFile(prefix=f"svb-{name}-", suffix=".json") as result:
        argv = [sys.executable, __file__, "--child", name, "--result", result.name]
        if quick:
            argv.append("--quick")
        print(f"\n=== {name} ===", file=sys.stderr, flush=True)
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, cwd=REPO)
        timed_out = False
        try:
            process.wait(limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.send_signal(signal.SIGTERM)
        except KeyboardInterrupt:
            # Ctrl-C reaches the child too (same process group), SIGTERM to the suite
            # does not: either way, tell it once more and let it clean up.
            process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(GRACE)
            raise
        finally:
            try:
                process.wait(GRACE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        seconds = time.monotonic() - started
        if timed_out:
            return Outcome(name, error=f"stopped after the {limit:.0f} s limit", seconds=seconds)
        try:
            data = json.loads(Path(result.name).read_text() or "{}")
        except (OSError, ValueError):
            data = {}
    if "rows" in data:
        return Outcome(name, [Row(**r) for r in data["rows"]], seconds=seconds)
    error = data.get("error") or f"the benchmark process exited {process.returncode}"
    return Outcome(name, error=error, seconds=seconds)


# -- the table ---------------------------------------------------------------------------


def ratios(rows: list[Row]) -> dict[int, float]:
    """Each row's median over its baseline's median (same benchmark, same run)."""
    medians = {(r.benchmark, r.case): r.median for r in rows}
    found = {}
    for index, row in enumerate(rows):
        base = medians.get((row.benchmark, row.baseline), math.nan)
        found[index] = row.median / base if base and math.isfinite(base) else math.nan
    return found


def number(value: float) -> str:
    if not math.isfinite(value):
        return "-"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


HEADER = [
    "#",
    "benchmark",
    "case",
    "median",
    "spread (min-max)",
    "n",
    "unit",
    "ratio",
    "vs",
    "note",
]
NUMERIC = {0, 3, 4, 5, 7}  # right-aligned columns


def table_cells(rows: list[Row]) -> list[list[str]]:
    """One line of cells per row; "vs" is the number (#) of the row's baseline."""
    found = ratios(rows)
    number_of = {(r.benchmark, r.case): i + 1 for i, r in enumerate(rows)}
    cells = []
    for index, row in enumerate(rows):
        low, high = spread(row.samples)
        ratio = found[index]
        base = number_of.get((row.benchmark, row.baseline))
        cells.append(
            [
                str(index + 1),
                row.benchmark,
                row.case,
                number(row.median),
                f"{number(low)}-{number(high)}" if row.samples else "-",
                str(row.n),
                row.unit,
                f"{ratio:.2f}" if math.isfinite(ratio) else "n/a",
                "-" if row.baseline == row.case else (f"#{base}" if base else "missing"),
                row.note,
            ]
        )
    return cells


def render_text(rows: list[Row]) -> str:
    """The table for a terminal: aligned columns, the note last and unpadded."""
    cells = [HEADER, *table_cells(rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER) - 1)]
    lines = []
    for line in cells:
        parts = [
            cell.rjust(widths[i]) if i in NUMERIC else cell.ljust(widths[i])
            for i, cell in enumerate(line[:-1])
        ]
        lines.append("  ".join(parts) + "  " + line[-1])
    lines.append(
        "ratio = median / median of row vs (its baseline, measured in the same run;"
        " lower is better)"
    )
    return "\n".join(lines)


def render_markdown_table(rows: list[Row]) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("--:" if i in NUMERIC else "---" for i in range(len(HEADER))) + "|",
    ]
    for line in table_cells(rows):
        lines.append("| " + " | ".join(escape(c) for c in line) + " |")
    return "\n".join(lines)


# -- the machine --------------------------------------------------------------------------


def _first(path: str, key: str, separator: str = ":") -> str:
    """The value of the first ``key<separator>value`` line of a file."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text().splitlines():
            name, found, value = line.partition(separator)
            if found and name.strip() == key:
                return value.strip()
    return "unknown"


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        text = (done.stdout or done.stderr).strip().splitlines()
        # The first line, without curl's long list of libraries.
        return text[0].split(" (")[0].removeprefix("nginx version: ") if text else "unknown"
    return "unknown"


def machine() -> dict[str, str]:
    try:
        import libtorrent

        libtorrent_version = str(libtorrent.__version__)
    except ImportError:
        libtorrent_version = "not installed"
    kib = _first("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(kib) / 1024**2:.1f} GiB" if kib.isdigit() else "unknown"
    commit = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    if dirty not in ("", "unknown", "not installed"):
        commit += " with uncommitted changes"
    return {
        "cores": str(os.cpu_count()),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "ram": ram,
        "kernel": platform.release(),
        "os": _first("/etc/os-release", "PRETTY_NAME", "=").strip('"'),
        "python": platform.python_version(),
        "libtorrent": libtorrent_version,
        "sovnet": commit,
        "nginx": _version(["nginx", "-v"]),
        "aria2c": _version(["aria2c", "--version"]),
        "curl": _version(["curl", "--version"]),
        "b3sum": _version(["b3sum", "--version"]),
        # Other work on the machine shows here: figures are noisier when it is high.
        "load average at start": " ".join(f"{v:.2f}" for v in os.getloadavg()),
    }


# -- writing the results -------------------------------------------------------------------


def write_outputs(
    out: Path, outcomes: list[Outcome], info: dict[str, str], command: str, date: str
) -> None:
    rows = [row for outcome in outcomes for row in outcome.rows]
    found = ratios(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "date": date,
        "command": command,
        "machine": info,
        "rows": [{**row.to_json(), "ratio": found[i]} for i, row in enumerate(rows)],
        "benchmarks": [
            {"name": o.name, "seconds": round(o.seconds, 1), "error": o.error or None}
            for o in outcomes
        ],
    }
    json_path = out.with_name(out.name + ".json")
    json_path.write_text(json.dumps(_finite(data), indent=2, allow_nan=False) + "\n")

    md_path = out.with_name(out.name + ".md")
    kept = ""
    with contextlib.suppress(OSError):
        previous = md_path.read_text()
        if MARKER in previous:
            kept = previous.split(MARKER, 1)[1]
    lines = [
        "# Benchmarks",
        "",
        f"Measured on {date} with:",
        "",
        "```sh",
        command,
        "```",
        "",
        "Every case runs as a whole command in its own process, several times, cases",
        "alternating within each round; the table gives the median, the range (min-max),",
        "the number of samples n, and the **ratio to the baseline row (numbered under vs) of",
        "the same benchmark, measured in the same run** (median / baseline median; lower",
        "is better for every unit here). Absolute figures move with the machine's load;",
        "ratios much less. Nothing here is a pass/fail test.",
        "",
        "## Machine",
        "",
        *[f"- {key}: {value}" for key, value in info.items()],
        "",
        "## Results",
        "",
        render_markdown_table(rows),
        "",
        "Time each benchmark took: "
        + ", ".join(f"{o.name} {o.seconds:.0f} s" for o in outcomes)
        + ".",
    ]
    failed = [o for o in outcomes if o.error]
    if failed:
        lines += ["", "Not measured in this run:", ""]
        lines += [f"- {o.name}: {o.error.splitlines()[0]}" for o in failed]
    lines += ["", MARKER]
    md_path.write_text("\n".join(lines) + (kept if kept else "\n"))


def _finite(value: Any) -> Any:
    """NaN is not JSON: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# -- entry point ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller models, fewer rounds")
    parser.add_argument("--only", help="comma-separated: " + ",".join(MODULES))
    parser.add_argument(
        "--out",
        default="docs/benchmarks",
        help="write OUT.md and OUT.json [docs/benchmarks]",
    )
    parser.add_argument("--limit", type=float, help="seconds per benchmark [300 quick, 3600]")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child(args.child, args.quick, Path(args.result))
        return
    install_signal_handlers()  # SIGTERM to the suite stops the running benchmark cleanly

    names = list(MODULES)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in MODULES]
        if unknown:
            parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(MODULES)}")
    limit = args.limit or (QUICK_LIMIT if args.quick else FULL_LIMIT)
    command = os.environ.get("BENCH_COMMAND") or shlex.join(
        ["python", "scripts/bench/suite.py", *sys.argv[1:]]
    )
    out = Path(args.out)
    if not out.is_absolute():
        out = REPO / out
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()

    outcomes: list[Outcome] = []
    started = time.monotonic()
    for name in names:
        try:
            outcome = run_benchmark(name, args.quick, limit)
        except KeyboardInterrupt:
            outcomes.append(Outcome(name, error="interrupted"))
            write_outputs(out, outcomes, info, command, date)
            print(f"\ninterrupted during {name}; the table so far is in {out}.md", file=sys.stderr)
            sys.exit(130)
        outcomes.append(outcome)
        status = f"failed: {outcome.error.splitlines()[0]}" if outcome.error else "done"
        print(f"=== {name}: {status} ({outcome.seconds:.0f} s)", file=sys.stderr, flush=True)
        # Written after each benchmark, so an interrupted run keeps what it measured.
        write_outputs(out, outcomes, info, command, date)

    rows = [row for outcome in outcomes for row in outcome.rows]
    print()
    print(f"sovnet benchmarks, {date}, {info['cores']} cores, {info['cpu']}")
    print(render_text(rows))
    for outcome in outcomes:
        if outcome.error:
            print(f"NOT MEASURED {outcome.name}: {outcome.error}")
    print(
        "took "
        + ", ".join(f"{o.name} {o.seconds:.0f} s" for o in outcomes)
        + f"; total {time.monotonic() - started:.0f} s"
    )
    print(f"wrote {out.with_name(out.name + '.md')} and {out.with_name(out.name + '.json')}")


if __name__ == "__main__":
    main()
