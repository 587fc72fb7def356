"""Safe relative paths: nothing a manifest names can land outside its directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core.relpath import check_relpath, check_tree
from sovnet.errors import ManifestFormatError


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../../x",
        "a/./b",
        "a//b",
        "a/",
        "a\\b",
        "C:/x",
        "c:x",
        "a\x00b",
        "a\nb",
        "x" * 256,
        "/".join(["d"] * 17),
        "\udc80",
    ],
)
def test_unsafe_paths_are_refused(path: str) -> None:
    with pytest.raises(ManifestFormatError):
        check_relpath(path)


@pytest.mark.parametrize(
    "path", ["model.gguf", "a/b/c.json", "tokenizer.model", ".gitattributes", "ünï/cödé.txt"]
)
def test_ordinary_model_paths_are_accepted(path: str) -> None:
    assert check_relpath(path) == path


@given(st.text(max_size=60))
def test_any_accepted_path_stays_inside_the_directory(path: str) -> None:
    try:
        check_relpath(path)
    except ManifestFormatError:
        return
    base = Path("/srv/store/models/x")
    joined = Path(os.path.normpath(base / path))
    assert joined.is_relative_to(base) and joined != base
    assert not Path(path).is_absolute()
    assert ".." not in path.split("/")


@pytest.mark.parametrize(
    ("paths", "reason"),
    [
        (["a.json", "a.json"], "twice"),
        (["A.json", "a.json"], "case"),
        (["a", "a/b"], "both as a file and as a directory"),
        (["x/Y/z", "x/y"], "both as a file and as a directory"),
    ],
)
def test_paths_that_cannot_coexist_are_refused(paths: list[str], reason: str) -> None:
    with pytest.raises(ManifestFormatError, match=reason):
        check_tree(paths)
