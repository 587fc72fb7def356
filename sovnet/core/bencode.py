"""Bencoding (BEP 3), the encoding of .torrent files and of their info dictionaries.

sovnet derives a torrent from a signed manifest, and the swarm's address (the
v2 info-hash) is the SHA-256 of the bencoded info dictionary. Encoding it here,
not in libtorrent, keeps that derivation pure and testable byte for byte;
tests check that libtorrent computes the same info-hash.

Only encoding is needed: sovnet never parses a torrent that came from a peer
(libtorrent does, and checks it against the hashes derived here).

Pure: no I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

# Containers are typed loosely (Any inside): mypy's invariant dicts would otherwise
# reject every literal nested dictionary; _encode checks each value at run time.
BValue = int | bytes | str | list[Any] | Mapping[bytes, Any] | Mapping[str, Any]


def _key(key: bytes | str) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def _encode(value: BValue, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencoding has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, str | bytes):
        raw = value.encode("utf-8") if isinstance(value, str) else value
        out.append(b"%d:" % len(raw))
        out.append(raw)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, Mapping):
        items = sorted(((_key(k), v) for k, v in value.items()), key=lambda kv: kv[0])
        for (a, _), (b, _) in itertools.pairwise(items):
            if a == b:
                raise ValueError(f"duplicate dictionary key {a!r}")
        out.append(b"d")
        for key, item in items:
            _encode(key, out)
            _encode(item, out)
        out.append(b"e")
    else:
        raise TypeError(f"{type(value).__name__} cannot be bencoded")


def encode(value: BValue) -> bytes:
    """The bencoding of ``value``; dictionary keys are sorted as raw bytes."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)
