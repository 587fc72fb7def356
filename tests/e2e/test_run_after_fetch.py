"""The whole pipe: published on one node, fetched by CID on another through the
swarm, run there by llama.cpp, and llama.cpp never inside either daemon."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_tiny_gguf
from tests.e2e.conftest import Cluster, Node


def _maps(node: Node) -> str:
    assert node.process is not None
    return Path(f"/proc/{node.process.pid}/maps").read_text()


def test_fetched_model_runs_and_no_daemon_loads_llama_cpp(cluster: Cluster, tmp_path: Path) -> None:
    a, b = cluster.node("a"), cluster.node("b")
    a.start()
    b.start()
    model = tmp_path / "tiny"
    write_tiny_gguf(model)
    cid = a.sovnet.json("publish", model, "--name", "acme/tiny")["cid"]
    b.sovnet("peers", "add", a.control, check=True)
    b.sovnet("fetch", cid, check=True)

    ran = b.sovnet("run", cid, "-p", "Once upon a time", "-n", "8", "--seed", "1")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip()  # tokens came out
    also = b.sovnet("run", "acme/tiny", "-p", "Hi", "-n", "2", "--seed", "1")
    assert also.returncode == 0, also.stderr

    for node in (a, b):
        maps = _maps(node)
        assert "libtorrent" in maps  # the check sees what a daemon maps
        assert "libllama" not in maps and "libggml" not in maps
