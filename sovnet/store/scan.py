"""Turn a model on disk (a directory or one file) into validated candidates.

:func:`scan_model` walks the tree without following symbolic links and refuses,
naming the file: symbolic links, devices and other non-regular files, names that
are not safe relative paths, file types that could run code or that sovnet does
not know (formats/policy.py), and empty models. It then validates every file's
content within fixed limits (GGUF and safetensors headers, JSON, UTF-8 text,
sharded-safetensors indexes) without loading tensors, and records format facts.

It does not hash or copy anything: publish.py does that in one read per file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sovnet.core.manifest import MAX_FILES, Facts
from sovnet.core.relpath import check_relpath, check_tree
from sovnet.errors import (
    MalformedFileError,
    ManifestFormatError,
    ModelRejectedError,
    UnsafeFileError,
)
from sovnet.formats import companions, policy
from sovnet.formats.fileformat import FileFormat
from sovnet.formats.gguf import parse_gguf
from sovnet.formats.safetensors import parse_safetensors

MAX_SENTENCEPIECE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ScannedFile:
    relpath: str
    source: Path
    format: FileFormat
    size: int
    facts: Facts


def _walk(root: Path, prefix: str, out: list[tuple[str, Path, os.stat_result]]) -> None:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise ModelRejectedError(f"cannot read directory {root}: {exc.strerror}") from exc
    for entry in entries:
        relpath = prefix + entry.name
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISLNK(info.st_mode):
            raise UnsafeFileError(
                f"refusing {relpath}: a symbolic link",
                hint="sovnet publishes regular files only; copy the target into the directory",
            )
        if stat.S_ISDIR(info.st_mode):
            _walk(Path(entry.path), relpath + "/", out)
        elif stat.S_ISREG(info.st_mode):
            out.append((relpath, Path(entry.path), info))
        else:
            raise UnsafeFileError(
                f"refusing {relpath}: not a regular file (device, pipe or socket)"
            )
        if len(out) > MAX_FILES:
            raise ModelRejectedError(f"{root} holds more than {MAX_FILES} files")


def list_files(model: Path) -> list[tuple[str, Path, os.stat_result]]:
    """(relative path, absolute path, lstat) of every file of the model, sorted."""
    try:
        info = os.stat(model)  # the path the user named may itself be a link
    except OSError as exc:
        raise ModelRejectedError(f"cannot publish {model}: {exc.strerror}") from exc
    found: list[tuple[str, Path, os.stat_result]] = []
    if stat.S_ISREG(info.st_mode):
        found.append((model.name, model, info))
    elif stat.S_ISDIR(info.st_mode):
        _walk(model, "", found)
    else:
        raise UnsafeFileError(f"refusing {model}: not a regular file or directory")
    if not found:
        raise ModelRejectedError(
            f"{model} holds no files", hint="point sovnet publish at a model directory or GGUF file"
        )
    try:
        for relpath, _, _ in found:
            check_relpath(relpath)
        check_tree(relpath for relpath, _, _ in found)
    except ManifestFormatError as exc:
        raise ModelRejectedError(f"cannot publish {model}: {exc.message}") from exc
    return sorted(found, key=lambda item: item[0])


def _reader(fd: int) -> Callable[[int, int], bytes]:
    def read_at(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    return read_at


def _validate(relpath: str, path: Path, file_format: FileFormat, size: int) -> tuple[Facts, object]:
    """Facts of one file, and its parsed content where later checks need it."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if file_format is FileFormat.GGUF:
            return parse_gguf(_reader(fd), size).facts, None
        if file_format is FileFormat.SAFETENSORS:
            header = parse_safetensors(_reader(fd), size)
            return header.facts, header.tensor_names
        if file_format is FileFormat.SENTENCEPIECE:
            if size > MAX_SENTENCEPIECE_BYTES:
                raise MalformedFileError(f"over {MAX_SENTENCEPIECE_BYTES} bytes")
            return None, None
        limit = (
            companions.MAX_JSON_BYTES
            if file_format is FileFormat.JSON
            else companions.MAX_TEXT_BYTES
        )
        if size > limit:
            raise MalformedFileError(f"over {limit} bytes")
        data = os.pread(fd, size + 1, 0)
        if file_format is FileFormat.JSON:
            return None, companions.check_json(relpath, data)
        companions.check_text(relpath, data)
        return None, None
    finally:
        os.close(fd)


def scan_model(model: Path) -> list[ScannedFile]:
    """Every file of the model, validated, in manifest order."""
    scanned: list[ScannedFile] = []
    shards: dict[str, frozenset[str]] = {}
    indexes: dict[str, object] = {}
    for relpath, path, info in list_files(model):
        file_format = policy.format_for(relpath)
        try:
            facts, content = _validate(relpath, path, file_format, info.st_size)
        except MalformedFileError as exc:
            message = (
                exc.message if exc.message.startswith(relpath) else f"{relpath}: {exc.message}"
            )
            raise MalformedFileError(
                f"refusing {message}",
                hint=exc.hint or f"the file does not parse as {file_format.value}; is it complete?",
            ) from exc
        except OSError as exc:
            raise ModelRejectedError(f"cannot read {relpath}: {exc.strerror}") from exc
        if file_format is FileFormat.SAFETENSORS and isinstance(content, frozenset):
            shards[relpath] = content
        if file_format is FileFormat.JSON and companions.is_index(relpath):
            indexes[relpath] = content
        scanned.append(ScannedFile(relpath, path, file_format, info.st_size, facts))
    for relpath, index in indexes.items():
        try:
            companions.check_safetensors_index(relpath, index, shards)
        except MalformedFileError as exc:
            raise MalformedFileError(f"refusing {exc.message}", hint=exc.hint) from exc
    return scanned
