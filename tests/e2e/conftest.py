"""Real sovnetd processes on 127.0.0.1, each with its own state directory.

A :class:`Cluster` makes nodes the way a user would: `sovnet key gen`, then
`network create` on the first node and `network request` / `invite` / `join`
for the others, and trusts the first node's publisher key everywhere. Daemons
listen on ports the kernel picks; every wait is bounded, and every daemon is
stopped at the end of the test, whatever happened.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sovnet.core.address import PeerAddress
from sovnet.trust import publisher_root, publisher_targets
from tests.conftest import SOVNETD, Runner, write_safetensors, write_tiny_gguf

START_TIMEOUT = 20.0


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


class Node:
    def __init__(self, name: str, state: Path) -> None:
        self.name = name
        self.state = state
        self.sovnet = Runner(state)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = state.parent / f"{name}.log"
        self.env: dict[str, str] = {}
        self.host = "127.0.0.1"

    # -- the daemon --------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", swarm_port: int = 0, **env: str) -> Node:
        """Start sovnetd listening on ``host`` (ports the kernel picks, but for the
        swarm's when ``swarm_port`` is given)."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.host = host
        self.env.update(env)
        run_env = {
            k: v for k, v in os.environ.items() if not k.startswith(("SOVNET_", "STATE_DIR"))
        }
        run_env.update(self.env)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    str(SOVNETD),
                    "--state-dir",
                    str(self.state),
                    "--swarm-listen",
                    str(PeerAddress(host, swarm_port)),
                    "--control-listen",
                    str(PeerAddress(host, 0)),
                    "--metrics-listen",
                    str(PeerAddress(host, 0)),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=run_env,
            )
        wait_for(f"{self.name} to be ready", self._ready, START_TIMEOUT)
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"sovnetd {self.name} exited:\n{self.log_text()[-3000:]}")
        return self.sovnet("status").returncode == 0

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"sovnetd {self.name} did not stop within {timeout:.0f} s"
            ) from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.sovnet.json("status")
        return result

    def get_metrics(self, path: str) -> tuple[int, str]:
        """GET ``path`` on the daemon's metrics listener: the status and the body."""
        url = f"http://{self.status()['metrics']}{path}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def scrape(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """/metrics, parsed by prometheus_client's own parser: each sample's value by
        its name and labels."""
        code, text = self.get_metrics("/metrics")
        assert code == 200, text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    @property
    def control(self) -> str:
        return str(PeerAddress(self.host, int(self.status()["control_port"])))

    # -- the store -----------------------------------------------------------------

    def ls(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.sovnet.json("ls")
        return rows

    def has(self, cid: str) -> bool:
        return any(row["cid"] == cid for row in self.ls())

    def key_id(self) -> str:
        return str(self.sovnet.json("key", "show")["key_id"])


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []

    def node(self, name: str, *, network: str | None = "testnet", trust_first: bool = True) -> Node:
        """A new node with a publisher key, in the first node's network (or its own
        ``network`` when the first node is not its owner)."""
        node = Node(name, self.root / name)
        node.sovnet("key", "gen", check=True)
        owner = self.nodes[0] if self.nodes else None
        if network is None:
            pass
        elif owner is None or network != "testnet":
            node.sovnet("network", "create", network, "--node-name", name, check=True)
        else:
            request = self.root / f"{name}.req"
            invite = self.root / f"{name}.invite"
            node.sovnet("network", "request", "--node-name", name, "-o", request, check=True)
            owner.sovnet("network", "invite", request, "-o", invite, check=True)
            node.sovnet("network", "join", invite, check=True)
        if owner is not None and trust_first:
            node.sovnet("trust", "add", owner.key_id(), "--name", owner.name, check=True)
        self.nodes.append(node)
        return node

    def stop_all(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(AssertionError):  # stop the others all the same
                node.stop(timeout=20)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # Unix socket paths are limited to 107 bytes: keep state directories short.
    root = Path(tempfile.mkdtemp(prefix="sv-e2e-", dir="/tmp"))
    made = Cluster(root)
    try:
        yield made
    finally:
        made.stop_all()
        for path in root.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o700)
        shutil.rmtree(root, ignore_errors=True)


def expire_timestamp(node: Node, publisher: Node) -> None:
    """Replace the timestamp ``node`` (stopped) trusts for acme by the same version
    signed two days ago with the online key of ``publisher``, acme's node: as if
    ``publisher`` had been off since."""
    trusted = node.state / "roots" / "acme" / "timestamp.json"
    signed = json.loads(trusted.read_bytes())["signed"]
    targets = max(
        (publisher.state / "publishers" / "acme").glob("*.targets.json"),
        key=lambda path: int(path.name.split(".")[0]),
    )
    _, expired = publisher_targets.online_metadata(
        targets.read_bytes(),
        snapshot_version=signed["meta"]["snapshot.json"]["version"],
        timestamp_version=signed["version"],
        online=publisher_root.signer((publisher.state / "keys" / "publisher.pem").read_bytes()),
        now=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2),
    )
    trusted.unlink()
    trusted.write_bytes(expired)


def make_model(directory: Path, megabytes: int, seed: int = 1) -> Path:
    """The tiny GGUF, a config.json and ``megabytes`` MiB of random safetensors."""
    write_tiny_gguf(directory)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal(megabytes * 1024 * 1024 // 4).astype(np.float32)
    write_safetensors(directory / "model.safetensors", {"w": weights})
    return directory


def same_files(one: Path, other: Path) -> bool:
    names = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    if names != sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file()):
        return False
    return all((one / n).read_bytes() == (other / n).read_bytes() for n in names)
