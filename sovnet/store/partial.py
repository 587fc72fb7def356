"""A download in progress: the one owner of ``partial/<cid>/``.

    partial/<cid>/manifest       the accepted manifest's exact bytes (trust-checked)
    partial/<cid>/signatures     its signature bundle
    partial/<cid>/files/NNNNN    file NNNNN of the torrent (torrent order), as it arrives
    partial/<cid>/resume         the swarm's resume data, never ahead of the files' bytes
    partial/<cid>/failed         why the last attempt failed (a retry continues anyway)
    partial/<cid>/reserve        room held back for the resume data, should the disk fill

Nothing under it is handed to anyone: :meth:`PartialDownload.verify` re-hashes every
file against the signed manifest, :meth:`PartialDownload.commit` moves the verified
files into ``blobs/`` and records the model, and only then does the model appear.

Blocking (file I/O, hashing): callers in asyncio run these methods in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.core.signing import SignatureBundle
from sovnet.errors import IntegrityError, LocalStateError, SovnetError
from sovnet.store import diskspace
from sovnet.store.atomicfile import fsync_file, write_atomic
from sovnet.store.filehash import FileDigest, check_fd
from sovnet.store.store import Store
from sovnet.trust.gate import OpenedManifest, open_manifest
from sovnet.trust.keys import TrustStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verified:
    """A downloaded file whose bytes are its manifest entry's."""

    path: Path
    digest: FileDigest


