"""Whether a directory is a sovnet node, and making one.

    <state>/sovnet-node   {"sovnet_node":1}: this directory is a node's state

A command that reads a node (``ls``, ``key show``, ``trust``, ``run``, sovnetd...)
checks this first, so that a mistyped ``--state-dir`` is an error naming the
directory, not an empty store, a missing key or a daemon that makes a new node
there. Only the commands that make a node (``key gen``, ``network create``,
``request`` and ``join``) write the marker (:func:`make_node`), and only in a new
or empty directory.

A directory without the marker is still a node if it has what a node made by an
earlier sovnet has (its key, trust file, store or network files): state
directories made before the marker existed keep working, unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from sovnet.errors import InvalidInputError, LocalStateError, NotFoundError
from sovnet.store.atomicfile import write_atomic

MARKER_NAME = "sovnet-node"
NODE_FORMAT = 1
_MARKER_BYTES = b'{"sovnet_node":1}\n'
# What a node made before the marker existed always has at least one of.
_EARLIER_LAYOUT = ("keys", "trust.json", "manifests", "network")
_MAKE_ONE = (
    "check --state-dir (or SOVNET_STATE_DIR); to make a new node there, run "
    "`sovnet key gen` (or `sovnet network create` / `network join`)"
)


def is_node(state: Path) -> bool:
    """Whether ``state`` is a node's state directory (the marker, or an earlier layout)."""
    return (state / MARKER_NAME).is_file() or (
        state.is_dir() and any((state / name).exists() for name in _EARLIER_LAYOUT)
    )


def require_node(state: Path) -> Path:
    """``state``, if it is a node of a format this sovnet reads; else an error naming it."""
    marker = state / MARKER_NAME
    try:
        data = marker.read_bytes()
    except FileNotFoundError:
        if is_node(state):
            return state
        raise NotFoundError(
            f"{state} is not a sovnet node: {_why_not(state)}", hint=_MAKE_ONE
        ) from None
    except NotADirectoryError:
        raise NotFoundError(
            f"{state} is not a sovnet node: it is not a directory", hint=_MAKE_ONE
        ) from None
    except OSError as exc:
        raise LocalStateError(f"cannot read {marker}: {exc.strerror}") from exc
    version = _marker_version(data)
    if version is None:
        raise LocalStateError(
            f"{marker} is damaged",
            hint=f"it holds {_MARKER_BYTES.decode().strip()}; write that back if this is a node",
        )
    if version != NODE_FORMAT:
        raise LocalStateError(
            f"{state} is a sovnet node of format {version}, which this sovnet does not read",
            hint="use the sovnet that made it, or a newer one",
        )
    return state


def make_node(state: Path) -> Path:
    """Make ``state`` a node (its directory, mode 0700, and the marker); an existing
    node is left as it is, and gets the marker if an earlier sovnet made it."""
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise LocalStateError(
            f"cannot create the state directory {state}: {exc.strerror}",
            hint="choose a writable --state-dir (or SOVNET_STATE_DIR)",
        ) from exc
    if (state / MARKER_NAME).exists():
        return require_node(state)  # one of ours, of a format we read: keep it
    if not is_node(state) and any(state.iterdir()):
        # A node is made in a new or empty directory (as systemd's StateDirectory=
        # is): one that holds something else is more likely a mistyped --state-dir.
        raise InvalidInputError(
            f"{state} is not a sovnet node and is not empty: not making a node there",
            hint="check --state-dir (or SOVNET_STATE_DIR); a new node goes in a new or "
            "empty directory",
        )
    try:
        write_atomic(state / MARKER_NAME, _MARKER_BYTES, mode=0o600)
    except OSError as exc:
        raise LocalStateError(f"cannot write {state / MARKER_NAME}: {exc.strerror}") from exc
    return state


def _marker_version(data: bytes) -> int | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(value, dict) or set(value) != {"sovnet_node"}:
        return None
    version = value["sovnet_node"]
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def _why_not(state: Path) -> str:
    if not state.exists():
        return "it does not exist"
    if not state.is_dir():
        return "it is not a directory"
    return f"it has no {MARKER_NAME} file and none of a node's files"
