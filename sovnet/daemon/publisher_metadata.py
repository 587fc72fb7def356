"""A pinned publisher's metadata, refreshed through this node's peers.

python-tuf's client (``tuf.ngclient.Updater``) does the verifying: from the root
this node pinned (store/rootfiles.py) it walks root versions, then timestamp,
snapshot and targets, refusing what is below threshold, expired or older than
what it trusted before (it keeps that in the pinned root's directory, so a
rollback is refused after a restart too). Peers are untrusted transport, as
TUF assumes: :class:`PeerMetadata` is its fetcher, asking them one after another
over the control plane.

The client is synchronous: a refresh runs in a worker thread, and the fetcher
hands each request to the event loop (where the control plane's client lives)
and waits for it. One refresh of a publisher runs at a time, and a new client is
made for each (``refresh()`` runs once per client).

The client works in a copy of the publisher's directory: python-tuf keeps each file
as soon as it verified it, and a releases file that changes an earlier release
(equivocation) is refused only after that. What another process (``sovnet run``'s
gate) reads, and what a node killed mid-refresh restarts from, is the live
directory, which takes the copy's files only once they passed every check.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from tuf.api.exceptions import (
    DownloadError,
    DownloadHTTPError,
    ExpiredMetadataError,
    RepositoryError,
)
from tuf.api.metadata import Metadata, Snapshot, TargetFile
from tuf.api.serialization import DeserializationError
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from sovnet.core.address import PeerAddress
from sovnet.core.cid import CID
from sovnet.errors import LocalStateError, NotFoundError, SovnetError, TransferError, TrustError
from sovnet.net.control import (
    MAX_METADATA_BYTES,
    METADATA_NAME,
    PeerQueries,
    PeerRequestError,
)
from sovnet.store.atomicfile import write_atomic
from sovnet.store.rootfiles import RootFiles, fingerprint, read_metadata
from sovnet.trust import publisher_root, publisher_targets
from sovnet.trust.publisher_targets import ADVISORIES_PREFIX, ADVISORIES_ROLE

log = logging.getLogger(__name__)

SCHEME = "sovnet://"
MAX_ROOT_ROTATIONS = 64  # versions walked in one refresh (TUF's default is 256)
MAX_ALERTS = 20
MAX_ASKED = 32  # peers asked at once for a publisher's timestamp


class PeerMetadata(FetcherInterface):
    """TUF's transport over the control plane: the first peer that has a file sends it."""

    def __init__(
        self,
        peers: PeerQueries,
        addresses: Callable[[], list[PeerAddress]],
        loop: asyncio.AbstractEventLoop,
        timeout: float,
    ) -> None:
        self._peers = peers
        self._addresses = addresses
        self._loop = loop
        self._timeout = timeout
        self.last_peer: PeerAddress | None = None  # who sent the file fetched last
        self.excluded: set[PeerAddress] = set()  # peers whose metadata was refused
        # Peers that could not be asked (silent, unreachable, too much sent), and why:
        # not asked again in this refresh, so a silent peer costs one timeout, not one a file.
        self.unreachable: dict[PeerAddress, str] = {}
        self.directory: Path | None = None  # the client's (a copy's): its root versions
        self.broken_root: str | None = None  # a next root, well signed, that can never work

    def _fetch(self, url: str) -> Iterator[bytes]:
        publisher, _, name = url.removeprefix(SCHEME).partition("/")
        if not METADATA_NAME.fullmatch(name):
            # The control plane serves no such name (a role or version a root may name
            # but no node can): not found, and no peer is blamed for it.
            raise DownloadHTTPError(f"{publisher}'s {name} is not a name peers serve", 404)
        peers = [p for p in self._addresses() if p not in self.excluded | set(self.unreachable)]
        if name == "timestamp.json":
            found = self._newest(publisher, name, peers)
        else:
            found = self._first(publisher, name, peers)
        if found is not None:
            self.last_peer, data = found
            if name.endswith(".root.json"):
                self._follow_only_sound(publisher, name, data)
            return iter([data])
        errors = list(self.unreachable.values())
        raise DownloadHTTPError(
            f"no peer has {publisher}'s {name}" + (f" ({'; '.join(errors[:3])})" if errors else ""),
            404,
        )

    def _follow_only_sound(self, publisher: str, name: str, data: bytes) -> None:
        """A next root version, chained (signed by enough keys of the version before
        and of its own), that is not what its holders were shown (a key under
        another's id, releases signed by fewer keys than the root) or can never work,
        is not followed: the node stays on the version it has, as if there were no
        newer one, and says why (the log, `sovnet status`). One not chained is left to
        python-tuf, which refuses it and blames the peer: a hostile peer's unsigned
        junk must not stop a node from following the publisher's real next root."""
        version = publisher_root.claimed_version(data)
        before = (
            read_metadata(self.directory / "root_history" / f"{version - 1}.root.json")
            if self.directory is not None and version is not None and version > 1
            else None
        )
        try:
            chained = before is not None and publisher_root.check(data, previous=before).complete
            wrong = publisher_root.problems(data, now=datetime.datetime.now(datetime.UTC))
        except SovnetError:
            return  # malformed: python-tuf refuses it, and the peer is excluded
        wrong = [w for w in wrong if not w.startswith("it expired")]
        if chained and wrong and version is not None:
            self.broken_root = (
                f"publisher {publisher}'s root version {version} is signed by its holders but "
                f"can never work ({'; '.join(wrong[:3])}): this node stays on version "
                f"{version - 1}"
            )
            log.error("%s", self.broken_root)
            raise DownloadHTTPError(f"{publisher}'s {name} is not followed: {wrong[0]}", 404)

    def _first(
        self, publisher: str, name: str, peers: list[PeerAddress]
    ) -> tuple[PeerAddress, bytes] | None:
        """The file from the first peer that has it: versioned files are the same
        wherever they come from (the snapshot names their versions)."""
        for peer in peers:
            for _, found in self._ask(publisher, name, [peer]):  # none: it was not reached
                if found is not None:
                    return peer, found
        return None

    def _newest(
        self, publisher: str, name: str, peers: list[PeerAddress]
    ) -> tuple[PeerAddress, bytes] | None:
        """The timestamp of the highest version any peer has, all asked at once: a stale
        peer (or one that hides the newest advisories) is not taken at its word
        because it answered first. A forged high version is refused by the client,
        its peer excluded, and the next highest taken."""
        answers = [(peer, data) for peer, data in self._ask(publisher, name, peers) if data]
        if not answers:
            return None
        return max(answers, key=lambda answer: publisher_root.claimed_version(answer[1]) or -1)

    def _ask(
        self, publisher: str, name: str, peers: list[PeerAddress]
    ) -> list[tuple[PeerAddress, bytes | None]]:
        """Each peer's answer (None: it has none), asked at once, each within the
        timeout; a peer that cannot be asked is noted in ``unreachable``."""

        async def one(peer: PeerAddress) -> bytes | BaseException | None:
            try:
                return await asyncio.wait_for(
                    self._peers.publisher_file(peer, publisher, name), self._timeout
                )
            except (PeerRequestError, TimeoutError) as exc:
                return exc

        async def every() -> list[bytes | BaseException | None]:
            return await asyncio.gather(*(one(peer) for peer in peers[:MAX_ASKED]))

        asked = asyncio.run_coroutine_threadsafe(every(), self._loop)
        answers = asked.result()  # each within its timeout
        found = []
        for peer, answer in zip(peers, answers, strict=False):
            if isinstance(answer, BaseException):  # str(TimeoutError()) is empty
                self.unreachable[peer] = str(answer) or (
                    f"{peer}: no answer within {self._timeout:g} s"
                )
            else:
                found.append((peer, answer))
        return found


