"""Publish a model: scan, hash, sign and commit it to the store.

Each file is read once. When the source is on the store's filesystem it is hard
linked into the store (no copy, no extra space: publishing a 2 GiB model costs
about as much as hashing it) and made read-only; otherwise, or with
``copy=True``, it is copied while it is hashed. Either way the bytes hashed are
the bytes of the inode that becomes the blob, and a file that changes while it
is read is refused. A symbolic link the scan followed (a Hugging Face cache
snapshot's, links.py) is read through its resolved target, opened without
following links and compared with the inode the scan checked: the blob holds the
target's bytes, the manifest the link's name.

Hashing happens without the store lock, into private temp names; the lock is
held only for the commit, which is atomic (store.py).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest, check_identity, piece_size_for
from sovnet.core.signing import KeyId, PrivateKey, SignatureBundle
from sovnet.core.sizes import human_size
from sovnet.errors import (
    IntegrityError,
    InvalidInputError,
    LocalStateError,
    ModelRejectedError,
    SovnetError,
)
from sovnet.store.diskspace import free_bytes
from sovnet.store.filehash import FileDigest, hash_fd
from sovnet.store.scan import ScannedFile, ScanOptions, scan_model
from sovnet.store.store import Store

Progress = Callable[[int], None]


@dataclass(frozen=True)
class PublishResult:
    cid: CID
    manifest: Manifest
    signer: KeyId
    linked: int
    copied: int
    already_stored: int

    def summary(self) -> dict[str, object]:
        """What `sovnet publish --json` (and the daemon's publish) report."""
        return {
            "cid": str(self.cid),
            "name": self.manifest.name,
            "version": self.manifest.version,
            "size": self.manifest.total_size,
            "files": len(self.manifest.files),
            "signer": str(self.signer),
            "linked": self.linked,
            "copied": self.copied,
        }


@dataclass(frozen=True)
class _Imported:
    temp: Path
    digest: FileDigest
    linked: bool


def _import_file(
    store: Store,
    item: ScannedFile,
    executor: ThreadPoolExecutor,
    copy: bool,
    piece_size: int,
    progress: Progress | None,
) -> _Imported:
    fd = os.open(item.source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb", buffering=0):  # closes fd however we leave
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise ModelRejectedError(f"refusing {item.relpath}: not a regular file")
        if (before.st_dev, before.st_ino) != item.identity:
            # A name on the checked path (a followed link's target, a directory on
            # the way) was swapped since the scan: what opened is not what was checked.
            raise IntegrityError(
                f"{item.relpath} was replaced while it was being published",
                hint="publish it again",
            )
        temp = store.temp_path()
        linked = False
        if not copy:
            try:
                os.link(item.source, temp, follow_symlinks=False)
                now = os.lstat(temp)
                # The name could have been swapped since we opened it: keep the link
                # only if it is the inode we are about to hash.
                linked = (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino)
                if not linked:
                    temp.unlink()
            except OSError:
                linked = False  # another filesystem, or links not permitted: copy
        try:
            if linked:
                digest = hash_fd(fd, executor, piece_size=piece_size, progress=progress)
            else:
                with open(temp, "xb") as sink:
                    digest = hash_fd(
                        fd, executor, piece_size=piece_size, sink=sink, progress=progress
                    )
                    sink.flush()
                    os.fsync(sink.fileno())
            after = os.fstat(fd)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or (
        digest.size != before.st_size
    ):
        temp.unlink(missing_ok=True)
        raise IntegrityError(
            f"{item.relpath} changed while it was being published", hint="publish it again"
        )
    return _Imported(temp, digest, linked)


def publish(
    store: Store,
    key: PrivateKey,
    model: Path,
    *,
    name: str,
    version: str | None = None,
    license: str | None = None,
    copy: bool = False,
    options: ScanOptions | None = None,
    on_scanned: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    on_committing: Callable[[], None] | None = None,
) -> PublishResult:
    """Publish ``model`` under ``name``; ``options`` select its files and say where its
    links may lead (scan.py); ``on_scanned`` gets the total bytes to hash;
    ``on_committing`` is called once all is hashed and signed, as the commit begins."""
    check_identity(name, version, license)  # before the long part, not after it
    earlier = _published_as(store, name, version)
    scanned = scan_model(model, options)
    total = sum(item.size for item in scanned)
    piece_size = piece_size_for(total)
    copied = _bytes_to_copy(store, scanned, copy)
    if copied > free_bytes(store.root):
        raise _disk_full(store, copied)
    if on_scanned is not None:
        on_scanned(total)
    imported: list[_Imported] = []
    try:
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as executor:
            for item in scanned:
                imported.append(_import_file(store, item, executor, copy, piece_size, progress))
        entries = tuple(
            FileEntry(
                path=item.relpath,
                size=done.digest.size,
                blake3=done.digest.blake3,
                pieces_root=done.digest.pieces_root,
                format=item.format,
                facts=item.facts,
            )
            for item, done in zip(scanned, imported, strict=True)
        )
        manifest = Manifest(
            name=name,
            version=version,
            license=license,
            piece_size=piece_size,
            files=entries,
        )
        raw = manifest.to_bytes()
        cid = CID.of(raw)
        if earlier and cid not in earlier:
            raise InvalidInputError(
                f"{name}@{version} is published here already as {earlier[0]}, with other "
                "content: a version names one model for ever; nothing was published",
                hint=f"publish it as a new version; or, if {earlier[0]} never left this "
                f"node, `sovnet rm {earlier[0]}` first",
            )
        signature = key.sign(cid)
        stored = 0
        if on_committing is not None:
            on_committing()
        with store.locked():
            for done in imported:
                if not store.adopt_blob(done.temp, done.digest.blake3):
                    stored += 1
                store.put_layer(done.digest.blake3, piece_size, done.digest.piece_layer)
            store.commit(manifest, raw, SignatureBundle(cid).with_signature(signature))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise _disk_full(store, copied) from exc
        raise LocalStateError(f"cannot write to the store at {store.root}: {exc.strerror}") from exc
    finally:
        for done in imported:
            done.temp.unlink(missing_ok=True)
    return PublishResult(
        cid=cid,
        manifest=manifest,
        signer=key.public_key.key_id,
        linked=sum(1 for d in imported if d.linked),
        copied=sum(1 for d in imported if not d.linked),
        already_stored=stored,
    )


def _published_as(store: Store, name: str, version: str | None) -> list[CID]:
    """The models in the store named ``name@version`` (a version names one model; a
    model without a version promises nothing)."""
    if version is None:
        return []
    found = []
    for cid in store.cids():
        try:
            manifest = Manifest.from_bytes(store.manifest_bytes(cid))
        except SovnetError:
            continue  # a damaged manifest is repair's business, not publish's
        if (manifest.name, manifest.version) == (name, version):
            found.append(cid)
    return found


def _bytes_to_copy(store: Store, scanned: list[ScannedFile], copy: bool) -> int:
    """The bytes publishing writes into the store: every file with ``copy``, else those
    on another filesystem (a hard link costs nothing)."""
    here = os.stat(store.root).st_dev
    return sum(item.size for item in scanned if copy or item.identity[0] != here)


def _disk_full(store: Store, copied: int) -> LocalStateError:
    """A full disk is the store's (a local state, exit 7), not a transfer's: DiskFullError
    (exit 8) tells a fetch's user that the network's bytes have nowhere to go."""
    free = human_size(free_bytes(store.root))
    return LocalStateError(
        f"the disk of the store at {store.root} is full: the copy needs {human_size(copied)}, "
        f"{free} is free; nothing was published",
        hint="free some space there, or publish without --copy from the store's filesystem "
        "(hard links take no room)",
    )
