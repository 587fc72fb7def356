"""§10 step 7: a model's files are read without following a symbolic link at any
component below the model directory; files the manifest does not list are ignored."""

from __future__ import annotations

import shutil
from pathlib import Path

from sovnet.core.signing import PrivateKey
from sovnet.store.publish import publish
from sovnet.store.store import Store
from sovnet.store.verify import verify
from sovnet.trust.keys import TrustedKey, TrustStore

KEY = PrivateKey.from_seed(bytes(32))
TRUST = TrustStore((TrustedKey(KEY.public_key.key_id, "me", KEY.public_key),))


def _published(tmp_path: Path) -> tuple[Store, Path, object]:
    model = tmp_path / "model"
    (model / "sub" / "deeper").mkdir(parents=True)
    (model / "README.md").write_text("top\n")
    (model / "sub" / "deeper" / "notes.txt").write_text("nested\n")
    store = Store(tmp_path / "state").init()
    result = publish(store, KEY, model, name="acme/links", copy=True)
    return store, store.model_dir(result.cid), result.cid


def _problems(store: Store, cid: object) -> dict[str, str | None]:
    report = verify(store, cid, TRUST)  # type: ignore[arg-type]
    return {f.path: f.problem for f in report.files}


def test_an_intact_model_verifies(tmp_path: Path) -> None:
    store, _, cid = _published(tmp_path)
    assert _problems(store, cid) == {"README.md": None, "sub/deeper/notes.txt": None}


def test_a_directory_replaced_by_a_link_to_the_same_content_is_refused(tmp_path: Path) -> None:
    store, view, cid = _published(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(view / "sub", elsewhere)  # identical bytes, outside the model
    for path in (view / "sub").rglob("*"):
        path.parent.chmod(0o755)
    shutil.rmtree(view / "sub")
    (view / "sub").symlink_to(elsewhere)
    problems = _problems(store, cid)
    assert problems["README.md"] is None
    assert problems["sub/deeper/notes.txt"] is not None
    assert "symbolic link" in problems["sub/deeper/notes.txt"]


def test_a_link_deeper_down_is_refused_too(tmp_path: Path) -> None:
    store, view, cid = _published(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(view / "sub" / "deeper", elsewhere)
    (view / "sub").chmod(0o755)
    shutil.rmtree(view / "sub" / "deeper")
    (view / "sub" / "deeper").symlink_to(elsewhere)
    assert "symbolic link" in (_problems(store, cid)["sub/deeper/notes.txt"] or "")


def test_a_file_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    store, view, cid = _published(tmp_path)
    copy = tmp_path / "copy.md"
    shutil.copy(view / "README.md", copy)
    view.chmod(0o755)
    (view / "README.md").unlink()
    (view / "README.md").symlink_to(copy)
    assert _problems(store, cid)["README.md"] is not None


def test_files_the_manifest_does_not_list_do_not_matter(tmp_path: Path) -> None:
    store, view, cid = _published(tmp_path)
    view.chmod(0o755)
    (view / "extra.bin").write_bytes(b"not part of the model")
    (view / "stray").symlink_to("/etc/passwd")
    assert set(_problems(store, cid).values()) == {None}