def _staging_copy(directory: Path) -> Path:
    """A copy of a publisher's metadata directory for its TUF client to refresh in
    (beside it, so that its files are moved, not copied, into place)."""
    staging = directory.with_name(f".{directory.name}.refreshing")
    shutil.rmtree(staging, ignore_errors=True)  # a refresh a crash cut short
    (staging / "root_history").mkdir(parents=True)
    # Only the files the client keeps, each read with a bound: one replaced by a link
    # to /dev/zero (or a huge file) is left out, and the client fetches it again.
    history = directory / "root_history"
    for path in sorted(history.iterdir()) if history.is_dir() else []:
        data = read_metadata(path) if _ROOT_VERSION.fullmatch(path.name) else None
        if data is not None:
            (staging / "root_history" / path.name).write_bytes(data)
    for name in _Trusted.NAMES:
        data = read_metadata(directory / name)
        if data is not None:
            (staging / name).write_bytes(data)
    root = directory / "root.json"
    link = os.readlink(root) if root.is_symlink() else None
    if link is not None and _ROOT_LINK.fullmatch(link):
        (staging / "root.json").symlink_to(link)
    else:
        data = read_metadata(root)
        if data is not None:
            (staging / "root.json").write_bytes(data)
    return staging


def _commit(staging: Path, directory: Path) -> None:
    """The refreshed files into the live directory: root versions first, then what
    they verify (readers of a newer targets find its root), root.json last but one,
    timestamp last."""
    history = staging / "root_history"
    for path in sorted(history.iterdir()) if history.is_dir() else []:
        target = directory / "root_history" / path.name
        data = path.read_bytes()
        if not target.is_file() or target.read_bytes() != data:
            target.parent.mkdir(exist_ok=True)
            write_atomic(target, data)
    for name in _COMMIT_ORDER:
        _move(staging / name, directory / name)


