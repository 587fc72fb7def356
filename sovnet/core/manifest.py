"""The signed description of a model: its files, their hashes and format facts.

A :class:`Manifest` is a frozen value with one canonical byte encoding
(:meth:`Manifest.to_bytes`, canonical JSON; see docs/spec.md) and a strict parser
(:meth:`Manifest.from_bytes`) that accepts only what :meth:`to_bytes` emits for a
valid manifest, so ``from_bytes(to_bytes(m)) == m`` and every manifest has exactly
one CID. Construction validates every field, so an invalid manifest cannot exist.

This module does not read files or check signatures: scan.py builds manifests
from disk, trust.py decides whether one is authentic.

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from sovnet.core import canonjson
from sovnet.core.cid import CID
from sovnet.core.relpath import check_relpath, check_tree
from sovnet.errors import ManifestFormatError
from sovnet.formats.fileformat import FileFormat
from sovnet.formats.gguf import GGUFFacts
from sovnet.formats.safetensors import SafetensorsFacts

FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
MAX_FILES = 10_000
MAX_FILE_SIZE = 2**53 - 1
MIN_PIECE_SIZE = 16 * 1024
MAX_PIECE_SIZE = 64 * 1024 * 1024
DEFAULT_MIN_PIECE_SIZE = 4 * 1024 * 1024
TARGET_MAX_PIECES = 65_536
MAX_GGUF_TENSORS = 1_000_000

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
ORG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # the ORG of ORG/MODEL: a publisher
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
# A publisher's channel (ORG/MODEL:CHANNEL): not a manifest field, named beside them.
CHANNEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")
DTYPE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_LICENSE_CHARS = 128
MAX_ARCHITECTURE_BYTES = 128

Facts = GGUFFacts | SafetensorsFacts | None


def piece_size_for(total_size: int) -> int:
    """The piece size sovnet publishes with: the smallest power of two of at least
    4 MiB that cuts ``total_size`` into at most 65,536 pieces, capped at 64 MiB.

    Keeps a torrent's piece layers (32 bytes a piece) near 2 MiB and far below
    libtorrent's limits of 2,097,152 pieces and 10 MB .torrent files.
    """
    size = DEFAULT_MIN_PIECE_SIZE
    while size < MAX_PIECE_SIZE and -(-total_size // size) > TARGET_MAX_PIECES:
        size *= 2
    return size


def version_order(version: str) -> tuple[object, ...]:
    """A key that orders versions as semantic versioning does, number by number:
    1.9 before 1.10 before 2.0 (runs of digits compare as numbers, anything else as
    text, numbers first); a pre-release (after "-") before its release, 1.0-rc1
    before 1.0; build metadata (after "+") and a leading "v" ignored."""
    text = version[1:] if version[:1] in ("v", "V") and version[1:2].isdigit() else version
    release, _, pre = text.split("+", 1)[0].partition("-")
    # Last, the text itself: versions equal by number (1.01, 1.1) still have one order.
    return (_runs(release), (1,) if not pre else (0, _runs(pre)), version)


def _runs(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(r)) if r.isdigit() else (1, r) for r in re.findall(r"\d+|\D+", text))


def check_identity(name: object, version: object, license: object) -> None:
    """The rules for a model's name, version and licence."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _fail("name", f"{name!r} is not of the form ORG/MODEL (letters, digits, . _ -)")
    if version is not None and (
        not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version)
    ):
        raise _fail("version", f"{version!r} is not a version (letters, digits, . _ + -)")
    if license is not None:
        license_text = _check_str("license", license)
        if not license_text.strip() or len(license_text) > MAX_LICENSE_CHARS:
            raise _fail("license", f"must be 1 to {MAX_LICENSE_CHARS} characters")


def _fail(where: str, problem: str) -> ManifestFormatError:
    return ManifestFormatError(f"manifest {where}: {problem}")


def _check_int(where: str, value: object, low: int, high: int) -> int:
    # bool is an int in Python; a manifest never means true when it says 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(where, f"expected an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(where, f"{value} is outside {low}..{high}")
    return value


