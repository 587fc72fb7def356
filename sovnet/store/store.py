"""The on-disk store of a node: blobs, manifests with their signatures, model views.

    <root>/blobs/<blake3 hex>       verified file contents, read-only, shared by models
    <root>/manifests/<cid>          exact canonical manifest bytes
    <root>/manifests/<cid>.sig      the signature bundle for that CID
    <root>/layers/<b3hex>.<piece>   a blob's BitTorrent v2 piece layer for one piece size
    <root>/stamps/<b3hex>           the blob's stat when last verified (stamps.py; a cache)
    <root>/models/<cid>/<path>      the model as its files are named (hard links to blobs)
    <root>/partial/<cid>/...        downloads in progress; never handed to anyone
    <root>/tmp/<pid>-...            files being written; removed when their process is gone

A model is in the store exactly when ``manifests/<cid>`` exists. Commit order makes
a crash safe at any point: blobs first, then the model view, then the signature
bundle, and the manifest last (each an atomic rename). Removal runs in reverse. A
crash leaves at most unreferenced blobs or views, which :meth:`Store.repair` drops.

Mutations require the store lock (:meth:`Store.locked`); reads need none because
every name appears atomically. Every path derived from a manifest goes through
``relpath.check_relpath`` (inside the Manifest), and views are built only inside
``models/``, so no manifest can make the store write outside its root.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.core.signing import SignatureBundle
from sovnet.errors import InvalidCIDError, LocalStateError, NotFoundError
from sovnet.store import stamps
from sovnet.store.atomicfile import fsync_dir, write_atomic
from sovnet.store.lockfile import exclusive_lock
from sovnet.trust.gate import OpenedManifest, open_manifest
from sovnet.trust.keys import TrustStore

_BLOB_NAME = re.compile(r"[0-9a-f]{64}")
_TMP_NAME = re.compile(r"(\d+)-[0-9a-f]+(\..*)?")


@dataclass(frozen=True)
class RemoveResult:
    cid: CID
    freed_bytes: int  # the disk blocks that came back (what `df` sees)
    blobs_removed: int
    held_bytes: int = 0  # of the blobs removed, bytes other links keep on the disk


class Store:
    """A node's store at ``root``. Constructing it does no I/O; :meth:`init` does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.layers = root / "layers"
        self.stamps = root / "stamps"
        self.manifests = root / "manifests"
        self.models = root / "models"
        self.partial = root / "partial"
        self.tmp = root / "tmp"
        self.lock_path = root / "store.lock"
        # Committed manifests parsed once: a CID names its bytes for ever, and a
        # mirror's store of thousands would otherwise be parsed again at every rm.
        self._parsed: dict[CID, Manifest] = {}

    # -- set-up -------------------------------------------------------------

    def init(self) -> Store:
        """Create the directories (0700: the store is private to its node)."""
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for directory in (
                self.blobs,
                self.layers,
                self.stamps,
                self.manifests,
                self.models,
                self.partial,
                self.tmp,
            ):
                directory.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise LocalStateError(
                f"cannot create the store at {self.root}: {exc.strerror}",
                hint="choose a writable --state-dir (or SOVNET_STATE_DIR)",
            ) from exc
        return self

    @contextmanager
    def locked(self, timeout: float = 30.0) -> Iterator[None]:
        with exclusive_lock(self.lock_path, what=f"the store at {self.root}", timeout=timeout):
            yield

    def remove_temp_of(self, pid: int) -> None:
        """Delete the temp files of process ``pid``, which ended (a publish worker that
        was cancelled or died: whatever cut its own clean-up short)."""
        for path in list(self.tmp.glob(f"{pid}-*")) if self.tmp.is_dir() else []:
            _remove_temp(path)

    def temp_path(self, suffix: str = "") -> Path:
        """A fresh private name under tmp/, tagged with our pid for later clean-up."""
        return self.tmp / f"{os.getpid()}-{secrets.token_hex(8)}{suffix}"

    # -- reads ----------------------------------------------------------------

    def manifest_path(self, cid: CID) -> Path:
        return self.manifests / str(cid)

    def bundle_path(self, cid: CID) -> Path:
        return self.manifests / f"{cid}.sig"

    def blob_path(self, blake3: bytes) -> Path:
        return self.blobs / blake3.hex()

    def layer_path(self, blake3: bytes, piece_size: int) -> Path:
        return self.layers / f"{blake3.hex()}.{piece_size}"

    def layer(self, blake3: bytes, piece_size: int) -> bytes | None:
        """The stored piece layer of a blob, unchecked (filehash.layer_matches checks it)."""
        try:
            return self.layer_path(blake3, piece_size).read_bytes()
        except FileNotFoundError:
            return None

    def model_dir(self, cid: CID) -> Path:
        return self.models / str(cid)

    def has(self, cid: CID) -> bool:
        return self.manifest_path(cid).is_file()

    def cids(self) -> list[CID]:
        """Every CID with a committed manifest, in CID order."""
        found = []
        try:
            names = os.listdir(self.manifests)
        except FileNotFoundError:
            return []
        for name in names:
            if name.startswith("b") and "." not in name:
                try:
                    found.append(CID.parse(name))
                except InvalidCIDError:
                    continue  # not ours; never acted on
        return sorted(found)

    def require(self, cid: CID) -> None:
        """Raise NotFoundError unless ``cid`` is committed here."""
        if not self.has(cid):
            raise _not_here(cid)

    def manifest(self, cid: CID) -> Manifest | None:
        """The committed manifest of ``cid``, parsed once; None if its bytes are not
        the CID's (damaged: repair's business). NotFoundError if not here."""
        found = self._parsed.get(cid)
        if found is None:
            raw = self.manifest_bytes(cid)
            if CID.of(raw) != cid:
                return None
            found = self._parsed[cid] = Manifest.from_bytes(raw)
        return found

    def manifest_bytes(self, cid: CID) -> bytes:
        try:
            return self.manifest_path(cid).read_bytes()
        except FileNotFoundError:
            raise _not_here(cid) from None

    def bundle(self, cid: CID) -> SignatureBundle:
        try:
            data = self.bundle_path(cid).read_bytes()
        except FileNotFoundError:
            return SignatureBundle(cid)
        return SignatureBundle.from_bytes(data, cid)

    def open(self, cid: CID, trust: TrustStore, *, require_trusted: bool = True) -> OpenedManifest:
        """The stored manifest of ``cid`` through the trust gate."""
        return open_manifest(
            cid, self.manifest_bytes(cid), self.bundle(cid), trust, require_trusted=require_trusted
        )

    # -- writes (hold the lock) ---------------------------------------------

    def adopt_blob(self, temp: Path, blake3: bytes) -> bool:
        """Move a verified temp file into blobs/ under its hash; False if it was there."""
        target = self.blob_path(blake3)
        if target.exists():
            temp.unlink()
            return False
        os.chmod(temp, 0o444)
        os.replace(temp, target)
        return True

    def put_layer(self, blake3: bytes, piece_size: int, layer: bytes) -> None:
        """Keep a blob's piece layer (nothing to keep for a file of one piece)."""
        if layer and not self.layer_path(blake3, piece_size).exists():
            write_atomic(self.layer_path(blake3, piece_size), layer, mode=0o444)

    def commit(self, manifest: Manifest, raw: bytes, bundle: SignatureBundle) -> CID:
        """Record a model whose blobs are all in blobs/ and whose bytes are ``raw``."""
        cid = CID.of(raw)
        if bundle.cid != cid:
            raise ValueError("bundle is for another CID")
        for entry in manifest.files:
            if not self.blob_path(entry.blake3).is_file():
                raise LocalStateError(f"blob for {entry.path} is missing; cannot commit {cid}")
        self._build_view(cid, manifest)
        # Blobs are verified when they enter blobs/; stamp them so `sovnet run`
        # need not re-hash them while their inode stays untouched.
        for entry in manifest.files:
            stamps.record_if_missing(self.stamps, entry.blake3, self.blob_path(entry.blake3))
        if self.bundle_path(cid).exists():
            bundle = self.bundle(cid).merged(bundle)
        write_atomic(self.bundle_path(cid), bundle.to_bytes(), mode=0o444)
        if not self.manifest_path(cid).exists():
            write_atomic(self.manifest_path(cid), raw, mode=0o444)
        return cid

    def add_signatures(self, cid: CID, bundle: SignatureBundle) -> SignatureBundle:
        merged = self.bundle(cid).merged(bundle)
        write_atomic(self.bundle_path(cid), merged.to_bytes(), mode=0o444)
        return merged

    def discard_blobs(self, hashes: Iterable[bytes]) -> None:
        """Delete damaged blobs, so a fetch downloads them again (hold the lock). A
        blob hard-linked from a publisher's own file unlinks only the store's name."""
        for blake3 in hashes:
            stamps.drop(self.stamps, blake3)
            self.blob_path(blake3).unlink(missing_ok=True)

    def _build_view(self, cid: CID, manifest: Manifest) -> None:
        if self.model_dir(cid).is_dir():
            self.repair_view(cid, manifest)
            return
        self._make_view(cid, manifest)

    def _make_view(self, cid: CID, manifest: Manifest) -> None:
        """The model view, built aside and renamed into place (replacing a broken one)."""
        final = self.model_dir(cid)
        staging = self.temp_path(".view")
        staging.mkdir(mode=0o755)
        try:
            for entry in manifest.files:
                target = staging / entry.path  # entry.path passed check_relpath
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                os.link(self.blob_path(entry.blake3), target)
            for directory in sorted({p for p in staging.rglob("*") if p.is_dir()} | {staging}):
                fsync_dir(directory)
            if final.is_dir() or final.is_symlink():
                old = self.temp_path(".old-view")
                os.rename(final, old)
                os.rename(staging, final)
                shutil.rmtree(old, ignore_errors=True)  # removes links, never follows them
            else:
                os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(self.models)

    def repair_view(self, cid: CID, manifest: Manifest) -> tuple[str, ...]:
        """The paths of a model view that are not its blobs (missing, another file, a
        symbolic link, below a link): if any, the view is built again (hold the lock).
        A repaired model's view, too, still links the inodes its blobs replaced."""
        view = self.model_dir(cid)
        wrong = tuple(e.path for e in manifest.files if not self._in_view(view, e.path, e.blake3))
        if wrong:
            self._make_view(cid, manifest)
        return wrong

    def _in_view(self, view: Path, path: str, blake3: bytes) -> bool:
        try:
            if not stat.S_ISDIR(os.lstat(view).st_mode):
                return False
            directory = view
            for part in path.split("/")[:-1]:
                directory = directory / part
                if not stat.S_ISDIR(os.lstat(directory).st_mode):
                    return False
            found = os.lstat(view / path)
            blob = os.stat(self.blob_path(blake3))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(found.st_mode) and (found.st_dev, found.st_ino) == (
            blob.st_dev,
            blob.st_ino,
        )

    def remove(self, cid: CID, *, keep: frozenset[bytes] = frozenset()) -> RemoveResult:
        """Forget a model, then delete the blobs no other model uses, nor ``keep`` lists
        (the blobs downloads under way need: PartialDownload.blobs_in_use)."""
        manifest = self.manifest(cid)
        self._parsed.pop(cid, None)
        self.manifest_path(cid).unlink()
        fsync_dir(self.manifests)
        self.bundle_path(cid).unlink(missing_ok=True)
        shutil.rmtree(self.model_dir(cid), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (self.partial / str(cid) / "manifest").unlink()  # not resumed, if cut short
        shutil.rmtree(self.partial / str(cid), ignore_errors=True)
        freed, count, held = 0, 0, 0
        if manifest is not None:
            still_used = self._referenced_blobs() | keep
            for entry in manifest.files:
                blob = self.blob_path(entry.blake3)
                if entry.blake3 not in still_used and blob.exists():
                    found = blob.stat()
                    # What df sees come back: its blocks, unless another link (an
                    # HF export's) keeps them.
                    if found.st_nlink == 1:
                        freed += found.st_blocks * 512
                    else:
                        held += found.st_size
                    stamps.drop(self.stamps, entry.blake3)
                    blob.unlink()
                    count += 1
                    freed += self._drop_layers(entry.blake3)
        return RemoveResult(cid, freed, count, held)

    def _drop_layers(self, blake3: bytes) -> int:
        freed = 0
        for layer in self.layers.glob(f"{blake3.hex()}.*"):
            with contextlib.suppress(FileNotFoundError):
                freed += layer.stat().st_blocks * 512
                layer.unlink()
        return freed

    def _referenced_blobs(self) -> set[bytes]:
        used: set[bytes] = set()
        for other in self.cids():
            with contextlib.suppress(NotFoundError):  # removed meanwhile
                manifest = self.manifest(other)
                if manifest is not None:
                    used.update(f.blake3 for f in manifest.files)
        return used

    def repair(self, *, keep: frozenset[bytes] = frozenset()) -> None:
        """Drop what a crash can leave: temp files of dead processes, views and blobs
        of no committed model, except the blobs in ``keep``: those of downloads under
        way (PartialDownload.blobs_in_use), among them a download whose commit a crash
        cut short, which then completes without downloading them again. Run it
        holding the lock."""
        for path in list(self.tmp.iterdir()) if self.tmp.is_dir() else []:
            match = _TMP_NAME.fullmatch(path.name)
            if match and not _pid_alive(int(match.group(1))):
                _remove_temp(path)
        for download in list(self.partial.iterdir()) if self.partial.is_dir() else []:
            # A download whose manifest is gone is the rest of one being removed (a
            # commit's last step, or `rm`), cut short: nothing can resume it.
            if not (download / "manifest").is_file():
                shutil.rmtree(download, ignore_errors=True)
        committed = {str(c) for c in self.cids()}
        for view in list(self.models.iterdir()) if self.models.is_dir() else []:
            if view.name not in committed:
                shutil.rmtree(view, ignore_errors=True)
        used = self._referenced_blobs() | keep
        for blob in list(self.blobs.iterdir()) if self.blobs.is_dir() else []:
            if _BLOB_NAME.fullmatch(blob.name) and bytes.fromhex(blob.name) not in used:
                blob.unlink(missing_ok=True)
        for layer in list(self.layers.iterdir()) if self.layers.is_dir() else []:
            blob_name = layer.name.split(".")[0]
            if _BLOB_NAME.fullmatch(blob_name) and bytes.fromhex(blob_name) not in used:
                layer.unlink(missing_ok=True)
        for stamp in list(self.stamps.iterdir()) if self.stamps.is_dir() else []:
            # Stamps (and header verdicts) of blobs no model uses, and temp files of
            # interrupted writes.
            name = stamp.name.removesuffix(stamps.HEADER_SUFFIX)
            if not (_BLOB_NAME.fullmatch(name) and bytes.fromhex(name) in used):
                stamp.unlink(missing_ok=True)


def _not_here(cid: CID) -> NotFoundError:
    return NotFoundError(
        f"{cid} is not in this store",
        hint=f"`sovnet fetch {cid}` gets it from your network's peers (with sovnetd "
        "running); `sovnet ls` lists what is here",
    )


def _remove_temp(path: Path) -> None:
    """A temp file, or a temp directory (a view being built), without following links."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
