"""The run gate: nothing reaches llama.cpp (or an export) that this module did not admit.

:func:`admit` takes a model reference, a CID or ``ORG/MODEL[@VERSION]``, and in order:

1. resolves it among the models in the store and opens its manifest through the
   trust gate (:func:`open_model`, trust.open_manifest): its bytes hash to the CID
   and a trusted key signed it, else TrustError (exit 6). A name counts only on
   manifests signed by a trusted key, since anyone can give a model any name;
2. checks every file of the model view against the manifest: a file whose stat
   equals its verification stamp (stamps.py) is the verified inode, untouched;
   any other is re-hashed (filehash.py: BLAKE3 and BEP 52 root), and so is every
   file with ``verify_full``; a difference is an IntegrityError (exit 5) naming
   the file. A file that re-hashes intact gets a fresh stamp;
3. when a runnable model is asked for, picks the GGUF file to load: the only one,
   or the first split of a complete ``NAME-0000k-of-0000n.gguf`` set (else
   RunnerError, exit 10, which for safetensors-only models points to
   ``sovnet export --hf-cache``);
4. parses the header of every GGUF file that will be handed over with sovnet's
   own bounded parser, in a resource-limited child process (headercheck.py), and
   checks split facts against file names, else MalformedFileError (exit 4).

The :class:`Admission` it returns names files inside the model view
(``models/<cid>/``): the only place a runner is pointed at, where split files sit
beside each other under their published names, as llama.cpp expects.

:func:`admit_in_child` runs :func:`admit` in a forked child and hands back its
verdict. ``sovnet run`` starts it first thing and meanwhile imports llama-cpp-python's
Python dependencies (never llama_cpp itself) on the other core; that overlap is
what keeps ``sovnet run`` close to a bare llama-cpp-python script. To make the fork
cheap, this module imports the store, trust and hashing modules (and anything
else it can) inside the functions that use them, not at the top.

This module decides what may be run; it imports no llama_cpp and runs nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sovnet.errors import (
    IntegrityError,
    InvalidInputError,
    MalformedFileError,
    NotFoundError,
    RunnerError,
    SovnetError,
    TrustError,
    error_from_json,
)

if TYPE_CHECKING:
    from sovnet.core.cid import CID
    from sovnet.core.manifest import FileEntry, Manifest
    from sovnet.run.headercheck import HeaderReport, Limits
    from sovnet.store.store import Store
    from sovnet.trust.gate import OpenedManifest
    from sovnet.trust.keys import TrustStore

# llama.cpp's split naming (gguf-split, llama_split_path): "%s-%05d-of-%05d.gguf".
SPLIT_NAME = re.compile(r"(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf")
# GGUF files of this architecture are multimodal projectors, loaded beside a model.
PROJECTOR_ARCHITECTURE = "clip"
MAX_VERDICT_BYTES = 4 * 1024 * 1024

_REFETCH_HINT = (
    "`sovnet verify {cid}` checks every file; remove the model (`sovnet rm {cid}`) and "
    "publish or fetch it again"
)


@dataclass(frozen=True)
class Admission:
    """A model that passed the gate; ``entry`` is the GGUF file to load, if asked for."""

    cid: str
    name: str
    version: str | None
    model_dir: Path
    entry: str | None
    rehashed: tuple[str, ...]  # files whose stamps had changed, re-hashed and found intact
    context_length: int | None = None  # the entry's trained context length, if it says

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name

    @property
    def entry_path(self) -> Path:
        if self.entry is None:
            raise ValueError("this admission names no GGUF file to load")
        return self.model_dir / self.entry

    def to_json(self) -> dict[str, object]:
        return {
            "cid": self.cid,
            "name": self.name,
            "version": self.version,
            "model_dir": str(self.model_dir),
            "entry": self.entry,
            "rehashed": list(self.rehashed),
            "context_length": self.context_length,
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> Admission:
        """The inverse of :meth:`to_json` (for our own gate child's verdict)."""
        version, entry, rehashed = value["version"], value["entry"], value["rehashed"]
        context_length = value["context_length"]
        if not isinstance(rehashed, list):
            raise ValueError("rehashed is not a list")
        if context_length is not None and not isinstance(context_length, int):
            raise ValueError("context_length is not an integer")
        return cls(
            cid=str(value["cid"]),
            name=str(value["name"]),
            version=None if version is None else str(version),
            model_dir=Path(str(value["model_dir"])),
            entry=None if entry is None else str(entry),
            rehashed=tuple(str(path) for path in rehashed),
            context_length=context_length,
        )


def admit(
    store: Store,
    trust: TrustStore,
    ref: str,
    *,
    verify_full: bool = False,
    runnable: bool = True,
    gguf_file: str | None = None,
    limits: Limits | None = None,
) -> Admission:
    """Pass the gate or raise; ``runnable`` asks for a GGUF file llama.cpp can load.

    With ``runnable=False`` (an export) every GGUF file of the model is
    header-checked, since the tools that read the export may open any of them.
    """
    from sovnet.run.headercheck import Limits

    opened = open_model(store, trust, ref)
    cid, manifest = opened.cid, opened.manifest
    label = f"{manifest.name} {manifest.version}" if manifest.version else manifest.name
    action = "run" if runnable else "export"
    rehashed = check_files(store, cid, manifest, full=verify_full, action=action)
    if runnable:
        entry, parts = choose_entry(manifest, label, gguf_file)
        checked = parts
    else:
        entry = None
        checked = tuple(f for f in manifest.files if f.format.value == "gguf")
    view = store.model_dir(cid)
    reports = _header_reports(store, view, checked, verify_full, limits or Limits())
    for part, report in zip(checked, reports, strict=True):
        _check_split_facts(part.path, report.facts.split_no, report.facts.split_count)
    return Admission(
        cid=str(cid),
        name=manifest.name,
        version=manifest.version,
        model_dir=view,
        entry=None if entry is None else entry.path,
        rehashed=rehashed,
        # The entry is checked first: choose_entry puts it at the head of the parts.
        context_length=reports[0].context_length if entry is not None else None,
    )


def _header_reports(
    store: Store, view: Path, files: Sequence[FileEntry], full: bool, limits: Limits
) -> list[HeaderReport]:
    """The header check of each file: reused from an earlier check of the same bytes
    (check_files has just confirmed each file holds the bytes its name says), else
    parsed in the limited child, and kept for next time."""
    from sovnet.formats.gguf import GGUFFacts
    from sovnet.run.headercheck import HeaderReport, check_headers
    from sovnet.store import stamps

    found: dict[int, HeaderReport] = {}
    for index, entry in enumerate(files):
        cached = None if full else stamps.read_header(store.stamps, entry.blake3)
        if cached is None:
            continue
        try:
            facts = GGUFFacts(**cached["facts"])  # type: ignore[arg-type]
        except TypeError:
            continue
        context = cached["context_length"]
        found[index] = HeaderReport(facts, context if isinstance(context, int) else None)
    missing = [i for i in range(len(files)) if i not in found]
    fresh = check_headers([(files[i].path, view / files[i].path) for i in missing], limits)
    for index, report in zip(missing, fresh, strict=True):
        found[index] = report
        with contextlib.suppress(OSError):  # a cache: failing to keep it costs nothing
            stamps.write_header(
                store.stamps, files[index].blake3, asdict(report.facts), report.context_length
            )
    return [found[i] for i in range(len(files))]


# -- 1. which model -----------------------------------------------------------------


def open_model(store: Store, trust: TrustStore, ref: str) -> OpenedManifest:
    """The trusted manifest ``ref`` names: a CID, or the one trusted model of that name.

    ``ORG/MODEL@VERSION`` must match name and version exactly. A bare ``ORG/MODEL``
    must match exactly one trusted model: sovnet does not guess which of several
    versions is "newest" (versions are free-form strings; a wrong guess would run a
    model you did not mean), it lists them and asks.
    """
    from sovnet.core.cid import CID
    from sovnet.core.manifest import NAME_PATTERN
    from sovnet.trust.gate import UNTRUSTED_HINT

    if "/" not in ref:
        return store.open(CID.parse(ref), trust)
    name, at, version = ref.partition("@")
    if not NAME_PATTERN.fullmatch(name) or (at and not version):
        raise InvalidInputError(
            f"{ref!r} is neither a CID nor ORG/MODEL[@VERSION]",
            hint="`sovnet ls` lists the models here, with their CIDs",
        )
    trusted: list[OpenedManifest] = []
    untrusted: list[CID] = []
    for cid in store.cids():
        try:
            opened = store.open(cid, trust, require_trusted=False)
        except SovnetError:
            continue  # a damaged manifest is `sovnet ls`'s to report, not a match
        manifest = opened.manifest
        if manifest.name != name or (at and manifest.version != version):
            continue
        if opened.trusted:
            trusted.append(opened)
        else:
            untrusted.append(cid)
    if len(trusted) == 1:
        return trusted[0]
    if trusted:
        listed = ", ".join(f"{o.manifest.version or '(no version)'} {o.cid}" for o in trusted)
        raise InvalidInputError(
            f"{ref} names {len(trusted)} trusted models: {listed}",
            hint=f"say which: `{name}@VERSION`, or its CID",
        )
    if untrusted:
        raise TrustError(
            f"{ref} is here only as {', '.join(map(str, untrusted))}, which no trusted key signed",
            hint=UNTRUSTED_HINT,
        )
    raise NotFoundError(f"no model named {ref} is in this store", hint="`sovnet ls` lists them")


# -- 2. are the files the verified ones ---------------------------------------------


def check_files(
    store: Store, cid: CID, manifest: Manifest, *, full: bool, action: str = "run"
) -> tuple[str, ...]:
    """Check the model view against the manifest; the paths that had to be re-hashed."""
    from sovnet.store import stamps

    view = store.model_dir(cid)
    stale: list[FileEntry] = []
    for entry in manifest.files:
        try:
            info = os.lstat(view / entry.path)
        except FileNotFoundError:
            raise _differs(cid, manifest, entry, "is missing from the model view", action) from None
        if not stat.S_ISREG(info.st_mode):
            raise _differs(cid, manifest, entry, "is not a regular file in the model view", action)
        if info.st_size != entry.size:
            problem = f"is {info.st_size} bytes, the manifest says {entry.size}"
            raise _differs(cid, manifest, entry, problem, action)
        if full or stamps.read(store.stamps, entry.blake3) != stamps.Stamp.of(info):
            stale.append(entry)
    if stale:
        _rehash(store, cid, manifest, stale, action)
    return tuple(entry.path for entry in stale)


def _rehash(
    store: Store, cid: CID, manifest: Manifest, entries: Sequence[FileEntry], action: str
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from sovnet.store import stamps
    from sovnet.store.filehash import Difference, check_fd

    view = store.model_dir(cid)
    # The executor's threads end with this block: headercheck forks right after.
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as executor:
        for entry in entries:
            fd = os.open(view / entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                before = os.fstat(fd)
                check = check_fd(fd, entry, executor)
                after = os.fstat(fd)
            finally:
                os.close(fd)
            if check.difference is Difference.PIECES_ROOT:
                problem = "has a BEP 52 root the manifest does not"
                raise _differs(cid, manifest, entry, problem, action)
            if check.difference is not None:
                problem = (
                    f"differs from the manifest (BLAKE3 {check.digest.blake3.hex()[:16]}…, "
                    f"signed {entry.blake3.hex()[:16]}…)"
                )
                raise _differs(cid, manifest, entry, problem, action)
            stamp = stamps.Stamp.of(after)
            if stamps.Stamp.of(before) == stamp:
                # A read-only store keeps the old stamp: the next run re-hashes again.
                with contextlib.suppress(OSError):
                    stamps.write(store.stamps, entry.blake3, stamp)


def _differs(
    cid: CID, manifest: Manifest, entry: FileEntry, problem: str, action: str
) -> IntegrityError:
    return IntegrityError(
        f"{entry.path} of {manifest.name} {problem}; refusing to {action} it",
        hint=_REFETCH_HINT.format(cid=cid),
    )


# -- 3. which file llama.cpp loads --------------------------------------------------


def choose_entry(
    manifest: Manifest, label: str, wanted: str | None = None
) -> tuple[FileEntry, tuple[FileEntry, ...]]:
    """The GGUF file to hand llama.cpp, and every file it will open (its splits)."""
    ggufs = [f for f in manifest.files if f.format.value == "gguf"]
    if not ggufs:
        raise _no_gguf(manifest, label)
    if wanted is not None:
        chosen = [f for f in ggufs if f.path == wanted]
        if not chosen:
            raise NotFoundError(
                f"{label} has no GGUF file {wanted!r}; it has: " + ", ".join(f.path for f in ggufs),
            )
        candidates = chosen
    else:
        candidates = [f for f in ggufs if _is_model_entry(f)]
    if len(candidates) != 1:
        listed = ", ".join(f.path for f in (candidates or ggufs))
        raise RunnerError(
            f"{label} holds {len(candidates) or 'no'} GGUF models llama.cpp could start from: "
            f"{listed}",
            hint="choose the file with --file PATH",
        )
    entry = candidates[0]
    match = SPLIT_NAME.fullmatch(entry.path)
    if match is None:
        return entry, (entry,)
    if int(match["no"]) != 1:
        raise RunnerError(
            f"{entry.path} is split {int(match['no'])} of a split model; "
            "llama.cpp starts from split 00001",
            hint="choose the first split with --file",
        )
    by_path = {f.path: f for f in ggufs}
    count = int(match["count"])
    parts = []
    for number in range(1, count + 1):
        path = f"{match['stem']}-{number:05d}-of-{count:05d}.gguf"
        if path not in by_path:
            raise RunnerError(
                f"{label} is a split model of {count} files, but {path} is not part of it",
                hint="the publisher must publish every split in one model",
            )
        parts.append(by_path[path])
    return entry, tuple(parts)


def _is_model_entry(entry: FileEntry) -> bool:
    from sovnet.formats.gguf import GGUFFacts

    match = SPLIT_NAME.fullmatch(entry.path)
    if match is not None and int(match["no"]) != 1:
        return False  # a later split: llama.cpp finds it from the first
    facts = entry.facts
    return not (isinstance(facts, GGUFFacts) and facts.architecture == PROJECTOR_ARCHITECTURE)


def _no_gguf(manifest: Manifest, label: str) -> RunnerError:
    if any(f.format.value == "safetensors" for f in manifest.files):
        return RunnerError(
            f"{label} holds safetensors weights; llama.cpp runs GGUF files only",
            hint=f"`sovnet export {manifest.name} --hf-cache` makes it available offline to "
            "transformers and other Hugging Face tools; or convert it to GGUF "
            "(llama.cpp's convert_hf_to_gguf.py) and publish that",
        )
    return RunnerError(f"{label} holds no GGUF file, so llama.cpp cannot run it")


# -- 4. header facts against names ----------------------------------------------------


def _check_split_facts(path: str, split_no: int | None, split_count: int | None) -> None:
    match = SPLIT_NAME.fullmatch(path)
    named = (int(match["no"]) - 1, int(match["count"])) if match else None
    if named is None:
        if split_count not in (None, 1):
            raise MalformedFileError(
                f"{path}: its header says it is split {_ordinal(split_no)} of {split_count}, "
                "but its name is not a split name",
            )
        return
    if (split_no, split_count) != named:
        raise MalformedFileError(
            f"{path}: its name says split {named[0] + 1} of {named[1]}, its header says "
            f"{_ordinal(split_no)} of {split_count}",
        )


def _ordinal(split_no: int | None) -> str:
    return "?" if split_no is None else str(split_no + 1)


# -- the gate in a child process ----------------------------------------------------


class PendingAdmission:
    """A gate running in a forked child; :meth:`result` waits for its verdict."""

    def __init__(self, pid: int, read_fd: int) -> None:
        self._pid = pid
        self._fd = read_fd
        self._status: int | None = None

    def result(self) -> Admission:
        """The admission, or the gate's error raised here."""
        chunks = []
        total = 0
        while chunk := os.read(self._fd, 65536):
            total += len(chunk)
            if total > MAX_VERDICT_BYTES:  # not our child's doing: stop it, refuse below
                self.close()
                break
            chunks.append(chunk)
        else:
            _, self._status = os.waitpid(self._pid, 0)
        assert self._status is not None
        return _verdict(b"".join(chunks) if total <= MAX_VERDICT_BYTES else b"", self._status)

    def close(self) -> None:
        """Stop the child if it is still working (we were interrupted); idempotent."""
        if self._status is None:
            import signal

            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            _, self._status = os.waitpid(self._pid, 0)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def admit_in_child(
    state_dir: Path, ref: str, *, verify_full: bool = False, gguf_file: str | None = None
) -> PendingAdmission:
    """Start :func:`admit` for a runnable model in a forked child.

    Call it from a process with one thread (fork copies only the caller's).
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(write_fd, state_dir, ref, verify_full, gguf_file)
    os.close(write_fd)
    return PendingAdmission(pid, read_fd)


def _child(
    write_fd: int, state_dir: Path, ref: str, verify_full: bool, gguf_file: str | None
) -> None:
    code = 70
    try:
        try:
            from sovnet.store.keyfiles import NodeFiles
            from sovnet.store.store import Store

            admission = admit(
                Store(state_dir),
                NodeFiles(state_dir).load_trust(),
                ref,
                verify_full=verify_full,
                gguf_file=gguf_file,
            )
            verdict: dict[str, object] = {"admitted": admission.to_json()}
        except SovnetError as exc:
            verdict = {"error": exc.to_json()}
        except BaseException:
            import traceback

            verdict = {"bug": traceback.format_exc()[-4000:]}
        data = json.dumps(verdict).encode()
        while data:
            data = data[os.write(write_fd, data) :]
        code = 0
    finally:
        os._exit(code)  # never return into the parent's code (click, atexit, buffers)


def _verdict(data: bytes, status: int) -> Admission:
    import signal

    try:
        verdict = json.loads(data) if data else None
    except ValueError:
        verdict = None
    if isinstance(verdict, dict):
        if "admitted" in verdict:
            return Admission.from_json(verdict["admitted"])
        if "error" in verdict:
            raise error_from_json(verdict["error"])
        if "bug" in verdict:
            raise RuntimeError(f"the gate process failed:\n{verdict['bug']}")
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGBUS:
        raise IntegrityError(
            "a file of the model was truncated while it was being re-hashed; refusing to run it",
            hint="run `sovnet verify CID` once nothing is changing the store",
        )
    how = (
        f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        if os.WIFSIGNALED(status)
        else f"exited with status {os.WEXITSTATUS(status)}"
    )
    raise RunnerError(f"the gate process {how} without a verdict; refusing to run the model")
