"""The layers hold: each package of sovnet/ imports only the packages below it, the
pure ones (core, formats, trust) do no I/O and read no clock and no environment,
store/ has no asyncio, and `import sovnet` loads neither libtorrent nor llama.cpp
nor aiohttp. Every module is found from the tree itself: a new module is checked
the day it is added.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "sovnet"

# What each package may import of sovnet (errors.py is below everything).
MAY_IMPORT: dict[str, set[str]] = {
    "formats": set(),
    "core": {"formats"},
    "trust": {"core", "formats"},
    "store": {"core", "formats", "trust"},
    "net": {"core", "formats", "trust", "store"},
    "run": {"core", "formats", "trust", "store"},
    "api": {"core", "formats", "trust"},
    "daemon": {"core", "formats", "trust", "store", "net", "api"},
    "cli": {"core", "formats", "trust", "store", "run", "api"},
}
PURE = ("core", "formats", "trust")
# Modules whose import means I/O, a clock, threads or the network.
NOT_PURE = {
    "asyncio",
    "aiohttp",
    "libtorrent",
    "llama_cpp",
    "os",
    "shutil",
    "socket",
    "subprocess",
    "tempfile",
    "threading",
    "time",
}
# Calls and attributes that read files, the clock or the environment.
NOT_PURE_ATTRIBUTES = {
    "environ",
    "expanduser",
    "getenv",
    "home",
    "iterdir",
    "mkdir",
    "now",
    "read_bytes",
    "read_text",
    "today",
    "utcnow",
    "write_bytes",
    "write_text",
}
NEVER_ON_IMPORT = ["libtorrent", "llama_cpp", "aiohttp", "asyncio"]


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _imports(tree: ast.Module) -> set[str]:
    """Every module named by an import anywhere in ``tree`` (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _sovnet_packages(imported: set[str]) -> set[str]:
    return {name.split(".")[1] for name in imported if name.startswith("sovnet.")}


def _layering_violations(path: Path) -> list[str]:
    return _violations(_tree(path), _package(path))


def _violations(tree: ast.Module, package: str) -> list[str]:
    if package not in MAY_IMPORT:
        return []
    imported = _imports(tree)
    allowed = MAY_IMPORT[package] | {package, "errors"}
    found = [f"imports sovnet.{p}" for p in sorted(_sovnet_packages(imported) - allowed)]
    if package in PURE:
        found += [f"imports {m}" for m in sorted({n.split(".")[0] for n in imported} & NOT_PURE)]
        found += [
            f"uses .{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in NOT_PURE_ATTRIBUTES
        ]
        found += [
            "calls open()"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "open"
        ]
    if package == "store" and "asyncio" in {n.split(".")[0] for n in imported}:
        found.append("imports asyncio (store/ is blocking by design)")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_keeps_to_its_layer(path: Path) -> None:
    assert _layering_violations(path) == []


def test_the_root_holds_only_what_every_layer_shares() -> None:
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root == ["__init__.py", "errors.py"]
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(
        MAY_IMPORT
    )


def test_the_checks_catch_what_they_are_for() -> None:
    # The same checks, on modules written to break them: a clock, the environment
    # and asyncio in core/; the daemon from the CLI.
    clock = ast.parse(
        "import time\nimport asyncio\nimport os\n\n"
        "def f() -> object:\n    return os.environ, time.time()\n"
    )
    assert _violations(clock, "core") == [
        "imports asyncio",
        "imports os",
        "imports time",
        "uses .environ",
    ]
    assert _violations(ast.parse("from sovnet.daemon.node import Node\n"), "cli") == [
        "imports sovnet.daemon"
    ]


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    return set(output.stdout.split())


def test_import_sovnet_loads_no_heavy_dependency() -> None:
    loaded = _loaded_after("import sovnet")
    assert not loaded & set(NEVER_ON_IMPORT)


def test_pure_packages_pull_in_no_io_framework_transitively() -> None:
    pure = [
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        for p in _modules()
        if _package(p) in PURE and p.name != "__init__.py"
    ]
    loaded = _loaded_after("; ".join(f"import {m}" for m in pure))
    assert not loaded & set(NEVER_ON_IMPORT)


def test_only_the_adapter_imports_libtorrent() -> None:
    importers = {
        p.relative_to(PACKAGE).parent.as_posix()
        for p in _modules()
        if any(n.split(".")[0] == "libtorrent" for n in _imports(_tree(p)))
    }
    assert importers == {"net/libtorrent"}


def test_cli_startup_loads_no_heavy_dependency() -> None:
    loaded = _loaded_after("import sovnet.cli.main")
    assert not loaded & {"libtorrent", "llama_cpp", "aiohttp", "rich", "cryptography"}


def test_the_readme_s_map_names_every_module_where_it_is() -> None:
    readme = (PACKAGE.parent / "README.md").read_text()
    section = readme[readme.index("## How it fits together") :]
    for path in _modules():
        if path.name == "__init__.py" or _package(path) == path.stem:
            continue
        package_line = next(
            (
                line
                for line in section.splitlines()
                if line.strip().startswith(f"- `{_package(path)}/`")
            ),
            None,
        )
        assert package_line is not None, f"README's map has no {_package(path)}/"
        block = section[section.index(package_line) :].split("\n  - ", 1)[0]
        assert f"`{path.stem}`" in block, f"README's map does not name {path.relative_to(PACKAGE)}"
