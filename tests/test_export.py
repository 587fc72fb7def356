"""``sovnet export --hf-cache``: huggingface_hub finds the model offline and reads
the very bytes sovnet verified, through links rather than copies."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core.cid import CID
from sovnet.core.manifest import NAME_PATTERN
from sovnet.errors import InvalidInputError
from sovnet.run.hfexport import default_cache_dir, hf_repo_id, revision_for
from tests.conftest import Runner, write_safetensors, write_tiny_gguf

FILES = ["README.md", "config.json", "notes/usage.md", "sovnet-tiny.gguf"]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    model = tmp_path / "tiny"
    write_tiny_gguf(model)
    (model / "config.json").write_text('{"model_type": "llama"}\n')
    (model / "README.md").write_text("# tiny\n")
    (model / "notes").mkdir()
    (model / "notes" / "usage.md").write_text("Run it with sovnet.\n")
    return model


def _offline_hf(cache: Path, code: str) -> object:
    """Run ``code`` against huggingface_hub in a fresh process, offline, with ``cache``
    as its default cache; return what it prints as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_TELEMETRY="1")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _export(sovnet: Runner, ref: str, cache: Path) -> dict[str, object]:
    result = sovnet.json("export", ref, f"--hf-cache={cache}")
    assert isinstance(result, dict)
    return result


def test_hf_hub_download_and_snapshot_download_read_the_verified_bytes(
    sovnet_with_key: Runner, model: Path, tmp_path: Path, state_dir: Path
) -> None:
    cid = sovnet_with_key.publish(model, "acme/tiny", "--version", "1.0")
    cache = tmp_path / "hf"
    done = sovnet_with_key("export", "acme/tiny", "--hf-cache", cache)
    assert done.returncode == 0, done.stderr
    revision = revision_for(CID.parse(cid))
    snapshot = cache / "models--acme--tiny" / "snapshots" / revision
    assert done.stdout.strip() == str(snapshot)
    assert "4 hard-linked, 0 symlinked" in done.stderr

    found = _offline_hf(
        cache,
        "import json\n"
        "from huggingface_hub import hf_hub_download, snapshot_download\n"
        "one = hf_hub_download('acme/tiny', 'sovnet-tiny.gguf', local_files_only=True)\n"
        "nested = hf_hub_download('acme/tiny', 'notes/usage.md')\n"
        "folder = snapshot_download('acme/tiny', local_files_only=True)\n"
        f"pinned = snapshot_download('acme/tiny', revision='{revision}', local_files_only=True)\n"
        "print(json.dumps([one, nested, folder, pinned]))\n",
    )
    assert isinstance(found, list)
    one, nested, folder, pinned = map(Path, found)
    assert one.read_bytes() == (model / "sovnet-tiny.gguf").read_bytes()
    assert nested.read_bytes() == (model / "notes" / "usage.md").read_bytes()
    assert folder == pinned == snapshot
    for name in FILES:
        assert (folder / name).read_bytes() == (model / name).read_bytes(), name

    # No second copy: each blob is the store's own file, named by its SHA-256.
    store_blobs = {p.stat().st_ino for p in (state_dir / "blobs").iterdir()}
    blobs = sorted((cache / "models--acme--tiny" / "blobs").iterdir())
    assert len(blobs) == 4
    for blob in blobs:
        assert not blob.is_symlink()
        assert blob.stat().st_ino in store_blobs
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    # Snapshot entries are relative links into blobs/, as huggingface_hub makes them.
    link = snapshot / "notes" / "usage.md"
    assert link.is_symlink() and os.readlink(link).startswith("../../../blobs/")
    assert (cache / "models--acme--tiny" / "refs" / "main").read_text() == revision


def test_export_again_is_idempotent_and_a_new_version_takes_refs_main(
    sovnet_with_key: Runner, model: Path, tmp_path: Path
) -> None:
    first = sovnet_with_key.publish(model, "acme/tiny", "--version", "1.0")
    cache = tmp_path / "hf"
    once = _export(sovnet_with_key, first, cache)
    again = _export(sovnet_with_key, first, cache)
    assert once["revision"] == again["revision"] == revision_for(CID.parse(first))
    assert (once["hard_linked"], again["already"], again["hard_linked"]) == (4, 4, 0)

    (model / "README.md").write_text("# tiny, v2\n")
    second = sovnet_with_key.publish(model, "acme/tiny", "--version", "2.0")
    newer = _export(sovnet_with_key, "acme/tiny@2.0", cache)
    refs_main = cache / "models--acme--tiny" / "refs" / "main"
    assert refs_main.read_text() == newer["revision"] == revision_for(CID.parse(second))
    # the earlier export stays reachable by its revision
    assert (cache / "models--acme--tiny" / "snapshots" / str(once["revision"])).is_dir()


