"""The publisher roots this node pinned, on disk.

    <state>/roots/<ORG>/root.json          the newest trusted root of publisher ORG
    <state>/roots/<ORG>/root_history/N.root.json every version it trusted, from the pinned one

``roots/<ORG>/`` is the metadata directory of a TUF client (python-tuf's
ngclient): it keeps ``root.json`` (and, as it refreshes, ``timestamp.json``,
``snapshot.json`` and ``targets.json``) there, so that the highest versions seen
survive a restart and a rollback is refused after one too; it keeps every root
version in ``root_history/`` (and makes ``root.json`` a link to the newest). That is what
this node can hand on to nodes that pinned an older version (TUF walks the chain
``N+1.root.json`` by ``N+1.root.json``).

Pinning a root is a decision of this node's operator, made by comparing its
fingerprint out loud with the publisher: a root that is not complete (its own
threshold of keys did not sign it) is refused, and a root of a publisher already
pinned replaces it only when asked.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from sovnet.errors import (
    InvalidInputError,
    LocalStateError,
    NotFoundError,
    SovnetError,
    TrustError,
)
from sovnet.store.atomicfile import write_atomic
from sovnet.store.inputfile import read_input
from sovnet.store.lockfile import exclusive_lock
from sovnet.trust import publisher_advisories, publisher_root, publisher_targets
from sovnet.trust.keys import Released
from sovnet.trust.publisher_advisories import Advisory
from sovnet.trust.publisher_root import RootCheck, claimed_version
from sovnet.trust.publisher_targets import ADVISORIES_ROLE

log = logging.getLogger(__name__)

# The largest metadata file a node keeps (the releases' cap; a root's is smaller).
MAX_METADATA_FILE = publisher_targets.MAX_TARGETS_BYTES
_HISTORY = "root_history"  # python-tuf's name: its client keeps every root version there
_HISTORY_NAME = re.compile(r"(\d{1,9})\.root\.json")
_SERVED_NAME = re.compile(r"(?:([1-9]\d{0,8})\.(root|snapshot|targets|advisories)|timestamp)\.json")


@dataclass(frozen=True)
class PinnedRoot:
    check: RootCheck
    fingerprint: str  # SHA-256 of the root file, grouped, to compare out loud
    warnings: tuple[str, ...] = ()  # what will not work until the publisher rotates it

    @property
    def publisher(self) -> str:
        return self.check.publisher


def fingerprint(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()[:32].upper()
    return "-".join(digest[k : k + 4] for k in range(0, 32, 4))


class RootFiles:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "roots"
        self._lock = state_dir / "roots.lock"

    def metadata_dir(self, publisher: str) -> Path:
        """The TUF client's directory of ``publisher`` (a checked name)."""
        if not publisher_root.PUBLISHER_PATTERN.fullmatch(publisher):
            raise InvalidInputError(f"{publisher!r} is not a publisher name")
        return self.directory / publisher

    def pin(self, data: bytes, *, replace: bool = False) -> PinnedRoot:
        """Trust ``data``, a complete root, for its publisher from now on."""
        checked = publisher_root.check(data)
        if not checked.complete:
            raise TrustError(
                f"this root of {checked.publisher} is signed by {len(checked.signed_by)} of "
                f"its keys; it needs {checked.threshold}",
                hint="`sovnet publisher status FILE` says who still must sign",
            )
        wrong = publisher_root.problems(data, now=datetime.datetime.now(datetime.UTC))
        expired = [w for w in wrong if w.startswith("it expired")]
        if len(wrong) > len(expired):
            raise InvalidInputError(
                f"this root of {checked.publisher} can never work: "
                + "; ".join(w for w in wrong if w not in expired),
                hint="ask the publisher for a root made by `sovnet publisher init`",
            )
        pinned = _pinned(data, checked)
        directory = self.metadata_dir(checked.publisher)
        self._check_case(checked.publisher)
        try:
            with exclusive_lock(self._lock, what="the pinned roots"):
                current = directory / "root.json"
                if current.is_file():
                    trusted = current.read_bytes()
                    if trusted == data:
                        return pinned
                    if not replace:
                        self._check_rotation(trusted, data)  # the next version: taken
                        write_atomic(directory / _HISTORY / f"{checked.version}.root.json", data)
                        current.unlink()  # tuf's client may have made it a link
                        write_atomic(current, data)
                        return pinned
                    shutil.rmtree(directory)
                (directory / _HISTORY).mkdir(mode=0o700, parents=True)
                write_atomic(directory / _HISTORY / f"{checked.version}.root.json", data)
                write_atomic(current, data)
        except OSError as exc:
            raise LocalStateError(f"cannot pin the root in {directory}: {exc.strerror}") from exc
        return pinned

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The pinned roots' lock: `trust add`/`rm` and a refresh's commit take turns."""
        return exclusive_lock(self._lock, what="the pinned roots")

    def names(self) -> list[str]:
        """The publishers pinned here, by name (their roots not read)."""
        return [d.name for d in self._publisher_dirs() if (d / "root.json").is_file()]

    def _publisher_dirs(self) -> list[Path]:
        """The pinned publishers' directories, by name (not the copies a refresh works
        in, ``.ORG.refreshing``: no publisher name begins with a dot)."""
        if not self.directory.is_dir():
            return []
        return sorted(
            d
            for d in self.directory.iterdir()
            if publisher_root.PUBLISHER_PATTERN.fullmatch(d.name)
        )

    def _check_case(self, publisher: str) -> None:
        """Publisher names are ASCII; two that differ only in case would be one
        directory on a case-insensitive file system, and one name to a person."""
        for other in self._publisher_dirs():
            if other.name != publisher and other.name.lower() == publisher.lower():
                raise InvalidInputError(
                    f"a root of {other.name} is pinned already; {publisher} differs from "
                    "it only in case: two publishers a person could not tell apart",
                    hint=f"compare fingerprints with the publisher; `sovnet trust rm "
                    f"{other.name}` first if {publisher} replaces it",
                )

    @staticmethod
    def _check_rotation(trusted: bytes, data: bytes) -> None:
        """``data`` must be the next version of the pinned root, signed by enough of the
        pinned version's keys as well as its own (TUF's rule): a rotation, not a root
        someone made with keys of their own."""
        before = publisher_root.check(trusted)
        after = publisher_root.check(data)
        if after.version != before.version + 1:
            raise InvalidInputError(
                f"version {before.version} of {before.publisher}'s root is pinned; this is "
                f"version {after.version}",
                hint="a rotation is pinned version by version (or the node follows it by "
                "itself from its peers); `--replace` pins a root of another chain, after "
                "comparing fingerprints with the publisher",
            )
        chained = publisher_root.check(data, previous=trusted)
        if not chained.complete:
            raise TrustError(
                f"this version {after.version} of {after.publisher}'s root is signed by "
                f"{len(chained.previous_signed_by)} of the pinned version's keys; a rotation "
                f"needs {chained.previous_threshold}: it may be forged",
                hint="ask the publisher; do not --replace unless the fingerprints match",
            )

    def pinned(self) -> list[PinnedRoot]:
        """Every pinned root, as trusted now (after any rotation the client followed);
        one damaged on disk is left out (:meth:`damaged` names it)."""
        return [root for root in self._read_all() if isinstance(root, PinnedRoot)]

    def damaged(self) -> list[str]:
        """The pinned roots that cannot be read, each said with its publisher's name."""
        return [root for root in self._read_all() if isinstance(root, str)]

    def _read_all(self) -> list[PinnedRoot | str]:
        found: list[PinnedRoot | str] = []
        for directory in self._publisher_dirs():
            path = directory / "root.json"
            if not path.is_file():
                continue
            try:
                # Bounded: a root.json replaced by a link to /dev/zero or a FIFO is a
                # damaged root, not a node out of memory or waiting for ever.
                data = read_input(path, publisher_root.MAX_ROOT_BYTES, what="root")
                found.append(_pinned(data, publisher_root.check(data)))
            except SovnetError as exc:
                found.append(
                    f"the pinned root of {directory.name} ({path}) is damaged: {exc.message}; "
                    f"`sovnet trust rm {directory.name}` unpins it, `trust add` pins it again"
                )
        return found

    def trusted(self, publisher: str) -> tuple[bytes, bytes] | None:
        """The root and targets this node's TUF client last trusted for ``publisher``;
        None before its first refresh (or for a name no root is pinned under)."""
        if not publisher_root.PUBLISHER_PATTERN.fullmatch(publisher):
            return None
        directory = self.metadata_dir(publisher)
        root = read_metadata(directory / "root.json")
        targets = read_metadata(directory / "targets.json")
        if root is None or targets is None:
            return None
        return self._root_of(publisher, root, targets), targets

    def _root_of(self, publisher: str, newest: bytes, targets: bytes) -> bytes:
        """The root version ``targets`` was trusted under: the newest, unless a rotation
        changed the releases keys since. Until the publisher's next releases arrive,
        what this node trusted stays trusted, its advisories (a revocation) included,
        instead of falling silent (hostile tester's H4 on #13)."""
        if publisher_targets.verifies(targets, root=newest):
            return newest
        for _, path in sorted(self.history(publisher).items(), reverse=True):
            older = read_metadata(path)
            if older is None:
                continue
            if publisher_targets.verifies(targets, root=older):
                return older
        return newest

    def released(self) -> list[Released]:
        """Every CID the pinned publishers released, by the targets their TUF client
        trusted (checked against the root again: a file edited on disk counts for
        nothing). Expiry is not checked: a release that arrived stays one offline."""
        found: list[Released] = []
        for directory in self._publisher_dirs():
            files = self.trusted(directory.name)
            if files is None:
                continue
            try:
                releases = publisher_targets.releases(files[1], root=files[0])
            except SovnetError as exc:
                log.warning("ignoring the releases of %s: %s", directory.name, exc.message)
                continue
            targets = publisher_targets.target_files(files[1])  # parsed once, not a release
            for r in releases:
                target = targets.get(r.path)
                digest = target.hashes.get("sha256", "") if target is not None else ""
                length = target.length if target is not None else -1
                found.append(Released(r.cid, r.name, r.version, directory.name, digest, length))
        return found

    def resolve(self, ref: str) -> publisher_targets.Release | None:
        """The release ``ref`` (``ORG/MODEL``, ``:CHANNEL``, ``@VERSION``) names in what
        this node last trusted of ORG's metadata, offline; None if ORG has no pinned
        root, no releases yet, or none by that name."""
        files = self.trusted(ref.split("/", 1)[0])
        return publisher_targets.resolve_in(files[1], ref, root=files[0]) if files else None

    def advisories(self) -> list[Advisory]:
        """Every advisory the pinned publishers' advisories roles signed, as this node's
        TUF client last trusted them (checked against root and releases again: a file
        edited on disk counts for nothing). Expiry is not checked: an advisory heard
        stays heard offline."""
        found: list[Advisory] = []
        for directory in self._publisher_dirs():
            files = self.trusted(directory.name)
            data = read_metadata(directory / f"{ADVISORIES_ROLE}.json")
            if data is None:
                continue
            if files is None:
                continue
            try:
                found += publisher_advisories.advisories_in(data, targets=files[1], root=files[0])
            except SovnetError as exc:
                log.warning("ignoring the advisories of %s: %s", directory.name, exc.message)
        return found

    def unheard_advisories(self, publisher: str) -> str | None:
        """What this node knows exists of ``publisher``'s advisories and has not heard:
        the snapshot it trusted lists a version of them newer than the one here (a
        refresh failed to get them, or a peer withheld them). None when it has heard
        all there is."""
        directory = self.metadata_dir(publisher)
        try:
            listed = json.loads(read_metadata(directory / "snapshot.json") or b"")["signed"]["meta"]
            version = listed[f"{ADVISORIES_ROLE}.json"]["version"]
        except (ValueError, KeyError, TypeError):  # none there, or not a snapshot's shape
            return None
        advisories = read_metadata(directory / f"{ADVISORIES_ROLE}.json")
        here = claimed_version(advisories) if advisories is not None else None
        if isinstance(version, int) and (here is None or here < version):
            return (
                f"{publisher} signed advisories version {version}, which this node has not "
                f"heard (it has {f'version {here}' if here else 'none'}): a revocation may "
                "be among them; `sovnet ls --remote` asks the peers again"
            )
        return None

    def is_pinned(self, publisher: str) -> bool:
        """Whether a root of ``publisher`` is pinned here, readable or damaged."""
        return (
            publisher_root.PUBLISHER_PATTERN.fullmatch(publisher) is not None
            and (self.metadata_dir(publisher) / "root.json").is_file()
        )

    def unpin(self, publisher: str) -> None:
        directory = self.metadata_dir(publisher)
        if not (directory / "root.json").is_file():
            raise NotFoundError(f"no root of {publisher} is pinned", hint="`sovnet trust roots`")
        with exclusive_lock(self._lock, what="the pinned roots"):
            shutil.rmtree(directory)

    def file(self, publisher: str, name: str) -> bytes | None:
        """A metadata file of a pinned publisher by its TUF name, to hand on to other
        nodes: the root versions kept, and the newest timestamp, snapshot and targets
        this node's TUF client trusted (``N.snapshot.json`` only while N is the newest)."""
        directory = self.metadata_dir(publisher)
        match = _SERVED_NAME.fullmatch(name)
        if match is None:
            return None
        version, role = match.group(1), match.group(2) or "timestamp"
        path = directory / _HISTORY / name if role == "root" else directory / f"{role}.json"
        data = read_metadata(path)  # bounded: served to any peer that asks
        if data is None:
            return None
        if version is not None and role != "root" and claimed_version(data) != int(version):
            return None
        return data

    def history(self, publisher: str) -> dict[int, Path]:
        """The root versions this node keeps of ``publisher``, by version."""
        directory = self.metadata_dir(publisher) / _HISTORY
        versions: dict[int, Path] = {}
        for path in directory.iterdir() if directory.is_dir() else []:
            match = _HISTORY_NAME.fullmatch(path.name)
            if match:
                versions[int(match.group(1))] = path
        return versions


def read_metadata(path: Path) -> bytes | None:
    """A metadata file this node's TUF client kept, read with a bound (a file replaced
    by a huge one is not read whole at every command); None if it is not there, or
    not one (said in the log)."""
    try:
        return read_input(path, MAX_METADATA_FILE, what="metadata file")
    except NotFoundError:
        return None
    except SovnetError as exc:
        log.warning("ignoring %s: %s", path, exc.message)
        return None


def _pinned(data: bytes, checked: RootCheck) -> PinnedRoot:
    """A pinned root, with a warning if it has expired: TUF refreshes nothing through an
    expired root, only follows it to a newer version."""
    expired = [
        w
        for w in publisher_root.problems(data, now=datetime.datetime.now(datetime.UTC))
        if w.startswith("it expired")
    ]
    warnings = tuple(
        f"this root of {checked.publisher} {w[3:]}: until a newer version of it reaches this "
        f"node from its peers, nothing of {checked.publisher} can be refreshed"
        for w in expired
    )
    return PinnedRoot(checked, fingerprint(data), warnings)
