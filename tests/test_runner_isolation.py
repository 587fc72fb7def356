"""llama.cpp runs only in the child process that `sovnet run` / `sovnet serve` start
for it, never in the CLI's own process and never in sovnetd: one module
(sovnet/run/runner.py) imports llama_cpp, only the child's entry point
(sovnet/run/llama_process.py) imports that module, and importing anything else of
sovnet, the run commands included, loads neither."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "sovnet"
RUNNER = PACKAGE / "run" / "runner.py"
LLAMA_PROCESS = PACKAGE / "run" / "llama_process.py"


def _imported_names(path: Path) -> set[str]:
    """Every module an import statement anywhere in ``path`` names (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_only_the_runner_imports_llama_cpp() -> None:
    importers = [
        path
        for path in _sources()
        if any(n == "llama_cpp" or n.startswith("llama_cpp.") for n in _imported_names(path))
    ]
    assert importers == [RUNNER]


def test_only_the_child_process_imports_the_runner() -> None:
    # ("from sovnet.run import runner" names sovnet.run.runner too)
    importers = [path for path in _sources() if "sovnet.run.runner" in _imported_names(path)]
    assert importers == [LLAMA_PROCESS]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    return set(done.stdout.split())


def test_importing_the_runner_gate_and_cli_loads_no_llama_cpp() -> None:
    loaded = _loaded_after(
        "import sovnet.run.runner, sovnet.run.admission, sovnet.run.llama_process,"
        " sovnet.cli.run_commands"
    )
    assert "llama_cpp" not in loaded


def test_no_other_sovnet_module_loads_the_runner_or_llama_cpp() -> None:
    # Each module in a fresh interpreter: whatever it pulls in, transitively.
    modules = [
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for path in _sources()
        if path != RUNNER and path.name != "__main__.py"
    ]
    modules = [m.removesuffix(".__init__") for m in modules]
    code = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:  # not importable here (a missing extra): nothing to check\n"
        "        continue\n"
        "    if 'llama_cpp' in sys.modules or 'sovnet.run.runner' in sys.modules:\n"
        "        bad.append(name)\n"
        "        break\n"
        "print(bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_the_daemon_entry_point_loads_no_runner() -> None:
    loaded = _loaded_after("import sovnet.daemon.main")
    assert not loaded & {"llama_cpp", "sovnet.run.runner", "sovnet.run.llama_process"}
