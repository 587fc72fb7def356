"""The layering holds: the pure core imports no I/O frameworks, and `import sovnet`
loads neither libtorrent nor llama.cpp nor aiohttp."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "sovnet"
PURE_MODULES = [
    "sovnet.errors",
    "sovnet.core.cid",
    "sovnet.core.canonjson",
    "sovnet.core.relpath",
    "sovnet.core.merkle",
    "sovnet.core.manifest",
    "sovnet.core.signing",
    "sovnet.trust.gate",
    "sovnet.core.locations",
    "sovnet.core.bencode",
    "sovnet.core.torrent",
    "sovnet.daemon.fetchplan",
    "sovnet.core.config",
    "sovnet.core.address",
    "sovnet.core.network",
    "sovnet.formats.gguf",
    "sovnet.formats.safetensors",
    "sovnet.formats.policy",
    "sovnet.formats.companions",
]
FORBIDDEN_IN_PURE = {"asyncio", "aiohttp", "libtorrent", "llama_cpp", "socket", "subprocess"}
NEVER_ON_IMPORT = ["libtorrent", "llama_cpp", "aiohttp", "asyncio"]


def _imports(module: str) -> set[str]:
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_does_not_import_io_frameworks(module: str) -> None:
    assert not _imports(module) & FORBIDDEN_IN_PURE


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    output = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    return set(output.stdout.split())


def test_import_sovnet_loads_no_heavy_dependency() -> None:
    loaded = _loaded_after("import sovnet")
    assert not loaded & set(NEVER_ON_IMPORT)


def test_pure_modules_pull_in_no_io_framework_transitively() -> None:
    loaded = _loaded_after("; ".join(f"import {m}" for m in PURE_MODULES))
    assert not loaded & set(NEVER_ON_IMPORT)


def test_only_the_adapter_imports_libtorrent() -> None:
    importers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "libtorrent" in _imports(str(path.relative_to(PACKAGE.parent))[:-3].replace("/", "."))
    )
    assert importers == ["net/_libtorrent.py"]


def test_cli_startup_loads_no_heavy_dependency() -> None:
    loaded = _loaded_after("import sovnet.cli.main")
    assert not loaded & {"libtorrent", "llama_cpp", "aiohttp", "rich", "cryptography"}