def _move(source: Path, target: Path) -> None:
    """``source`` in place of ``target`` (a file, or python-tuf's root.json link)."""
    if source.is_symlink():
        if target.is_symlink() and os.readlink(source) == os.readlink(target):
            return
        link = target.with_name(f".{target.name}.link")
        link.unlink(missing_ok=True)
        link.symlink_to(os.readlink(source))
        link.replace(target)
    elif source.is_file():
        data = source.read_bytes()
        if target.is_symlink() or not target.is_file() or target.read_bytes() != data:
            write_atomic(target, data)
    else:
        target.unlink(missing_ok=True)


# What the root versions verify first, the root.json that names the newest next, the
# timestamp (which says there is something new) last.
_COMMIT_ORDER = (
    f"{ADVISORIES_ROLE}.json",
    "targets.json",
    "snapshot.json",
    "root.json",
    "timestamp.json",
)
_ROOT_VERSION = re.compile(r"[1-9][0-9]{0,8}\.root\.json")
_ROOT_LINK = re.compile(r"root_history/[1-9][0-9]{0,8}\.root\.json")


class _Trusted:
    """The metadata files a node's TUF client trusted, kept to be put back."""

    NAMES = ("timestamp.json", "snapshot.json", "targets.json", f"{ADVISORIES_ROLE}.json")

    def __init__(self, files: dict[str, bytes], root: bytes | None = None) -> None:
        self.files = files
        self.root = root  # the root.json pinned when it was read

    @classmethod
    def read(cls, directory: Path) -> _Trusted:
        files = {}
        for name in cls.NAMES:
            data = read_metadata(directory / name)
            if data is not None:
                files[name] = data
        return cls(files, read_metadata(directory / "root.json"))

    def restore(self, directory: Path) -> None:
        for name in self.NAMES:
            if name in self.files:
                write_atomic(directory / name, self.files[name])
            else:
                (directory / name).unlink(missing_ok=True)


