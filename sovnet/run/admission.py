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

``sovnet run`` runs :func:`admit` in a forked child (gate_child.py) while its other
child imports llama-cpp-python's Python dependencies; that overlap is what keeps
``sovnet run`` close to a bare llama-cpp-python script. So this module imports the
store, trust, hashing and model-choosing modules inside the functions that use
them, not at the top: they are then imported in the gate's child, after the fork,
instead of in the CLI before it (cryptography among them: a few hundred
milliseconds on this project's 2-core machines that would otherwise come first).

This module decides what may be run; it imports no llama_cpp and runs nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sovnet.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    RevokedError,
    SovnetError,
    TrustError,
)

if TYPE_CHECKING:
    from sovnet.core.cid import CID
    from sovnet.core.manifest import FileEntry, Manifest
    from sovnet.run.headercheck import HeaderReport, Limits
    from sovnet.store.store import Store
    from sovnet.trust.gate import OpenedManifest
    from sovnet.trust.keys import TrustStore
    from sovnet.trust.publisher_advisories import Advisory


_REFETCH_HINT = (
    "`sovnet verify {cid}` checks every file; `sovnet fetch {cid}` downloads the damaged "
    "ones again from peers (a publisher whose own file changed publishes it again)"
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
    advisories: tuple[str, ...] = ()  # what the publisher advised of it, to warn about

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
            "advisories": list(self.advisories),
        }

    @classmethod
    def from_json(cls, value: dict[str, object]) -> Admission:
        """The inverse of :meth:`to_json` (for our own gate child's verdict)."""
        version, entry, rehashed = value["version"], value["entry"], value["rehashed"]
        context_length, advisories = value["context_length"], value["advisories"]
        if not isinstance(rehashed, list) or not isinstance(advisories, list):
            raise ValueError("rehashed or advisories is not a list")
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
            advisories=tuple(str(text) for text in advisories),
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
    allow_revoked: bool = False,
) -> Admission:
    """Pass the gate or raise; ``runnable`` asks for a GGUF file llama.cpp can load.

    A release its publisher's advisories revoked is refused unless ``allow_revoked``
    (the operator's decision: nothing remote stops or deletes a model); other
    advisories come back in :attr:`Admission.advisories`, to be said.

    With ``runnable=False`` (an export) every GGUF file of the model is
    header-checked, since the tools that read the export may open any of them.
    """
    from sovnet.formats.fileformat import FileFormat
    from sovnet.run.entry import check_split_facts, choose_entry
    from sovnet.run.headercheck import Limits

    opened = open_model(store, trust, ref)
    cid, manifest = opened.cid, opened.manifest
    label = f"{manifest.name} {manifest.version}" if manifest.version else manifest.name
    action = "run" if runnable else "export"
    advised = _advisories(store, opened, action, allow_revoked)
    rehashed = check_files(store, cid, manifest, full=verify_full, action=action)
    if runnable:
        entry, parts = choose_entry(manifest, label, gguf_file)
        checked = parts
    else:
        entry = None
        checked = tuple(f for f in manifest.files if f.format is FileFormat.GGUF)
    view = store.model_dir(cid)
    reports = _header_reports(store, view, checked, verify_full, limits or Limits())
    for part, report in zip(checked, reports, strict=True):
        check_split_facts(part.path, report.facts.split_no, report.facts.split_count)
    from sovnet.store.retention import Retention

    Retention(store).touch(cid)  # used: the last a store's budget collects
    return Admission(
        cid=str(cid),
        name=manifest.name,
        version=manifest.version,
        model_dir=view,
        entry=None if entry is None else entry.path,
        rehashed=rehashed,
        # The entry is checked first: choose_entry puts it at the head of the parts.
        context_length=reports[0].context_length if entry is not None else None,
        advisories=advised,
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
    released = _pinned_release(store, ref)
    if released is not None:
        if not store.has(released):
            raise NotFoundError(
                f"{ref} is {released}, released by its publisher's root, and not here",
                hint=f"`sovnet fetch {ref}` fetches it",
            )
        return store.open(released, trust)
    if ":" in ref:
        raise NotFoundError(
            f"no release of a pinned publisher root is named {ref}",
            hint="`sovnet trust roots` lists the pinned roots; `sovnet fetch "
            f"{ref}` refreshes what they released",
        )
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
    raise NotFoundError(
        f"no model named {ref} is in this store",
        hint="`sovnet ls` lists what is here; `sovnet fetch CID` fetches a model from "
        "peers by the CID its publisher gives",
    )


def _pinned_release(store: Store, ref: str) -> CID | None:
    """The CID a pinned publisher root released as ``ref``, as last refreshed here."""
    from sovnet.store.keyfiles import any_root_pinned

    if not any_root_pinned(store.root):
        return None
    from sovnet.store.rootfiles import RootFiles

    release = RootFiles(store.root).resolve(ref)
    return release.cid if release is not None else None


def _advisories(
    store: Store, opened: OpenedManifest, action: str, allow_revoked: bool
) -> tuple[str, ...]:
    """What pinned publishers advised of ``cid``, as this node last heard (offline):
    a revocation refuses it unless allowed; the rest is said. An advisory counts only
    on a release of the manifest's own name and version: a publisher that released
    another's manifest under its own name says nothing of it."""
    from sovnet.store.keyfiles import any_root_pinned

    if not any_root_pinned(store.root):
        return ()
    from sovnet.store.rootfiles import RootFiles

    said = []
    if opened.released_as is not None:  # the gate found it a release of its name
        unheard = RootFiles(store.root).unheard_advisories(opened.manifest.name.split("/")[0])
        if unheard is not None:
            said.append(unheard)
    for advisory in advisories_of(store, opened):
        if advisory.kind == "revoked" and not allow_revoked:
            raise RevokedError(
                f"refusing to {action} it: {advisory.describe()}",
                hint="the bytes stay in the store; `--allow-revoked` (or revoked = "
                f'"allow" in sovnetd.toml) {action}s it anyway, at your own risk',
            )
        said.append(advisory.describe())
    return tuple(said)


def advisories_of(store: Store, opened: OpenedManifest) -> list[Advisory]:
    """What pinned publishers advised of this model, as this node last heard: an
    advisory counts only on a release of the manifest's own name and version."""
    from sovnet.store.keyfiles import any_root_pinned

    if not any_root_pinned(store.root):
        return []
    from sovnet.store.rootfiles import RootFiles

    manifest = opened.manifest
    return [
        advisory
        for advisory in RootFiles(store.root).advisories()
        if advisory.release.cid == opened.cid
        and advisory.release.name == manifest.name
        and manifest.version in (None, advisory.release.version)
    ]


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
