"""Turn a model on disk (a directory or one file) into validated candidates.

:func:`scan_model` walks the tree without following symbolic links, except those
links.py allows (into a Hugging Face cache repository, or a directory the user
names), and keeps only the files ``--include``/``--exclude`` select: the others are
not looked at. It refuses symbolic links that lead elsewhere, devices and other
non-regular files, names that are not safe relative paths, file types that could
run code or that sovnet does not know (formats/policy.py), and empty models. It
then validates every file's content within fixed limits (GGUF and safetensors
headers, JSON, UTF-8 text, sharded-safetensors indexes) without loading tensors,
and records format facts. A refusal names every refused file at once, each with
a hint that fits it.

It does not hash or copy anything: publish.py does that in one read per file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

from sovnet.core.manifest import MAX_FILES, Facts
from sovnet.core.relpath import check_relpath, check_tree
from sovnet.errors import (
    MalformedFileError,
    ManifestFormatError,
    ModelRejectedError,
    RefusedFile,
    UnsafeFileError,
    quoted,
)
from sovnet.formats import companions, policy
from sovnet.formats.fileformat import FileFormat
from sovnet.formats.gguf import parse_gguf
from sovnet.formats.safetensors import parse_safetensors
from sovnet.store.links import Followed, follow, link_roots

MAX_SENTENCEPIECE_BYTES = 64 * 1024 * 1024
MAX_LISTED = 20  # refused files named in the message; the JSON carries up to MAX_IN_JSON
MAX_IN_JSON = 100
NAME_HINT = (
    "rename it: a manifest names files by portable relative paths (no control "
    "characters, backslashes or colons); or `--exclude` it"
)


@dataclass(frozen=True)
class ScanOptions:
    """Which files of the tree are published, and where its links may lead.

    ``include``/``exclude`` are ``hf upload``'s globs (huggingface_hub's
    filter_repo_objects): ``fnmatch`` on the path relative to the model, case
    sensitive, ``*`` matching across ``/`` (``*.bin`` is every .bin at any depth), a
    pattern ending in ``/`` meaning everything under it. A file is kept when it
    matches some include (or there is none) and no exclude.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    follow_links_within: tuple[Path, ...] = ()

    def selects(self, relpath: str, *, link: bool = False) -> bool:
        """Whether ``relpath`` is kept. A ``link`` may name a directory (it is not
        followed to find out), so a pattern ending in ``/`` selects it too."""
        names = (relpath, relpath + "/") if link else (relpath,)

        def matches(patterns: tuple[str, ...]) -> bool:
            return any(fnmatchcase(name, _glob(p)) for p in patterns for name in names)

        if self.include and not matches(self.include):
            return False
        return not matches(self.exclude)


def _glob(pattern: str) -> str:
    pattern = pattern.replace("\\", "/")
    return pattern + "*" if pattern.endswith("/") else pattern


@dataclass(frozen=True)
class ScannedFile:
    relpath: str
    source: Path  # a regular file: a link's resolved target, checked by links.py
    format: FileFormat
    size: int
    facts: Facts
    identity: tuple[int, int]  # (st_dev, st_ino) as checked: what an open must find