class PublisherMetadata:
    """The pinned publishers' metadata of one node."""

    def __init__(
        self,
        state_dir: Path,
        peers: PeerQueries,
        addresses: Callable[[], list[PeerAddress]],
        timeout: float,
        failed: Callable[[PeerAddress], None] = lambda peer: None,
    ) -> None:
        self._roots = RootFiles(state_dir)
        self._failed = failed  # told of each peer that could not be asked
        self._peers = peers
        self._addresses = addresses
        self._timeout = timeout
        self._locks: dict[str, asyncio.Lock] = {}
        # Equivocations seen (the newest last), for `sovnet status`.
        self.alerts: collections.deque[str] = collections.deque(maxlen=MAX_ALERTS)

    async def resolve(
        self,
        ref: str,
        extra: Sequence[PeerAddress] = (),
        here: Callable[[CID], bool] = lambda cid: False,
    ) -> tuple[publisher_targets.Release, TargetFile]:
        """Refresh the publisher of ``ref`` (``ORG/MODEL``, ``:CHANNEL`` or ``@VERSION``)
        through the peers (``extra`` first), then the release it names and its target
        (the manifest's length and hashes). When no peer can be reached, a release the
        metadata trusted before names is taken if it is ``here`` (offline, a fetch of a
        model already here is no fetch); a refusal is never passed over."""
        publisher = ref.split("/", 1)[0]
        try:
            await self.refresh(publisher, extra)
        except TransferError as exc:
            offline = self._trusted_release(publisher, ref)
            if offline is None or not here(offline[0].cid):
                raise
            log.warning(
                "%s: %s; %s is here, as the metadata trusted before names it",
                ref, exc.message, offline[0].cid,
            )  # fmt: skip
            return offline
        found = self._trusted_release(publisher, ref)
        if found is None:
            raise NotFoundError(
                f"{publisher}'s releases name no {ref}",
                hint="`sovnet ls --remote` lists what it released",
            )
        return found

    def _trusted_release(
        self, publisher: str, ref: str
    ) -> tuple[publisher_targets.Release, TargetFile] | None:
        # Releases are looked up in the publisher's own targets only, never in a role it
        # delegates to (the advisories role may say things about releases, not make them).
        files = self._roots.trusted(publisher)
        release = publisher_targets.resolve_in(files[1], ref, root=files[0]) if files else None
        info = publisher_targets.target(files[1], release.path) if files and release else None
        return (release, info) if release is not None and info is not None else None

    async def listing(self) -> tuple[list[publisher_targets.Listed], list[str]]:
        """Every pinned publisher refreshed, and what each released; a publisher that
        could not be refreshed is listed as trusted before, with the problem said."""
        listed: list[publisher_targets.Listed] = []
        problems: list[str] = []
        for pinned in self._roots.pinned():
            try:
                await self.refresh(pinned.publisher)
            except SovnetError as exc:
                problems.append(f"{pinned.publisher}: {exc.message}")
            files = self._roots.trusted(pinned.publisher)
            if files is not None:
                listed += publisher_targets.listing(files[1], root=files[0])
        return listed, problems

    async def refresh(self, publisher: str, extra: Sequence[PeerAddress] = ()) -> Updater:
        directory = self._roots.metadata_dir(publisher)
        if not (directory / "root.json").is_file():
            raise TrustError(
                f"no root of publisher {publisher} is pinned here",
                hint="get its root.json from the publisher, compare its fingerprint, "
                "then `sovnet trust add root.json`",
            )
        lock = self._locks.setdefault(publisher, asyncio.Lock())
        async with lock:
            fetcher = PeerMetadata(
                self._peers,
                lambda: list(dict.fromkeys([*extra, *self._addresses()])),
                asyncio.get_running_loop(),
                self._timeout,
            )
            before = _Trusted.read(directory)
            try:
                staging = await asyncio.to_thread(_staging_copy, directory)
            except OSError as exc:
                raise LocalStateError(f"cannot refresh {publisher}: {exc}") from exc
            fetcher.directory = staging
            try:
                updater = await asyncio.to_thread(self._refresh, publisher, staging, fetcher)
            finally:
                for peer in fetcher.unreachable:  # not waited for again until it answers
                    self._failed(peer)
                if fetcher.broken_root is not None:
                    self._alert(fetcher.broken_root)
                try:
                    # Also when the refresh failed: the client may have kept new versions
                    # (their rollback protection) before a later step failed. Root
                    # versions it verified are kept even when the releases are refused.
                    await asyncio.to_thread(self._check_releases_stay, publisher, staging, before)
                finally:
                    try:
                        await asyncio.to_thread(self._commit, publisher, staging, before)
                    finally:
                        await asyncio.to_thread(shutil.rmtree, staging, True)
            return updater

    def _commit(self, publisher: str, staging: Path, before: _Trusted) -> None:
        """The copy's files into the live directory, under the pinned roots' lock;
        not if the root pinned there changed meanwhile (`trust rm`, `trust add
        --replace`): the operator's decision stands over a refresh begun before it."""
        directory = self._roots.metadata_dir(publisher)
        try:
            with self._roots.locked():
                if read_metadata(directory / "root.json") != before.root:
                    log.info("publisher %s: its pinned root changed during a refresh", publisher)
                    return
                _commit(staging, directory)
            after = read_metadata(directory / "root.json")
            if after is not None and after != before.root:
                version = publisher_root.claimed_version(after)
                log.info(
                    "publisher %s: followed its root to version %s (fingerprint %s)",
                    publisher, version, fingerprint(after),
                )  # fmt: skip
        except OSError as exc:
            raise LocalStateError(f"cannot keep {publisher}'s refreshed metadata: {exc}") from exc

    def _check_releases_stay(self, publisher: str, staging: Path, before: _Trusted) -> None:
        """A release, once trusted, names its CID for ever. Metadata that changes or
        removes one, however well signed, is refused: the files trusted before are put
        back in the copy, so none of it reaches the live directory, and the
        equivocation is said in the log and in `sovnet status`."""
        earlier = before.files.get("targets.json")
        after = _Trusted.read(staging).files.get("targets.json")
        if earlier is None or after is None or after == earlier:
            return
        changed = publisher_targets.changed_releases(after, previous=earlier)
        if not changed:
            return
        root = read_metadata(staging / "root.json")
        if (
            root is not None
            and not publisher_targets.verifies(earlier, root=root)
            and all(line.endswith(", missing now") for line in changed)
        ):
            # Releases that the current root's keys never vouched for (a thief's, shown
            # before the keys it stole were rotated out) may go: they are dropped,
            # never changed. A CID that a release named is never replaced by another,
            # whoever signs the rotation (a thief of enough keys can sign one too).
            alert = (
                f"publisher {publisher}: releases that its current root does not vouch for "
                f"(version {publisher_targets.version_of(earlier)}) are dropped by version "
                f"{publisher_targets.version_of(after)}: {'; '.join(changed[:3])}"
            )
            log.warning("%s", alert)
            self._alert(alert)
            return
        before.restore(staging)
        alert = (
            f"publisher {publisher} equivocates: its releases version "
            f"{publisher_targets.version_of(after)} change what version "
            f"{publisher_targets.version_of(earlier)} released ({'; '.join(changed[:3])}"
            f"{f'; and {len(changed) - 3} more' if len(changed) > 3 else ''}); refused"
        )
        log.error("%s", alert)
        self._alert(alert)
        raise TrustError(
            alert,
            hint="its keys signed two histories: ask the publisher (a stolen key is rotated "
            "out); this node keeps trusting what it trusted before",
        )

    def _alert(self, alert: str) -> None:
        """Said in `sovnet status`, once: the same alert at every refresh would push
        the others out."""
        if any(seen.endswith(f"Z {alert}") for seen in self.alerts):
            return
        self.alerts.append(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M:%SZ} {alert}")

    def _refresh(self, publisher: str, directory: Path, fetcher: PeerMetadata) -> Updater:
        """A refreshed client. A peer whose file is refused is asked no more in this
        refresh, and the refresh starts again with the others: one hostile or stale
        peer must not keep a node from the publisher's newest metadata."""
        refused: RepositoryError | None = None
        refusals: list[str] = []  # each peer's refusal, for the user to read
        while True:
            updater = self._client(publisher, directory, fetcher)
            try:
                updater.refresh()
                self._load_advisories(updater, publisher, directory)
                return updater
            except RepositoryError as exc:
                refused = exc
                culprit = fetcher.last_peer
                refusals.append(
                    f"{type(exc).__name__}: {exc}" + (f" (from {culprit})" if culprit else "")
                )
                if culprit is None or culprit in fetcher.excluded:
                    break
                log.warning(
                    "publisher %s: metadata from %s refused (%s: %s); asking the others",
                    publisher, culprit, type(exc).__name__, exc,
                )  # fmt: skip
                fetcher.excluded.add(culprit)
            except DownloadError as exc:
                if refused is not None:
                    break  # the others had nothing: the refusal stands
                raise TransferError(
                    f"no peer sent publisher {publisher}'s metadata: {exc}",
                    hint="`sovnet peers ls`: a peer that holds its models or pinned its root",
                ) from exc
        said = "; ".join(refusals[:5])
        if isinstance(refused, ExpiredMetadataError):
            raise TrustError(
                f"publisher {publisher}'s metadata has expired ({said}): its node no longer "
                "vouches for its newest releases (a freeze), so no new release is fetched",
                hint="models already here still run; the publisher's sovnetd renews its "
                "snapshot and timestamp while it runs, and its holders sign new releases "
                "before the last expire: ask the publisher",
            ) from refused
        raise TrustError(
            f"publisher {publisher}'s metadata from peers was refused: {said}",
            hint="a peer sent metadata the pinned root does not vouch for (below "
            "threshold, or older than what this node trusted). If the publisher's own "
            "metadata is refused as older, its online key may have been stolen and used "
            "to sign far-ahead versions: the publisher rotates it "
            "(`sovnet publisher rotate --online-key`)",
        ) from refused

    @staticmethod
    def _load_advisories(updater: Updater, publisher: str, directory: Path) -> None:
        """Have the client fetch and verify the advisories the snapshot lists (it keeps
        them in ``directory``, beside the targets, for run's admission to read offline).
        python-tuf loads a delegated role only on the way to a target path the role is
        trusted for, so the client is asked for one such path."""
        snapshot = Metadata[Snapshot].from_file(str(directory / "snapshot.json")).signed
        if f"{ADVISORIES_ROLE}.json" in snapshot.meta:
            updater.get_targetinfo(f"{ADVISORIES_PREFIX}/{publisher}/-/-")

    @staticmethod
    def _client(publisher: str, directory: Path, fetcher: PeerMetadata) -> Updater:
        config = UpdaterConfig(
            max_root_rotations=MAX_ROOT_ROTATIONS,
            # sovnet's own checks read a root up to this size: python-tuf takes no
            # bigger one, or a root too big to judge would be followed unjudged.
            root_max_length=publisher_root.MAX_ROOT_BYTES,
            timestamp_max_length=MAX_METADATA_BYTES,
            snapshot_max_length=MAX_METADATA_BYTES,
            targets_max_length=MAX_METADATA_BYTES,
        )
        try:
            return Updater(
                str(directory),
                f"{SCHEME}{publisher}/",
                fetcher=fetcher,
                config=config,
                bootstrap=None,  # the newest root trusted here (root.json), not a given one
            )
        except (RepositoryError, DeserializationError, ValueError) as exc:
            raise TrustError(
                f"the root of {publisher} pinned here ({directory / 'root.json'}) cannot be "
                f"used: {exc}",
                hint="pin it again: `sovnet trust add root.json --replace`",
            ) from exc