def _check_optional_int(where: str, value: object, low: int, high: int) -> int | None:
    return None if value is None else _check_int(where, value, low, high)


def _check_str(where: str, value: object) -> str:
    if not isinstance(value, str):
        raise _fail(where, f"expected a string, got {type(value).__name__}")
    canonjson.check_string(value)
    return value


def _check_gguf_facts(facts: GGUFFacts, where: str) -> None:
    _check_int(f"{where}.gguf_version", facts.version, 2, 3)
    if facts.architecture is not None:
        arch = _check_str(f"{where}.architecture", facts.architecture)
        if not arch or len(arch.encode("utf-8")) > MAX_ARCHITECTURE_BYTES:
            raise _fail(f"{where}.architecture", "must be 1 to 128 bytes")
    _check_optional_int(f"{where}.file_type", facts.file_type, 0, 2**31 - 1)
    _check_int(f"{where}.tensor_count", facts.tensor_count, 0, MAX_GGUF_TENSORS)
    _check_optional_int(f"{where}.split_no", facts.split_no, 0, 65_535)
    _check_optional_int(f"{where}.split_count", facts.split_count, 1, 65_535)
    if (facts.split_no is None) != (facts.split_count is None):
        raise _fail(where, "split_no and split_count go together")
    if (
        facts.split_no is not None
        and facts.split_count is not None
        and facts.split_no >= facts.split_count
    ):
        raise _fail(where, "split_no must be below split_count")


def _check_safetensors_facts(facts: SafetensorsFacts, where: str) -> None:
    _check_int(f"{where}.tensor_count", facts.tensor_count, 0, MAX_FILE_SIZE)
    if not isinstance(facts.dtypes, tuple):
        raise _fail(f"{where}.dtypes", "expected a list")
    for dtype in facts.dtypes:
        if not isinstance(dtype, str) or not DTYPE_PATTERN.fullmatch(dtype):
            raise _fail(f"{where}.dtypes", f"{dtype!r} is not a dtype name")
    if list(facts.dtypes) != sorted(set(facts.dtypes)):
        raise _fail(f"{where}.dtypes", "must be sorted and unique")
    # Every tensor has a dtype, so the list is empty exactly when there are no tensors.
    if facts.tensor_count == 0 and facts.dtypes:
        raise _fail(f"{where}.dtypes", "a file with no tensors has no dtypes")
    if facts.tensor_count > 0 and not facts.dtypes:
        raise _fail(f"{where}.dtypes", "a file with tensors has at least one dtype")