@dataclass
class _Listing:
    model: Path
    roots: tuple[Path, ...]
    options: ScanOptions
    found: list[tuple[str, Path, os.stat_result]] = field(default_factory=list)
    refused: list[tuple[type[ModelRejectedError], RefusedFile]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # every selected name, refused or not
    skipped: int = 0

    def add(self, relpath: str, path: Path, info: os.stat_result) -> None:
        if not self.options.selects(relpath, link=stat.S_ISLNK(info.st_mode)):
            self.skipped += 1  # not looked at: an excluded link is not even followed
            return
        self.names.append(relpath)
        if len(self.names) > MAX_FILES:
            raise ModelRejectedError(f"{self.model} holds more than {MAX_FILES} files")
        if stat.S_ISLNK(info.st_mode):
            followed = follow(path, relpath, self.roots)
            if isinstance(followed, Followed):
                self.found.append((relpath, followed.target, followed.info))
            else:
                self.refused.append((UnsafeFileError, followed))
        elif stat.S_ISREG(info.st_mode):
            self.found.append((relpath, path, info))
        else:
            refusal = RefusedFile(relpath, "not a regular file (device, pipe or socket)")
            self.refused.append((UnsafeFileError, refusal))


def _walk(root: Path, prefix: str, listing: _Listing) -> None:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        raise ModelRejectedError(f"cannot read directory {root}: {exc.strerror}") from exc
    for entry in entries:
        relpath = prefix + entry.name
        info = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(info.st_mode):
            _walk(Path(entry.path), relpath + "/", listing)
        else:
            listing.add(relpath, Path(entry.path), info)


def _listing(model: Path, options: ScanOptions) -> _Listing:
    try:
        info = os.stat(model)  # the path the user named may itself be a link
    except OSError as exc:
        raise ModelRejectedError(f"cannot publish {model}: {exc.strerror}") from exc
    listing = _Listing(model, link_roots(model, options.follow_links_within), options)
    if stat.S_ISREG(info.st_mode):
        # Named by the user, so followed wherever it leads; published under its own name.
        try:
            target = Path(os.path.realpath(model, strict=True))
            target_info = os.lstat(target)
        except OSError as exc:
            raise ModelRejectedError(f"cannot publish {model}: {exc.strerror}") from exc
        listing.add(model.name, target, target_info)
    elif stat.S_ISDIR(info.st_mode):
        _walk(model, "", listing)
    else:
        raise UnsafeFileError(f"refusing {model}: not a regular file or directory")
    if not listing.names:
        if listing.skipped:
            raise ModelRejectedError(
                f"--include/--exclude leave no file of {model} to publish",
                hint="the globs match the path relative to the model, e.g. '*.safetensors'",
            )
        raise ModelRejectedError(
            f"{model} holds no files", hint="point sovnet publish at a model directory or GGUF file"
        )
    # A name no manifest may hold (a control character, a backslash, a colon) is
    # refused with the others, not on its own.
    named = []
    for relpath in listing.names:
        try:
            check_relpath(relpath)
        except ManifestFormatError as exc:
            reason = exc.message.removeprefix(f"path {quoted(relpath)} ")
            listing.refused.append((ModelRejectedError, RefusedFile(relpath, reason, NAME_HINT)))
        else:
            named.append(relpath)
    try:
        check_tree(named)
    except ManifestFormatError as exc:
        raise ModelRejectedError(f"cannot publish {model}: {exc.message}") from exc
    kept = set(named)
    listing.found = sorted((item for item in listing.found if item[0] in kept), key=lambda i: i[0])
    return listing


def _refusal(
    model: Path, refused: list[tuple[type[ModelRejectedError], RefusedFile]]
) -> ModelRejectedError:
    """One error naming every refused file (up to MAX_LISTED in the message), each
    group of files under the hint that fits it: unsafe if any is, else malformed."""
    refused.sort(key=lambda item: item[1].path)
    files = [item for _, item in refused]
    kinds = {kind for kind, _ in refused}
    cls: type[ModelRejectedError] = ModelRejectedError
    if UnsafeFileError in kinds:
        cls = UnsafeFileError
    elif kinds == {MalformedFileError}:
        cls = MalformedFileError
    if len(files) == 1:
        message, hint = f"refusing {_shown(files[0].path)}: {files[0].reason}", files[0].hint
    else:
        by_hint: dict[str | None, list[RefusedFile]] = {}
        for item in files[:MAX_LISTED]:
            by_hint.setdefault(item.hint, []).append(item)
        lines = [f"refusing {len(files)} files of {model}:"]
        for group_hint, group in by_hint.items():
            lines += [f"  {_shown(item.path)}: {item.reason}" for item in group]
            if group_hint:
                lines.append(f"    ({group_hint})")
        if len(files) > MAX_LISTED:
            lines.append(f"  and {len(files) - MAX_LISTED} more")
        message = "\n".join(lines)
        hint = "`--exclude GLOB` leaves files out unread; `--json` lists every refused file"
    return cls(message, hint=hint, refused=tuple(files[:MAX_IN_JSON]), refused_total=len(files))


def _shown(path: str) -> str:
    """A file's name in a message: escaped if it holds what could forge a line."""
    return path if path.isprintable() else repr(path)[1:-1]


def _reader(fd: int) -> Callable[[int, int], bytes]:
    def read_at(offset: int, n: int) -> bytes:
        return os.pread(fd, n, offset)

    return read_at


class _Replaced(Exception):
    """The file opened is not the one checked: a name on its path changed meanwhile."""


def same_file(fd: int, checked: os.stat_result) -> bool:
    """Whether ``fd`` is the inode that was checked (so no swap led elsewhere)."""
    opened = os.fstat(fd)
    return (opened.st_dev, opened.st_ino) == (checked.st_dev, checked.st_ino)


def _validate(
    relpath: str, path: Path, file_format: FileFormat, info: os.stat_result
) -> tuple[Facts, object]:
    """Facts of one file, and its parsed content where later checks need it."""
    size = info.st_size
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not same_file(fd, info):
            raise _Replaced
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


def _reason(relpath: str, message: str) -> str:
    return message.removeprefix(f"{relpath}: ")


def scan_model(model: Path, options: ScanOptions | None = None) -> list[ScannedFile]:
    """Every selected file of the model, validated, in manifest order; or one
    ModelRejectedError naming every file that is refused, and why."""
    listing = _listing(model, options or ScanOptions())
    refused = listing.refused
    scanned: list[ScannedFile] = []
    shards: dict[str, frozenset[str]] = {}
    indexes: dict[str, object] = {}
    for relpath, path, info in listing.found:
        file_format = policy.classify(relpath)
        if isinstance(file_format, RefusedFile):
            refused.append((UnsafeFileError, file_format))
            continue
        try:
            facts, content = _validate(relpath, path, file_format, info)
        except MalformedFileError as exc:
            hint = exc.hint or f"the file does not parse as {file_format.value}; is it complete?"
            refused.append(
                (MalformedFileError, RefusedFile(relpath, _reason(relpath, exc.message), hint))
            )
            continue
        except _Replaced:
            reason = "replaced while it was being checked"
            refused.append((UnsafeFileError, RefusedFile(relpath, reason, "publish it again")))
            continue
        except OSError as exc:
            reason = f"cannot be read: {exc.strerror}"
            refused.append((ModelRejectedError, RefusedFile(relpath, reason)))
            continue
        if file_format is FileFormat.SAFETENSORS and isinstance(content, frozenset):
            shards[relpath] = content
        if file_format is FileFormat.JSON and companions.is_index(relpath):
            indexes[relpath] = content
        ident = (info.st_dev, info.st_ino)
        scanned.append(ScannedFile(relpath, path, file_format, info.st_size, facts, ident))
    # An index cannot be judged against shards that were themselves refused.
    if not any(item.path.endswith(".safetensors") for _, item in refused):
        for relpath, index in indexes.items():
            try:
                companions.check_safetensors_index(relpath, index, shards)
            except MalformedFileError as exc:
                refusal = RefusedFile(relpath, _reason(relpath, exc.message), exc.hint)
                refused.append((MalformedFileError, refusal))
    if refused:
        raise _refusal(model, refused)
    return scanned
