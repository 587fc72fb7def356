"""Safe relative paths: the only file names a manifest may carry.

A manifest path comes from a publisher we may not trust yet, and is later joined
to a directory of ours. :func:`check_relpath` accepts a path only if joining it to
any directory stays inside that directory on POSIX and Windows alike, and it
names a single file the same way on every system:

* POSIX form: components separated by ``/``, no empty component, no leading or
  trailing ``/``;
* no component ``.`` or ``..``;
* no backslash, no colon (drive letters, NTFS streams), no NUL or other control
  character, no lone surrogate;
* at most 1024 UTF-8 bytes in all, 255 per component, 16 components.

:func:`check_tree` adds the rules for a set of paths: no duplicates, no two paths
that differ only in case (they collide on macOS and Windows), and no path that is
both a file and a directory of another path. "Differ only in case" is Unicode
14.0.0 full case folding (:func:`casefold_path`, a checked-in table), not
``str.casefold``, whose answer changes with the interpreter's Unicode version.

Pure: no I/O.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable

from sovnet.core.casefolding import FOLDS
from sovnet.errors import ManifestFormatError, quoted

MAX_PATH_BYTES = 1024
MAX_COMPONENT_BYTES = 255
MAX_DEPTH = 16


def check_relpath(path: str) -> str:
    """Return ``path`` unchanged if it is a safe relative path, else raise."""
    if not isinstance(path, str) or not path:
        raise ManifestFormatError("empty file path")
    shown = quoted(path)
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ManifestFormatError(f"path {shown} is not valid Unicode") from exc
    if len(encoded) > MAX_PATH_BYTES:
        raise ManifestFormatError(f"path {shown} is longer than {MAX_PATH_BYTES} bytes")
    for char in path:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise ManifestFormatError(f"path {shown} contains a control character")
    if "\\" in path:
        raise ManifestFormatError(f"path {shown} contains a backslash")
    if ":" in path:
        raise ManifestFormatError(f"path {shown} contains a colon (drive letter or stream)")
    if path.startswith("/"):
        raise ManifestFormatError(f"path {shown} is absolute")
    parts = path.split("/")
    if len(parts) > MAX_DEPTH:
        raise ManifestFormatError(f"path {shown} is deeper than {MAX_DEPTH} directories")
    for part in parts:
        if part in ("", ".", ".."):
            raise ManifestFormatError(f"path {shown} has an empty, '.' or '..' component")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise ManifestFormatError(f"path {shown} has a component over 255 bytes")
    # Defence in depth: every rule above implies this, and it is the property we need.
    if posixpath.normpath(path) != path or posixpath.isabs(path):
        raise ManifestFormatError(f"path {shown} is not normalised")
    return path


def casefold_path(path: str) -> str:
    """``path`` under Unicode 14.0.0 full case folding (docs/spec.md §5.2)."""
    return path.translate(FOLDS)


def check_tree(paths: Iterable[str]) -> None:
    """Raise if ``paths`` cannot all exist side by side as files of one directory."""
    seen: dict[str, str] = {}
    files: set[str] = set()
    directories: set[str] = set()
    for path in paths:
        check_relpath(path)
        folded = casefold_path(path)
        if folded in seen:
            other = seen[folded]
            what = "twice" if other == path else f"and {other!r}, which differ only in case"
            raise ManifestFormatError(f"path {path!r} appears {what}")
        seen[folded] = path
        files.add(folded)
        parts = folded.split("/")
        directories.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = files & directories
    if clash:
        raise ManifestFormatError(
            f"path {sorted(clash)[0]!r} is used both as a file and as a directory"
        )
