"""A publisher's TUF repository on the node that publishes for it.

    <state>/publishers/<ORG>/N.root.json      every version of the root, complete
    <state>/publishers/<ORG>/N.targets.json   every version of its releases, complete
    <state>/publishers/<ORG>/N.advisories.json every version of its advisories, complete
    <state>/publishers/<ORG>/N.snapshot.json  signed by this node's key (the online key)
    <state>/publishers/<ORG>/timestamp.json   signed by this node's key, short-lived

These are the files a TUF client asks for (root with ``consistent_snapshot``), by
these names: other nodes serve them as they are, and verify them from the root
they pinned (publisher_root.py, publisher_targets.py). What the offline holders
signed (root, targets) is installed only once complete; snapshot and timestamp
are made here, with this node's publisher key, which the root must name as its
online key (``sovnet publisher init --online-key``).
"""

from __future__ import annotations

import datetime
import re
from contextlib import AbstractContextManager
from pathlib import Path

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Snapshot, Timestamp

from sovnet.errors import InvalidInputError, LocalStateError, TrustError
from sovnet.store.atomicfile import write_atomic
from sovnet.store.lockfile import exclusive_lock
from sovnet.store.rootfiles import RootFiles
from sovnet.trust import publisher_advisories, publisher_root, publisher_targets

_FILE_NAME = re.compile(r"(?:(\d{1,9})\.(root|targets|advisories|snapshot)|timestamp)\.json")


def served_file(state_dir: Path, publisher: str, name: str) -> bytes | None:
    """A file of ``publisher``'s TUF metadata as this node hands it to peers: its own
    repository's if it publishes for the publisher, else what its TUF client trusted
    of the root it pinned; None if neither."""
    found = PublisherFiles(state_dir, publisher).file(name)
    return found if found is not None else RootFiles(state_dir).file(publisher, name)


