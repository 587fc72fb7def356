"""Safe relative paths: nothing a manifest names can land outside its directory."""

from __future__ import annotations

import os
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core import casefolding
from sovnet.core.relpath import casefold_path, check_relpath, check_tree
from sovnet.errors import ManifestFormatError
from tests.conftest import load_script


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


# -- case folding: Unicode 14.0.0, whatever the interpreter (docs/spec.md §5.2) --------

# Folds that Unicode 16.0 (Python 3.14's str.casefold) adds, with their lower-case
# partners: under the pinned version they are different characters.
UNICODE_16_FOLDS = [
    (0x1C89, 0x1C8A),
    (0xA7CB, 0x0264),
    (0xA7CC, 0xA7CD),
    (0xA7DA, 0xA7DB),
    (0xA7DC, 0x019B),
    *((upper, upper + 0x20) for upper in range(0x10D50, 0x10D66)),
]


def test_folding_is_pinned_to_unicode_14() -> None:
    assert casefolding.UNICODE_VERSION == "14.0.0"
    assert casefold_path("Straße/\u01c5.TXT") == "strasse/\u01c6.txt"


@pytest.mark.parametrize(("upper", "lower"), UNICODE_16_FOLDS, ids=lambda p: f"U+{p:04X}")
def test_unicode_16_folds_do_not_apply(upper: int, lower: int) -> None:
    assert len(UNICODE_16_FOLDS) == 27
    assert casefold_path(chr(upper)) == chr(upper)
    check_tree([f"{chr(upper)}.txt", f"{chr(lower)}.txt"])  # two files, no collision


@pytest.mark.skipif(
    unicodedata.unidata_version != "14.0.0", reason="the table is checked on Python 3.11"
)
def test_the_table_is_what_python_3_11_folds_and_what_the_script_writes() -> None:
    for point in range(sys.maxunicode + 1):
        if not 0xD800 <= point <= 0xDFFF:
            assert casefold_path(chr(point)) == chr(point).casefold(), hex(point)
    script = load_script("make_casefold_table")
    assert script.module_text() == Path(casefolding.__file__).read_text(encoding="utf-8")