def test_default_cache_is_huggingface_hubs(
    sovnet_with_key: Runner, model: Path, tmp_path: Path
) -> None:
    sovnet_with_key.publish(model, "acme/tiny")
    home = tmp_path / "hf-home"
    done = sovnet_with_key("export", "acme/tiny", "--hf-cache", env={"HF_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(home / "hub" / "models--acme--tiny")


def test_export_across_filesystems_uses_symbolic_links(
    sovnet_with_key: Runner, model: Path, tmp_path: Path
) -> None:
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to export to")
    sovnet_with_key.publish(model, "acme/tiny")
    with tempfile.TemporaryDirectory(dir=other) as cache_text:
        cache = Path(cache_text)
        result = _export(sovnet_with_key, "acme/tiny", cache)
        assert (result["hard_linked"], result["symlinked"]) == (0, 4)
        found = _offline_hf(
            cache,
            "import json\nfrom huggingface_hub import hf_hub_download\n"
            "print(json.dumps(hf_hub_download('acme/tiny', 'sovnet-tiny.gguf')))\n",
        )
        assert isinstance(found, str)
        assert Path(found).read_bytes() == (model / "sovnet-tiny.gguf").read_bytes()


def test_export_refuses_a_tampered_model(
    sovnet_with_key: Runner, model: Path, tmp_path: Path, state_dir: Path
) -> None:
    cid = sovnet_with_key.publish(model, "acme/tiny")
    view = state_dir / "models" / cid / "config.json"
    os.chmod(view, 0o644)
    view.write_text('{"model_type": "evil"}\n')
    cache = tmp_path / "hf"
    done = sovnet_with_key("export", cid, "--hf-cache", cache)
    assert done.returncode == 5
    assert "config.json of acme/tiny" in done.stderr and "refusing to export it" in done.stderr
    assert not (cache / "models--acme--tiny" / "refs").exists()


def test_export_takes_safetensors_models(sovnet_with_key: Runner, tmp_path: Path) -> None:
    model = tmp_path / "st"
    write_safetensors(model / "model.safetensors")
    (model / "config.json").write_text("{}")
    sovnet_with_key.publish(model, "acme/st")
    result = _export(sovnet_with_key, "acme/st", tmp_path / "hf")
    assert result["hard_linked"] == 2


def test_export_needs_a_target(sovnet_with_key: Runner, model: Path) -> None:
    sovnet_with_key.publish(model, "acme/tiny")
    done = sovnet_with_key("export", "acme/tiny")
    assert done.returncode == 2
    assert "--hf-cache" in done.stderr


# -- names -----------------------------------------------------------------------------


def test_revision_is_40_hex_digits_fixed_by_the_cid() -> None:
    cid = CID.of(b"a manifest")
    assert revision_for(cid) == revision_for(CID.parse(str(cid)))
    assert len(revision_for(cid)) == 40 and int(revision_for(cid), 16) >= 0
    assert revision_for(cid) != revision_for(CID.of(b"another manifest"))


def test_default_cache_dir_follows_huggingface_hub() -> None:
    home = Path("/home/u")
    assert default_cache_dir({}, home) == home / ".cache/huggingface/hub"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}, home) == Path("/x/huggingface/hub")
    assert default_cache_dir({"HF_HOME": "/h", "XDG_CACHE_HOME": "/x"}, home) == Path("/h/hub")
    assert default_cache_dir({"HUGGINGFACE_HUB_CACHE": "/old", "HF_HOME": "/h"}, home) == Path(
        "/old"
    )
    assert default_cache_dir({"HF_HUB_CACHE": "/c", "HUGGINGFACE_HUB_CACHE": "/old"}, home) == (
        Path("/c")
    )


sovnet_names = st.from_regex(NAME_PATTERN, fullmatch=True)


@given(sovnet_names | st.sampled_from(["a--b/c", "a/b..c", "a/b.git", "a-/b", "a/.b", "_a/b_"]))
def test_hf_repo_id_accepts_exactly_what_huggingface_hub_accepts(name: str) -> None:
    try:
        validate_repo_id(name)
        hub_accepts = True
    except HFValidationError:
        hub_accepts = False
    try:
        hf_repo_id(name)
        we_accept = True
    except InvalidInputError:
        we_accept = False
    assert we_accept == hub_accepts, name
