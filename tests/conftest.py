"""Shared fixtures: run the real ``sovnet`` CLI, and write small real model files.

Nothing of sovnet is mocked. The CLI runs as a subprocess of the installed console
script, with its own state directory per test (``SOVNET_STATE_DIR``), so tests see
exactly what a user sees: exit codes, stdout, stderr and the files on disk.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import gguf
import numpy as np
import pytest
import safetensors.numpy

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SOVNET = BIN / "sovnet"
SOVNETD = BIN / "sovnetd"


def load_script(name: str) -> ModuleType:
    """scripts/ is not a package: load scripts/NAME.py by path, as module NAME."""
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


make_tiny_gguf = load_script("make_tiny_gguf")
write_tiny_gguf: Callable[..., list[Path]] = make_tiny_gguf.write_tiny_gguf


# -- running the CLI ------------------------------------------------------------


def loopback_session(listen: str = "127.0.0.1:0") -> Any:
    """A bare libtorrent session with sovnetd's settings, listening on ``listen`` (a
    port ending in "s" is an SSL listen socket): only 127.0.0.1, over TCP."""
    import libtorrent as lt

    from sovnet.core.address import PeerAddress
    from sovnet.net.libtorrent.settings import session_settings
    from sovnet.net.swarm import SwarmSettings

    settings = session_settings(SwarmSettings(listen=PeerAddress("127.0.0.1", 0)))
    settings["listen_interfaces"] = listen
    return lt.session(settings)


def cli_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("STATE_DIRECTORY", "XDG_DATA_HOME")}
    env["SOVNET_STATE_DIR"] = str(state_dir)
    return env


class Runner:
    """``sovnet(*args)`` runs the CLI against this test's state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def __call__(
        self,
        *args: str | os.PathLike[str],
        check: bool = False,
        text: bool = True,
        state_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        program: Path = SOVNET,
    ) -> subprocess.CompletedProcess[Any]:
        run_env = cli_env(state_dir or self.state_dir)
        if env is not None:
            run_env.update(env)
        result = subprocess.run(
            [str(program), *map(str, args)],
            capture_output=True,
            text=text,
            env=run_env,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"sovnet {' '.join(map(str, args))} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def json(self, *args: str | os.PathLike[str], **kwargs: Any) -> Any:
        """Run with --json and check=True; the parsed stdout."""
        result = self(*args, "--json", check=True, **kwargs)
        return json.loads(result.stdout)

    def publish(self, path: Path, name: str = "acme/tiny", *extra: str, **kwargs: Any) -> str:
        """Publish and return the CID printed on stdout."""
        result = self("publish", path, "--name", name, *extra, check=True, **kwargs)
        return str(result.stdout.strip())


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def sovnet(state_dir: Path) -> Runner:
    return Runner(state_dir)


@pytest.fixture
def sovnet_with_key(sovnet: Runner) -> Runner:
    sovnet("key", "gen", check=True)
    return sovnet


# -- writing model files ---------------------------------------------------------


def write_gguf(
    path: Path,
    tensors: Mapping[str, np.ndarray[Any, Any]] | None = None,
    *,
    arch: str = "llama",
    file_type: int | None = 0,
) -> Path:
    """A small valid GGUF file written by gguf-py's GGUFWriter."""
    if tensors is None:
        tensors = {"a.weight": np.arange(32, dtype=np.float32).reshape(4, 8)}
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(path), arch=arch)
    if file_type is not None:
        writer.add_file_type(file_type)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path


def write_safetensors(
    path: Path, tensors: Mapping[str, np.ndarray[Any, Any]] | None = None
) -> Path:
    """A small valid safetensors file written by safetensors.numpy.save_file."""
    if tensors is None:
        tensors = {"w": np.zeros((2, 3), dtype=np.float32)}
    path.parent.mkdir(parents=True, exist_ok=True)
    safetensors.numpy.save_file(dict(tensors), str(path))
    return path


def flip_byte(path: Path, offset: int) -> None:
    """Invert one byte of a file in place (a stored blob: made writable first)."""
    os.chmod(path, 0o644)  # blobs are read-only
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))


def corrupt_gguf_magic(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.write(b"GGUX")


def corrupt_gguf_tensor_count(path: Path, count: int = 2**40) -> None:
    """Overwrite the u64 tensor count (after magic and u32 version)."""
    with open(path, "r+b") as handle:
        handle.seek(8)
        handle.write(count.to_bytes(8, "little"))


def write_companions(model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (model_dir / "README.md").write_text("# tiny\n\nA test model.\n")


@pytest.fixture
def tiny_gguf_dir(tmp_path: Path) -> Path:
    """A model directory: the tiny llama GGUF, a config.json and a README.md."""
    model = tmp_path / "tiny-model"
    write_tiny_gguf(model)
    write_companions(model)
    return model


@pytest.fixture
def two_file_model(tmp_path: Path) -> Path:
    """A model of exactly two files: the tiny GGUF and a config.json."""
    model = tmp_path / "two-file-model"
    write_tiny_gguf(model)
    (model / "config.json").write_text('{"model_type": "llama"}\n')
    return model


# -- looking at a store -----------------------------------------------------------


def store_entries(state: Path) -> dict[str, list[str]]:
    """What the store holds, by directory (missing directories are empty)."""
    out = {}
    for sub in ("blobs", "manifests", "models", "tmp", "partial"):
        directory = state / sub
        out[sub] = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    return out


def assert_store_empty(state: Path) -> None:
    entries = store_entries(state)
    assert entries == {k: [] for k in entries}, entries