class PartialDownload:
    def __init__(self, store: Store, cid: CID) -> None:
        self.store = store
        self.cid = cid
        self.path = store.partial / str(cid)

    @staticmethod
    def resumable(store: Store) -> list[CID]:
        """The downloads a restarted daemon continues: accepted, and not failed."""
        found = []
        root = store.partial
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            if (path / "manifest").is_file() and not (path / "failed").exists():
                try:
                    found.append(CID.parse(path.name))
                except SovnetError:
                    continue
        return found

    @staticmethod
    def blobs_in_use(store: Store, *, besides: CID | None = None) -> frozenset[bytes]:
        """The blobs the downloads under way will commit: the store keeps them.

        The commit moves verified files into ``blobs/`` before it records the model;
        a crash in between leaves blobs no committed model references, and the
        download that needs them resumes from them. (Any accepted manifest here
        passed the trust gate when it was written; one that no longer parses or
        hashes to its directory's CID protects nothing.)
        """
        needed: set[bytes] = set()
        root = store.partial
        for path in sorted(root.iterdir()) if root.is_dir() else []:
            if besides is not None and path.name == str(besides):
                continue
            try:
                raw = (path / "manifest").read_bytes()
                if CID.parse(path.name).matches(raw):
                    needed.update(entry.blake3 for entry in Manifest.from_bytes(raw).files)
            except (OSError, SovnetError):
                continue
        return frozenset(needed)

    # -- the accepted manifest ----------------------------------------------------------

    def accepted(self, trust: TrustStore) -> tuple[OpenedManifest, SignatureBundle] | None:
        """The manifest an earlier attempt accepted, through the trust gate again (the
        trust store may have changed); None, and the download discarded, if it no
        longer passes or was never written."""
        if not (self.path / "manifest").is_file():
            return None
        try:
            raw = (self.path / "manifest").read_bytes()
            bundle = SignatureBundle.from_bytes((self.path / "signatures").read_bytes(), self.cid)
            opened = open_manifest(self.cid, raw, bundle, trust)
        except (OSError, SovnetError) as exc:
            log.warning("discarding the partial fetch of %s: %s", self.cid, exc)
            self.remove()
            return None
        return opened, bundle

    def keep_accepted(self, raw: bytes, bundle: SignatureBundle) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.path / "manifest", raw, mode=0o600)
        write_atomic(self.path / "signatures", bundle.to_bytes(), mode=0o600)

    # -- the files and their resume data --------------------------------------------------

    def file_paths(self, count: int) -> dict[int, Path]:
        """Where the swarm writes file ``k`` of the torrent, for every ``k``."""
        files = self.path / "files"
        files.mkdir(mode=0o700, parents=True, exist_ok=True)
        return {k: files / f"{k:05d}" for k in range(count)}

    def resume_data(self) -> bytes | None:
        try:
            return (self.path / "resume").read_bytes()
        except FileNotFoundError:
            return None

    def keep_resume(self, data: bytes, *, synced: bool = False) -> bool:
        """Make the downloaded files durable (unless ``synced`` says they are), then
        write ``data`` as the resume file (resume data must never claim pieces a power
        loss would lose); False if the download is gone meanwhile (committed or
        removed)."""
        files = self.path / "files"
        try:
            names = [] if synced else sorted(os.listdir(files))
        except FileNotFoundError:
            return False
        try:
            for name in names:
                fsync_file(files / name)
            write_atomic(self.path / "resume", data, mode=0o600)
        except FileNotFoundError:  # committed or removed while we synced
            return False
        return True

    def reserve(self, size: int) -> None:
        """Hold ``size`` bytes of the disk (blocks, not a sparse file) for a moment when
        the disk is full (:meth:`release_reserve`); best effort."""
        try:
            with open(self.path / "reserve", "wb") as handle:
                os.posix_fallocate(handle.fileno(), 0, size)
        except OSError as exc:
            log.warning("cannot reserve room for the resume data of %s: %s", self.cid, exc)

    def release_reserve(self) -> None:
        (self.path / "reserve").unlink(missing_ok=True)

    # -- failure ---------------------------------------------------------------------------

    def mark_failed(self, message: str) -> None:
        """Remember why it failed; what arrived is kept, so a retry continues from it.
        Best effort: on a full disk the marker cannot be written, and the fetch's
        own error says more than losing it would."""
        if not self.path.is_dir():
            return
        try:
            write_atomic(self.path / "failed", (message + "\n").encode(), mode=0o600)
        except OSError as exc:
            log.warning("cannot mark the fetch of %s as failed: %s", self.cid, exc.strerror)

    def clear_failed(self) -> None:
        (self.path / "failed").unlink(missing_ok=True)

    def remove(self) -> int:
        """Delete the download; the bytes of disk it held."""
        held = diskspace.written(self.path.rglob("*"))
        # The manifest first: a download without one is not resumed, and the store's
        # repair deletes what a crash left of it.
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (self.path / "manifest").unlink()
        shutil.rmtree(self.path, ignore_errors=True)
        return held

    # -- verify and commit -------------------------------------------------------------------

    def verify(
        self,
        files: tuple[FileEntry, ...],
        skip: Iterable[int],
        piece_size: int,
        leaves: Mapping[int, list[bytes]],
    ) -> list[Verified]:
        """Check every downloaded file (torrent position not in ``skip``) against its
        entry, and make it durable; IntegrityError naming the first that differs.

        Every file's BLAKE3 is computed again; its SHA-256 tree is not where the swarm
        handed over the leaf hashes it checked each block against (``leaves``).
        """
        skipped = set(skip)
        verified: list[Verified] = []
        with ThreadPoolExecutor(3) as executor:
            for k, entry in enumerate(files):
                if k in skipped:
                    continue
                path = self.path / "files" / f"{k:05d}"
                if entry.size == 0:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    # On disk before its name appears under blobs/: a crash must never
                    # leave a blob whose bytes are not the verified ones. The kernel
                    # writes while we hash.
                    synced = executor.submit(os.fsync, fd)
                    try:
                        check = check_fd(
                            fd, entry, executor, piece_size=piece_size, leaves=leaves.get(k)
                        )
                    finally:
                        synced.result()
                finally:
                    os.close(fd)
                if not check.ok:
                    path.unlink(missing_ok=True)
                    raise IntegrityError(
                        f"{entry.path} of {self.cid} does not match its manifest after download",
                        hint="the publisher's hashes disagree with each other; do not trust it",
                    )
                verified.append(Verified(path, check.digest))
        return verified

    def commit(
        self, opened: OpenedManifest, bundle: SignatureBundle, files: list[Verified]
    ) -> None:
        """Move verified files into the store and the model into view, atomically."""
        manifest = opened.manifest
        with self.store.locked():
            for item in files:
                self.store.adopt_blob(item.path, item.digest.blake3)
                self.store.put_layer(
                    item.digest.blake3, manifest.piece_size, item.digest.piece_layer
                )
            for entry in manifest.files:
                if not self.store.blob_path(entry.blake3).is_file():
                    raise LocalStateError(f"the blob of {entry.path} vanished during the fetch")
            self.store.commit(manifest, opened.raw, bundle)
        self.remove()
