"""Publishing a Hugging Face cache snapshot, and choosing files with --include/--exclude.

A real cache-shaped tree is built in tmp_path: ``hub/models--acme--tiny`` with
``blobs/<sha256>``, ``refs/main`` and ``snapshots/REV/`` of relative links into
``../../blobs``, holding a tiny real GGUF and safetensors. It is published through
the real CLI (and through an in-process node, whose worker gets the same options),
fetched, verified; and hostile links are refused, every one named at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import (
    Runner,
    assert_store_empty,
    write_companions,
    write_safetensors,
    write_tiny_gguf,
)

REV = "0123456789abcdef0123456789abcdef01234567"


def hf_snapshot(hub: Path, files: dict[str, bytes], repo: str = "models--acme--tiny") -> Path:
    """A cache repository as huggingface_hub writes it; returns its snapshot directory."""
    root = hub / repo
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(REV)
    snapshot = root / "snapshots" / REV
    for relpath, data in files.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / relpath
        link.parent.mkdir(parents=True, exist_ok=True)
        depth = relpath.count("/")
        link.symlink_to("../" * (depth + 2) + "blobs/" + blob.name)
    return snapshot


def model_files(tmp_path: Path) -> dict[str, bytes]:
    """The tiny GGUF, a safetensors file and companions, as bytes by relative path."""
    source = tmp_path / "source"
    write_tiny_gguf(source)
    write_companions(source)
    write_safetensors(source / "model.safetensors")
    (source / "tokenizer").mkdir()
    (source / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}')
    found = {
        str(p.relative_to(source)): p.read_bytes() for p in sorted(source.rglob("*")) if p.is_file()
    }
    shutil.rmtree(source)
    return found


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    return hf_snapshot(tmp_path / "hub", model_files(tmp_path))


def _manifest_paths(sovnet: Runner, cid: str) -> list[str]:
    return [f["path"] for f in sovnet.json("show", cid)["manifest"]["files"]]


def _refusal(sovnet: Runner, model: Path, *extra: str) -> dict[str, object]:
    """Publish must be refused (exit 4); the JSON error."""
    result = sovnet("publish", model, "--name", "acme/bad", *extra, "--json")
    assert result.returncode == 4, (result.stdout, result.stderr)
    error = json.loads(result.stdout)["error"]
    assert isinstance(error, dict)
    return error


# -- a cache snapshot publishes under its own names ------------------------------------


@pytest.mark.parametrize("copy", [False, True])
def test_publish_hf_cache_snapshot(
    sovnet_with_key: Runner, snapshot: Path, state_dir: Path, copy: bool
) -> None:
    blobs = {p.name for p in (snapshot.parent.parent / "blobs").iterdir()}
    extra = ["--copy"] if copy else []
    done = sovnet_with_key("publish", snapshot, "--name", "acme/tiny", *extra, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["copied"], summary["linked"]) == ((5, 0) if copy else (0, 5))

    cid = summary["cid"]
    paths = _manifest_paths(sovnet_with_key, cid)
    assert paths == [
        "README.md",
        "config.json",
        "model.safetensors",
        "sovnet-tiny.gguf",
        "tokenizer/tokenizer.json",
    ]
    assert not blobs & {p.rsplit("/", 1)[-1] for p in paths}  # no blob name is published
    assert sovnet_with_key("verify", cid).returncode == 0
    assert all((snapshot / p).is_symlink() for p in paths)  # the cache is left as it was


def test_publish_a_single_file_of_a_snapshot_keeps_its_name(
    sovnet_with_key: Runner, snapshot: Path
) -> None:
    cid = sovnet_with_key.publish(snapshot / "model.safetensors")
    assert _manifest_paths(sovnet_with_key, cid) == ["model.safetensors"]


def test_publish_refuses_every_hostile_link_at_once(
    sovnet_with_key: Runner, snapshot: Path, tmp_path: Path, state_dir: Path
) -> None:
    repo = snapshot.parent.parent
    outside = tmp_path / "outside.md"
    outside.write_text("# not part of the model\n")
    (snapshot / "passwd.txt").symlink_to("/etc/passwd")
    (repo / "blobs" / "hop").symlink_to(outside)  # a chain: in, then out
    (snapshot / "chain.md").symlink_to("../../blobs/hop")
    (snapshot / "blobs.json").symlink_to("../../blobs")  # a directory inside the repo
    (snapshot / "dangling.json").symlink_to("../../blobs/" + "0" * 64)
    (snapshot / "loop.txt").symlink_to("loop.txt")
    (snapshot / "pytorch_model.bin").write_bytes(b"PK\x03\x04 zip of pickles")
    (snapshot / "setup.yaml").write_text("a: 1\n")

    error = _refusal(sovnet_with_key, snapshot)
    refused = {item["path"]: item for item in error["refused"]}
    assert sorted(refused) == [
        "blobs.json",
        "chain.md",
        "dangling.json",
        "loop.txt",
        "passwd.txt",
        "pytorch_model.bin",
        "setup.yaml",
    ]
    assert error["refused_total"] == 7 and error["code"] == "unsafe-file"
    assert "/etc/passwd" in refused["passwd.txt"]["reason"]
    assert "leads out of" in refused["passwd.txt"]["reason"]
    assert str(outside) in refused["chain.md"]["reason"]
    assert "directory" in refused["blobs.json"]["reason"]
    assert "does not exist" in refused["dangling.json"]["reason"]
    assert "cannot be followed" in refused["loop.txt"]["reason"]
    assert "--exclude '*.bin'" in refused["pytorch_model.bin"]["hint"]
    assert "pickle" in refused["pytorch_model.bin"]["hint"]
    assert "allowlist" in refused["setup.yaml"]["hint"]
    assert "--follow-links-within" in refused["passwd.txt"]["hint"]
    for name in refused:
        assert name in str(error["message"])

    text = sovnet_with_key("publish", snapshot, "--name", "acme/bad")
    assert text.returncode == 4 and text.stdout == ""
    assert "refusing 7 files" in text.stderr
    for name in refused:
        assert name in text.stderr
    assert "--exclude '*.bin'" in text.stderr
    assert_store_empty(state_dir)


def test_excluded_files_are_not_looked_at(
    sovnet_with_key: Runner, snapshot: Path, tmp_path: Path
) -> None:
    # A mixed repository: pickles beside safetensors, and a link that leaves.
    (snapshot / "pytorch_model.bin").write_bytes(b"PK\x03\x04 zip of pickles")
    (snapshot / "training_args.bin").symlink_to("/etc/passwd")
    os.mkfifo(snapshot / "stray.bin")  # looked at, a FIFO would be refused
    cid = sovnet_with_key.publish(snapshot, "acme/tiny", "--exclude", "*.bin")
    paths = _manifest_paths(sovnet_with_key, cid)
    assert not [p for p in paths if p.endswith(".bin")] and "model.safetensors" in paths


def test_include_globs_match_across_directories_as_hf_does(
    sovnet_with_key: Runner, snapshot: Path
) -> None:
    cid = sovnet_with_key.publish(snapshot, "acme/a", "--include", "*.json")
    assert _manifest_paths(sovnet_with_key, cid) == ["config.json", "tokenizer/tokenizer.json"]
    cid = sovnet_with_key.publish(
        snapshot, "acme/b", "--include", "tokenizer/", "--include", "*.gguf"
    )
    paths = _manifest_paths(sovnet_with_key, cid)
    assert "tokenizer/tokenizer.json" in paths and "config.json" not in paths
    assert all(p.endswith(".gguf") or p.startswith("tokenizer/") for p in paths)
    cid = sovnet_with_key.publish(
        snapshot, "acme/c", "--include", "*.json", "--exclude", "tokenizer/*"
    )
    assert _manifest_paths(sovnet_with_key, cid) == ["config.json"]


def test_globs_that_leave_nothing_are_refused(sovnet_with_key: Runner, snapshot: Path) -> None:
    error = _refusal(sovnet_with_key, snapshot, "--include", "*.onnx")
    assert "leave no file" in str(error["message"])


# -- links outside a cache: only into a directory the user names -----------------------


def test_follow_links_within_a_named_directory(
    sovnet_with_key: Runner, tmp_path: Path, state_dir: Path
) -> None:
    shared = tmp_path / "shared"
    write_safetensors(shared / "weights.safetensors")
    model = tmp_path / "model"
    write_companions(model)
    (model / "weights.safetensors").symlink_to(shared / "weights.safetensors")

    error = _refusal(sovnet_with_key, model)
    assert error["message"] == "refusing weights.safetensors: a symbolic link"
    assert "--follow-links-within" in str(error["hint"])
    assert_store_empty(state_dir)

    cid = sovnet_with_key.publish(model, "acme/m", "--follow-links-within", shared)
    assert "weights.safetensors" in _manifest_paths(sovnet_with_key, cid)
    assert sovnet_with_key("verify", cid).returncode == 0

    # Naming one directory does not open the others.
    (model / "secret.txt").symlink_to("/etc/hostname")
    error = _refusal(sovnet_with_key, model, "--follow-links-within", shared)
    assert [item["path"] for item in error["refused"]] == ["secret.txt"]


@pytest.mark.parametrize("linked", [True, False])
def test_a_file_swapped_after_the_scan_is_not_published(
    tmp_path: Path, snapshot: Path, linked: bool
) -> None:
    """The scan checks a file (a followed link's target, or a plain file) and reads its
    header; publish opens it again and must find the same inode: one replaced in
    between (here by another file renamed over it) is refused, nothing is hashed
    under the facts of the other, and nothing is left in the store."""
    from concurrent.futures import ThreadPoolExecutor

    from sovnet.errors import IntegrityError
    from sovnet.store.publish import _import_file
    from sovnet.store.scan import scan_model
    from sovnet.store.store import Store

    model = snapshot
    if not linked:
        model = tmp_path / "plain"
        write_companions(model)
    store = Store(tmp_path / "state").init()
    item = {item.relpath: item for item in scan_model(model)}["config.json"]
    swap = item.source.with_name("swap")
    swap.write_text('{"model_type": "something else"}')
    os.replace(swap, item.source)
    with ThreadPoolExecutor(1) as executor, pytest.raises(IntegrityError, match="replaced"):
        _import_file(store, item, executor, True, 16384, None)
    assert not list((tmp_path / "state" / "tmp").iterdir())


# -- through the daemon: the worker gets the same options; a peer fetches the model ----


async def test_a_node_publishes_a_snapshot_with_globs_and_a_peer_fetches_it(
    tmp_path: Path, snapshot: Path
) -> None:
    from sovnet.api.messages import PublishRequest
    from sovnet.core.cid import CID
    from sovnet.errors import UnsafeFileError
    from sovnet.store.keyfiles import NodeFiles
    from sovnet.store.store import Store
    from tests.test_node import Cluster, control

    (snapshot / "pytorch_model.bin").write_bytes(b"PK\x03\x04 zip of pickles")
    (snapshot / "notes.txt").symlink_to("/etc/hostname")
    cluster = Cluster(tmp_path / "nodes")
    try:
        a_state = cluster.prepare("a")
        b_state = cluster.prepare("b", owner=a_state, trusts=a_state)
        a = await cluster.start(a_state)
        b = await cluster.start(b_state, control(a))

        with pytest.raises(UnsafeFileError) as refused:
            await a.publish(PublishRequest(str(snapshot), "acme/tiny"), lambda _: None)
        assert [f.path for f in refused.value.refused] == ["notes.txt", "pytorch_model.bin"]
        assert refused.value.refused_total == 2
        assert "--exclude '*.bin'" in refused.value.message

        request = PublishRequest(
            str(snapshot), "acme/tiny", exclude=("*.bin", "notes.txt"), copy=True
        )
        published = await a.publish(request, lambda _: None)
        assert published.files == 5

        fetched = await b.fetch(CID.parse(published.cid), [], lambda _: None)
        trust = NodeFiles(b_state).load_trust()
        manifest = Store(b_state).open(CID.parse(fetched.cid), trust).manifest
        assert [f.path for f in manifest.files] == [
            "README.md",
            "config.json",
            "model.safetensors",
            "sovnet-tiny.gguf",
            "tokenizer/tokenizer.json",
        ]
        for entry in manifest.files:
            got = (Path(fetched.path) / entry.path).read_bytes()
            assert got == (snapshot / entry.path).read_bytes()
    finally:
        for node in list(cluster.nodes):
            await cluster.stop(node)


def test_a_long_refusal_names_the_first_files_and_counts_the_rest(
    sovnet_with_key: Runner, tiny_gguf_dir: Path
) -> None:
    for i in range(25):
        (tiny_gguf_dir / "shards" / f"part{i:02}.bin").parent.mkdir(exist_ok=True)
        (tiny_gguf_dir / "shards" / f"part{i:02}.bin").write_bytes(b"pickle")
    error = _refusal(sovnet_with_key, tiny_gguf_dir)
    assert error["refused_total"] == 25
    assert [item["path"] for item in error["refused"]] == [
        f"shards/part{i:02}.bin" for i in range(25)
    ]
    message = str(error["message"])
    assert message.startswith("refusing 25 files of ")
    assert "shards/part19.bin" in message and "shards/part20.bin" not in message
    assert message.endswith("and 5 more")
    # `*` crosses "/", as in hf upload: one glob leaves every shard out.
    assert sovnet_with_key.publish(tiny_gguf_dir, "acme/t", "--exclude", "*.bin")


def test_a_name_with_a_control_character_is_listed_with_the_other_refusals(
    sovnet_with_key: Runner, tiny_gguf_dir: Path
) -> None:
    (tiny_gguf_dir / "new\nline.json").write_text("{}")
    (tiny_gguf_dir / "weights.bin").write_bytes(b"pickle")
    error = _refusal(sovnet_with_key, tiny_gguf_dir)
    assert [item["path"] for item in error["refused"]] == ["new\nline.json", "weights.bin"]
    assert error["refused_total"] == 2
    message = str(error["message"])
    assert "new\\nline.json" in message and "control character" in message
    assert "new\nline" not in message  # the name cannot forge a line of the message
    [named] = [item for item in error["refused"] if item["path"] == "new\nline.json"]
    assert "rename" in str(named["hint"])
    # and it can be left out like any other
    assert sovnet_with_key.publish(
        tiny_gguf_dir, "acme/t", "--exclude", "new*", "--exclude", "*.bin"
    )


def test_exclude_of_a_directory_leaves_out_a_link_of_that_name_to_a_directory(
    sovnet_with_key: Runner, tiny_gguf_dir: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("notes")
    (tiny_gguf_dir / "sub").symlink_to(elsewhere)
    error = _refusal(sovnet_with_key, tiny_gguf_dir)
    assert [item["path"] for item in error["refused"]] == ["sub"]
    cid = sovnet_with_key.publish(tiny_gguf_dir, "acme/t", "--exclude", "sub/")
    assert "sub" not in _manifest_paths(sovnet_with_key, cid)


def test_a_link_loop_is_refused_with_a_hint_about_loops(
    sovnet_with_key: Runner, snapshot: Path
) -> None:
    (snapshot / "loop.json").symlink_to("loop.json")
    error = _refusal(sovnet_with_key, snapshot)
    [item] = error["refused"]
    assert item["path"] == "loop.json"
    assert "Hugging Face cache" not in str(item["hint"])
    assert "loop" in str(item["reason"]) + str(item["hint"])