class PublisherFiles:
    def __init__(self, state_dir: Path, publisher: str) -> None:
        if not publisher_root.PUBLISHER_PATTERN.fullmatch(publisher):
            raise InvalidInputError(f"{publisher!r} is not a publisher name")
        self.publisher = publisher
        self.directory = state_dir / "publishers" / publisher
        self._lock = state_dir / "publishers.lock"

    @staticmethod
    def served(state_dir: Path) -> list[str]:
        """The publishers whose repositories are on this node."""
        directory = state_dir / "publishers"
        if not directory.is_dir():
            return []
        return sorted(
            p.name
            for p in directory.iterdir()
            if p.is_dir() and publisher_root.PUBLISHER_PATTERN.fullmatch(p.name)
        )

    # -- reads ---------------------------------------------------------------------------

    def file(self, name: str) -> bytes | None:
        """A file of the repository by its TUF name, for serving; None if not here."""
        if not _FILE_NAME.fullmatch(name):
            return None
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    def latest(self, role: str) -> tuple[int, bytes] | None:
        """The newest version of ``root``, ``targets`` or ``snapshot`` here."""
        versions = self._versions(role)
        if not versions:
            return None
        newest = max(versions)
        return newest, (self.directory / f"{newest}.{role}.json").read_bytes()

    def _versions(self, role: str) -> list[int]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _FILE_NAME.fullmatch(path.name)
            if match and match.group(2) == role:
                found.append(int(match.group(1)))
        return found

    # -- installs ------------------------------------------------------------------------

    def install_root(self, data: bytes) -> publisher_root.RootCheck:
        """Add a complete root: version 1, or the next version of the newest here."""
        with self._locked():
            current = self.latest("root")
            checked = publisher_root.check(data, previous=current[1] if current else None)
            if checked.publisher != self.publisher:
                raise TrustError(f"this is a root of {checked.publisher}, not {self.publisher}")
            if current is None and checked.version != 1:
                raise TrustError(f"the first root installed is version 1, not {checked.version}")
            wrong = publisher_root.problems(data, now=datetime.datetime.now(datetime.UTC))
            if wrong:
                raise InvalidInputError(
                    f"root version {checked.version} of {checked.publisher} cannot work: "
                    + "; ".join(wrong),
                    hint="make it with `sovnet publisher init` (or `rotate`), then sign it",
                )
            if not checked.complete:
                raise TrustError(
                    f"root version {checked.version} of {checked.publisher} is not signed "
                    "by enough of its keys (and of the previous version's)",
                    hint="`sovnet publisher status FILE` says who still must sign",
                )
            self._write(f"{checked.version}.root.json", data)
            return checked

    def install_targets(
        self, data: bytes, online: CryptoSigner, now: datetime.datetime
    ) -> publisher_targets.TargetsCheck:
        """Add complete targets (a newer version than here), then a new snapshot and
        timestamp for them, signed by ``online`` (this node's key)."""
        with self._locked():
            root = self.latest("root")
            if root is None:
                raise TrustError(
                    f"no root of {self.publisher} is installed on this node",
                    hint="`sovnet publisher install root.json` first",
                )
            checked = publisher_targets.check(data, root=root[1])
            if not checked.complete:
                raise TrustError(
                    f"releases version {checked.version} is signed by {len(checked.signed_by)} "
                    f"of the keys; it needs {checked.threshold}",
                    hint="the missing holders run `sovnet publisher sign FILE --root ROOT`",
                )
            _check_version(checked.version, "targets")
            current = self.latest("targets")
            wrong = publisher_targets.problems(
                data, root=root[1], previous=current[1] if current else None
            )
            if wrong:
                raise TrustError(
                    f"refusing releases version {checked.version}: "
                    + "; ".join(wrong[:5])
                    + (f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""),
                    hint="`sovnet publisher release` makes the next version from the one "
                    "installed here",
                )
            if current is not None and checked.version <= current[0]:
                raise TrustError(
                    f"releases version {checked.version} is not newer than version "
                    f"{current[0]}, installed already"
                )
            self._check_online_key(root[1], online)
            advisories = self.latest("advisories")
            if advisories is not None:
                still = publisher_advisories.check(advisories[1], targets=data)
                if not still.complete:
                    raise TrustError(
                        f"releases version {checked.version} delegate advisories to keys "
                        f"that did not sign the advisories installed (version {advisories[0]})",
                        hint="first write the next advisories (`sovnet publisher advise`, "
                        "an advisory given again will do), have keys these releases keep "
                        "sign them and install them; then install these releases",
                    )
            self._write(f"{checked.version}.targets.json", data)
            self._publish(data, advisories[0] if advisories else None, online, now)
            return checked

    def install_advisories(
        self, data: bytes, online: CryptoSigner, now: datetime.datetime
    ) -> publisher_targets.TargetsCheck:
        """Add complete advisories (a newer version than here), signed by the role the
        installed releases delegate them to; then a new snapshot and timestamp."""
        with self._locked():
            root, targets = self.latest("root"), self.latest("targets")
            if root is None or targets is None:
                raise TrustError(
                    f"no releases of {self.publisher} are installed on this node",
                    hint="advisories are on releases: install those first",
                )
            checked = publisher_advisories.check(data, targets=targets[1])
            if not checked.complete:
                raise TrustError(
                    f"advisories version {checked.version} are signed by "
                    f"{len(checked.signed_by)} of the advisories role's keys; they need "
                    f"{checked.threshold}",
                    hint="the missing holders run `sovnet publisher sign FILE`",
                )
            _check_version(checked.version, "advisories")
            wrong = publisher_advisories.problems(data, targets=targets[1], root=root[1])
            if wrong:
                raise TrustError(f"refusing advisories version {checked.version}: {wrong[0]}")
            current = self.latest("advisories")
            if current is not None and checked.version <= current[0]:
                raise TrustError(
                    f"advisories version {checked.version} is not newer than version "
                    f"{current[0]}, installed already"
                )
            self._check_online_key(root[1], online)
            self._write(f"{checked.version}.advisories.json", data)
            self._publish(targets[1], checked.version, online, now)
            return checked

    def _publish(
        self, targets: bytes, advisories: int | None, online: CryptoSigner, now: datetime.datetime
    ) -> None:
        """A new snapshot (of ``targets`` and that version of the advisories) and
        timestamp, signed by ``online``."""
        snapshot = self.latest("snapshot")
        version = snapshot[0] + 1 if snapshot else 1
        made_snapshot, timestamp = publisher_targets.online_metadata(
            targets,
            snapshot_version=version,
            timestamp_version=self._next_timestamp(version),
            online=online,
            now=now,
            advisories_version=advisories,
        )
        self._write(f"{version}.snapshot.json", made_snapshot)
        self._write("timestamp.json", timestamp)

    def _next_timestamp(self, at_least: int) -> int:
        timestamp = self.file("timestamp.json")
        if timestamp is None:
            return at_least
        return max(at_least, Metadata[Timestamp].from_bytes(timestamp).signed.version + 1)

    def renew(self, online: CryptoSigner, now: datetime.datetime) -> bool:
        """Sign snapshot and timestamp again before they expire (within half their
        lifetime), so that nodes do not see a frozen publisher; whether it did."""
        with self._locked():
            snapshot, targets = self.latest("snapshot"), self.latest("targets")
            if snapshot is None or targets is None:
                return False
            root = self.latest("root")
            assert root is not None  # targets are installed after a root only
            self._check_online_key(root[1], online)
            timestamp = self.file("timestamp.json")
            snapshot_left = Metadata[Snapshot].from_bytes(snapshot[1]).signed.expires - now
            timestamp_left = (
                Metadata[Timestamp].from_bytes(timestamp).signed.expires - now
                if timestamp is not None
                else datetime.timedelta(0)
            )
            if snapshot_left < publisher_targets.SNAPSHOT_LIFETIME / 2:
                advisories = self.latest("advisories")
                self._publish(targets[1], advisories[0] if advisories else None, online, now)
                return True
            if timestamp_left >= publisher_targets.TIMESTAMP_LIFETIME / 2:
                return False
            snapshot_version = snapshot[0]
            _, made = publisher_targets.online_metadata(
                targets[1],
                snapshot_version=snapshot_version,
                timestamp_version=self._next_timestamp(snapshot_version),
                online=online,
                now=now,
            )
            self._write("timestamp.json", made)
            return True

    def _check_online_key(self, root: bytes, online: CryptoSigner) -> None:
        keyid = online.public_key.keyid
        if not publisher_root.signs_online_alone(root, keyid):
            raise TrustError(
                f"this node's key ({keyid[:16]}) is not the online key of {self.publisher}'s "
                "root: it cannot sign its snapshot and timestamp alone",
                hint="make the root with `sovnet publisher init ... --online-key NODE.pub` "
                "(`sovnet key show --public` on this node), or rotate one in",
            )

    def _locked(self) -> AbstractContextManager[None]:
        return exclusive_lock(self._lock, what=f"the repository of {self.publisher}")

    def _write(self, name: str, data: bytes) -> None:
        try:
            self.directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomic(self.directory / name, data, mode=0o644)
        except OSError as exc:
            raise LocalStateError(f"cannot write {self.directory / name}: {exc.strerror}") from exc


def _check_version(version: int, what: str) -> None:
    if version > publisher_root.MAX_VERSION:
        raise InvalidInputError(
            f"{what} version {version} is above {publisher_root.MAX_VERSION}: no node could "
            "ask for it by name",
            hint="make the next version from the one installed here",
        )
