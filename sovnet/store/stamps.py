"""Verification stamps: which inode held a blob's bytes when they were last verified.

    <state>/stamps/<blake3 hex>
    {"ctime_ns":…,"dev":…,"ino":…,"mtime_ns":…,"size":…,"sovnet_stamp":1}

A stamp records ``(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)`` of a blob
at a moment its content was known to hash to its name: when the store commits a
model (the blob was just hashed by publish or fetch), or after the run gate
re-hashed it. While a file still has exactly that stat, the gate trusts it without
reading it again; this is what makes ``sovnet run`` cost a few ``stat`` calls
instead of a full read of the model.

Why ctime as well as mtime: an in-place edit can be hidden from mtime with
``touch -r`` / ``utime()``, but every write, ``utime()``, ``chmod`` or link
count change also sets ctime to *now*, and nothing short of changing the
system clock sets it back. The price is a one-off re-hash after harmless
metadata changes (a second model hard-linking the same blob, ``chmod``).

Stamps are a local cache, not a signed format: a missing, unreadable or damaged
stamp only means "re-hash". They defend against accidents and in-place edits
(publish hard-links the publisher's own files into the store), not against
someone who can write the store: such a person can rewrite stamps too, which is
what ``sovnet run --verify-full`` and ``sovnet verify`` are for.

One stamp per blob, not per model: blobs are shared between models, and so is
the inode a stamp describes.

    <state>/stamps/<blake3 hex>.gguf
    {"context_length":…,"facts":{…},"sovnet_header_check":1}

Beside a GGUF blob's stamp, the verdict of the run gate's header check
(headercheck.py) on those bytes: what the header says, for the parser version
given. It depends on the content alone, which the blob's name fixes, so once the
gate has confirmed that a file still holds those bytes (its stamp matched, or it
re-hashed intact) it may reuse the verdict instead of parsing a header of
megabytes again (a 262,144-token vocabulary takes the parser 0.14 s here).
``--verify-full`` ignores it. Like stamps, a cache: damaged or of another
version means "check again".
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from sovnet.store.atomicfile import replace_with, write_new

STAMP_VERSION = 1
MAX_STAMP_BYTES = 4096
_FIELDS = ("dev", "ino", "size", "mtime_ns", "ctime_ns")


@dataclass(frozen=True)
class Stamp:
    dev: int
    ino: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> Stamp:
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)

    def to_bytes(self) -> bytes:
        fields = {name: getattr(self, name) for name in _FIELDS}
        return json.dumps(
            {**fields, "sovnet_stamp": STAMP_VERSION}, sort_keys=True, separators=(",", ":")
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Stamp | None:
        """The stamp in ``data``, or None for anything that is not exactly one."""
        if len(data) > MAX_STAMP_BYTES:
            return None
        try:
            value = json.loads(data)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return None
        if (
            not isinstance(value, dict)
            or set(value) != {*_FIELDS, "sovnet_stamp"}
            or value["sovnet_stamp"] != STAMP_VERSION
        ):
            return None
        numbers = [value[name] for name in _FIELDS]
        # bool is an int in Python; a stamp never means True when it says 1.
        if not all(type(n) is int and 0 <= n < 2**64 for n in numbers):
            return None
        return cls(*numbers)


def stamp_path(directory: Path, blake3: bytes) -> Path:
    return directory / blake3.hex()


def _read(path: Path) -> bytes | None:
    """A cache file's bytes; None if it is missing, unreadable or too long to be ours."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_STAMP_BYTES + 1)
    except OSError:
        return None
    return data if len(data) <= MAX_STAMP_BYTES else None


def read(directory: Path, blake3: bytes) -> Stamp | None:
    """The stamp of a blob, or None if there is none or it cannot be used."""
    data = _read(stamp_path(directory, blake3))
    return None if data is None else Stamp.from_bytes(data)


def write(directory: Path, blake3: bytes, stamp: Stamp) -> None:
    """Replace a blob's stamp atomically.

    Not fsynced, unlike the store's other files: after a crash a stamp may be
    missing or torn, which reads as "no stamp" and costs one re-hash, never a
    wrong answer. Skipping two fsyncs per file keeps commits of many-file models
    cheap.
    """
    _replace(directory, stamp_path(directory, blake3), stamp.to_bytes())


def _replace(directory: Path, target: Path, data: bytes) -> None:
    """Write ``target`` in ``directory`` through a temp name and a rename (no fsync)."""
    directory.mkdir(mode=0o700, exist_ok=True)  # stores made before stamps existed
    replace_with(target, lambda temp: write_new(temp, data))


def record_if_missing(directory: Path, blake3: bytes, blob: Path) -> None:
    """Stamp a blob that has no stamp yet (store commit).

    An existing stamp is kept even if it no longer matches: the blob may have
    changed since it was verified, and only a re-hash may vouch for it again.
    """
    if not stamp_path(directory, blake3).exists():
        write(directory, blake3, Stamp.of(os.stat(blob)))


def drop(directory: Path, blake3: bytes) -> None:
    stamp_path(directory, blake3).unlink(missing_ok=True)
    header_path(directory, blake3).unlink(missing_ok=True)


HEADER_SUFFIX = ".gguf"
HEADER_CHECK_VERSION = 1  # bump whenever formats/gguf.py accepts or reports differently


def header_path(directory: Path, blake3: bytes) -> Path:
    return directory / (blake3.hex() + HEADER_SUFFIX)


def read_header(directory: Path, blake3: bytes) -> dict[str, object] | None:
    """The cached header verdict of a blob's content (unvalidated beyond its shape)."""
    data = _read(header_path(directory, blake3))
    if data is None:
        return None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if (
        not isinstance(value, dict)
        or set(value) != {"context_length", "facts", "sovnet_header_check"}
        or value["sovnet_header_check"] != HEADER_CHECK_VERSION
        or not isinstance(value["facts"], dict)
    ):
        return None
    return value


def write_header(
    directory: Path, blake3: bytes, facts: dict[str, object], context: int | None
) -> None:
    """Keep the header verdict of a blob's content (not fsynced: see :func:`write`)."""
    data = json.dumps(
        {"context_length": context, "facts": facts, "sovnet_header_check": HEADER_CHECK_VERSION},
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    if len(data) <= MAX_STAMP_BYTES:  # a longer one could never be read back
        _replace(directory, header_path(directory, blake3), data)