@dataclass(frozen=True)
class FileEntry:
    """One file of a model, as the publisher hashed and validated it."""

    path: str
    size: int
    blake3: bytes
    pieces_root: bytes
    format: FileFormat
    facts: Facts = None

    def __post_init__(self) -> None:
        where = f"file {self.path!r}"
        check_relpath(self.path)
        _check_int(f"{where} size", self.size, 0, MAX_FILE_SIZE)
        for name in ("blake3", "pieces_root"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise _fail(f"{where} {name}", "must be 32 bytes")
        if self.size == 0 and self.pieces_root != bytes(32):
            raise _fail(f"{where} pieces_root", "an empty file's root is 32 zero bytes")
        if not isinstance(self.format, FileFormat):
            raise _fail(f"{where} format", f"{self.format!r} is not a file format")
        if self.format is FileFormat.GGUF:
            if not isinstance(self.facts, GGUFFacts):
                raise _fail(f"{where} facts", "a gguf file needs GGUF facts")
            _check_gguf_facts(self.facts, f"{where} facts")
        elif self.format is FileFormat.SAFETENSORS:
            if not isinstance(self.facts, SafetensorsFacts):
                raise _fail(f"{where} facts", "a safetensors file needs safetensors facts")
            _check_safetensors_facts(self.facts, f"{where} facts")
        elif self.facts is not None:
            raise _fail(f"{where} facts", f"a {self.format} file has no facts")

    @property
    def blake3_hex(self) -> str:
        return self.blake3.hex()

    def to_json(self) -> dict[str, canonjson.JSONValue]:
        facts: dict[str, canonjson.JSONValue] = {}
        if isinstance(self.facts, GGUFFacts):
            facts = {
                "architecture": self.facts.architecture,
                "file_type": self.facts.file_type,
                "gguf_version": self.facts.version,
                "split_count": self.facts.split_count,
                "split_no": self.facts.split_no,
                "tensor_count": self.facts.tensor_count,
            }
        elif isinstance(self.facts, SafetensorsFacts):
            facts = {
                "dtypes": list(self.facts.dtypes),
                "tensor_count": self.facts.tensor_count,
            }
        return {
            "blake3": self.blake3.hex(),
            "facts": facts,
            "format": self.format.value,
            "path": self.path,
            "pieces_root": self.pieces_root.hex(),
            "size": self.size,
        }

    @classmethod
    def from_json(cls, value: object, where: str) -> FileEntry:
        obj = _exact_object(
            where, value, {"blake3", "facts", "format", "path", "pieces_root", "size"}
        )
        try:
            file_format = FileFormat(_check_str(f"{where}.format", obj["format"]))
        except ValueError as exc:
            allowed = ", ".join(f.value for f in FileFormat)
            raise _fail(f"{where}.format", f"{obj['format']!r} is not one of {allowed}") from exc
        facts_where = f"{where}.facts"
        facts: Facts = None
        if file_format is FileFormat.GGUF:
            raw = _exact_object(
                facts_where,
                obj["facts"],
                {
                    "architecture",
                    "file_type",
                    "gguf_version",
                    "split_count",
                    "split_no",
                    "tensor_count",
                },
            )
            architecture = raw["architecture"]
            if architecture is not None:
                architecture = _check_str(f"{facts_where}.architecture", architecture)
            facts = GGUFFacts(
                version=_check_int(f"{facts_where}.gguf_version", raw["gguf_version"], 2, 3),
                architecture=architecture,
                file_type=_check_optional_int(
                    f"{facts_where}.file_type", raw["file_type"], 0, 2**31 - 1
                ),
                tensor_count=_check_int(
                    f"{facts_where}.tensor_count", raw["tensor_count"], 0, MAX_GGUF_TENSORS
                ),
                split_no=_check_optional_int(f"{facts_where}.split_no", raw["split_no"], 0, 65_535),
                split_count=_check_optional_int(
                    f"{facts_where}.split_count", raw["split_count"], 1, 65_535
                ),
            )
        elif file_format is FileFormat.SAFETENSORS:
            raw = _exact_object(facts_where, obj["facts"], {"dtypes", "tensor_count"})
            dtypes = raw["dtypes"]
            if not isinstance(dtypes, list):
                raise _fail(f"{facts_where}.dtypes", "expected a list")
            facts = SafetensorsFacts(
                tensor_count=_check_int(
                    f"{facts_where}.tensor_count", raw["tensor_count"], 0, MAX_FILE_SIZE
                ),
                dtypes=tuple(_check_str(f"{facts_where}.dtypes", d) for d in dtypes),
            )
        else:
            _exact_object(facts_where, obj["facts"], set())
        return cls(
            path=_check_str(f"{where}.path", obj["path"]),
            size=_check_int(f"{where}.size", obj["size"], 0, MAX_FILE_SIZE),
            blake3=_hex32(f"{where}.blake3", obj["blake3"]),
            pieces_root=_hex32(f"{where}.pieces_root", obj["pieces_root"]),
            format=file_format,
            facts=facts,
        )


def _hex32(where: str, value: object) -> bytes:
    text = _check_str(where, value)
    if not _HEX64.fullmatch(text):
        raise _fail(where, "expected 64 lower-case hex digits")
    return bytes.fromhex(text)


def _exact_object(where: str, value: object, keys: set[str]) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _fail(where, f"expected an object, got {type(value).__name__}")
    missing = keys - value.keys()
    if missing:
        raise _fail(where, f"missing {', '.join(sorted(missing))}")
    extra = value.keys() - keys
    if extra:
        raise _fail(where, f"unknown field {sorted(extra)[0]!r}")
    return cast(Mapping[str, object], value)


@dataclass(frozen=True)
class Manifest:
    """A model: its name, version, licence, piece size and files (sorted by path)."""

    name: str
    files: tuple[FileEntry, ...]
    piece_size: int
    version: str | None = None
    license: str | None = None
    format_version: int = field(default=FORMAT_VERSION)

    def __post_init__(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise _fail(
                "sovnet_manifest",
                f"format version {self.format_version!r} is not supported (this sovnet reads "
                f"version {FORMAT_VERSION}); upgrade sovnet",
            )
        check_identity(self.name, self.version, self.license)
        _check_int("piece_size", self.piece_size, MIN_PIECE_SIZE, MAX_PIECE_SIZE)
        if self.piece_size & (self.piece_size - 1):
            raise _fail("piece_size", f"{self.piece_size} is not a power of two")
        if not isinstance(self.files, tuple) or not all(
            isinstance(f, FileEntry) for f in self.files
        ):
            raise _fail("files", "expected a tuple of FileEntry")
        if not self.files:
            raise _fail("files", "a model has at least one file")
        if len(self.files) > MAX_FILES:
            raise _fail("files", f"{len(self.files)} files is over the limit of {MAX_FILES}")
        paths = [f.path for f in self.files]
        if paths != sorted(paths):
            raise _fail("files", "not sorted by path")
        check_tree(paths)
        if self.total_size > MAX_FILE_SIZE:
            raise _fail("files", "total size is over 2**53-1 bytes")

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def cid(self) -> CID:
        return CID.of(self.to_bytes())

    def file(self, path: str) -> FileEntry:
        for entry in self.files:
            if entry.path == path:
                return entry
        raise KeyError(path)

    def to_json(self) -> dict[str, canonjson.JSONValue]:
        return {
            "files": [f.to_json() for f in self.files],
            "license": self.license,
            "name": self.name,
            "piece_size": self.piece_size,
            "sovnet_manifest": self.format_version,
            "version": self.version,
        }

    def to_bytes(self) -> bytes:
        return canonjson.dumps(self.to_json())

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse canonical manifest bytes; any other input raises ManifestFormatError."""
        value = canonjson.loads(data, max_size=MAX_MANIFEST_BYTES)
        if isinstance(value, dict) and "sovnet_manifest" in value:
            # Check the version first so that a newer manifest says "upgrade",
            # not "unknown field".
            version = value["sovnet_manifest"]
            if version != FORMAT_VERSION or isinstance(version, bool):
                raise _fail(
                    "sovnet_manifest",
                    f"format version {version!r} is not supported (this sovnet reads "
                    f"version {FORMAT_VERSION}); upgrade sovnet",
                )
        obj = _exact_object(
            "", value, {"files", "license", "name", "piece_size", "sovnet_manifest", "version"}
        )
        files = obj["files"]
        if not isinstance(files, list):
            raise _fail("files", "expected a list")
        if len(files) > MAX_FILES:
            raise _fail("files", f"{len(files)} files is over the limit of {MAX_FILES}")
        model_version = obj["version"]
        license_text = obj["license"]
        manifest = cls(
            name=_check_str("name", obj["name"]),
            version=None if model_version is None else _check_str("version", model_version),
            license=None if license_text is None else _check_str("license", license_text),
            piece_size=_check_int("piece_size", obj["piece_size"], MIN_PIECE_SIZE, MAX_PIECE_SIZE),
            files=tuple(FileEntry.from_json(f, f"files[{i}]") for i, f in enumerate(files)),
        )
        # canonjson.loads proved the bytes canonical for their JSON value; this proves
        # the value is the one this manifest encodes (no field was read differently).
        if manifest.to_bytes() != data:
            raise _fail("", "bytes are not the canonical encoding of the manifest they hold")
        return manifest
