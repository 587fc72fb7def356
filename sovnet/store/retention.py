"""What a node keeps when its quota or its disk runs short: pinned models always;
of the rest, the least recently used go first.

    <state>/pins.json        the pinned CIDs (canonical JSON), `sovnet pin`/`unpin`
    <state>/used/<CID>       its mtime: when the model was last run, served or exported
    <state>/dropped/<CID>    removed (`sovnet rm`, garbage collection): a mirror does not
                             fetch it again unasked; `sovnet fetch` asks

A model's last use is the later of that and when it was committed (fetched or
published). What removing a model frees is what `df` sees come back: the blocks of
the blobs no other model kept uses, and only those no other link holds (a Hugging
Face export's hard links keep a blob's bytes on the disk).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.core.sizes import human_size
from sovnet.errors import LocalStateError, SovnetError
from sovnet.store import diskspace
from sovnet.store.atomicfile import write_atomic
from sovnet.store.lockfile import exclusive_lock
from sovnet.store.store import Store

PINS = "pins.json"
USED = "used"
DROPPED = "dropped"


@dataclass(frozen=True)
class Limits:
    """A store's budget: at most ``max_store_bytes`` in it (0: no quota), and at least
    ``min_disk_free`` bytes left free on its disk (0: none)."""

    max_store_bytes: int = 0
    min_disk_free: int = 0

    @property
    def any(self) -> bool:
        return self.max_store_bytes > 0 or self.min_disk_free > 0


@dataclass(frozen=True)
class Victim:
    cid: CID
    name: str
    frees: int  # bytes its removal gives back to the disk, as planned
    last_used: float


@dataclass(frozen=True)
class Plan:
    """What garbage collection removes, and whether that is enough."""

    victims: tuple[Victim, ...]
    store_bytes: int  # before
    free_bytes: int  # on the store's disk, before
    enough: bool
    problem: str | None = None  # why it is not enough, for a person


class Retention:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._pins = store.root / PINS
        self._used = store.root / USED

    # -- pins -----------------------------------------------------------------------

    def pinned(self) -> set[CID]:
        try:
            listed = json.loads(self._pins.read_bytes())
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            raise LocalStateError(
                f"{self._pins} cannot be read: {exc}",
                hint="fix or remove it (it lists the pinned models' CIDs)",
            ) from None
        found = set()
        for text in listed if isinstance(listed, list) else []:
            with contextlib.suppress(SovnetError, TypeError):
                found.add(CID.parse(text))
        return found

    def set_pinned(self, cid: CID, pinned: bool) -> bool:
        """Pin or unpin ``cid``; whether that changed anything."""
        with exclusive_lock(self._store.root / "pins.lock", what="the pins"):
            pins = self.pinned()
            if (cid in pins) == pinned:
                return False
            pins = pins | {cid} if pinned else pins - {cid}
            write_atomic(self._pins, json.dumps(sorted(map(str, pins))).encode())
            return True

    # -- use ------------------------------------------------------------------------

    def touch(self, cid: CID) -> None:
        """Record that ``cid`` was used now (best effort: a read-only store runs all
        the same)."""
        with contextlib.suppress(OSError):
            self._used.mkdir(exist_ok=True)
            path = self._used / str(cid)
            path.touch()
            os.utime(path)

    def last_used(self, cid: CID) -> float:
        times = []
        for path in (self._used / str(cid), self._store.manifest_path(cid)):
            with contextlib.suppress(OSError):
                times.append(path.stat().st_mtime)
        return max(times, default=0.0)

    def forget(self, cid: CID) -> None:
        """A removed model: its pin and its last use go with it, and it is marked
        dropped, so that a mirror does not fetch it again (to drop another)."""
        with contextlib.suppress(OSError):
            (self._used / str(cid)).unlink()
        with contextlib.suppress(OSError):
            (self._store.root / DROPPED).mkdir(exist_ok=True)
            (self._store.root / DROPPED / str(cid)).touch()
        if cid in self.pinned():
            self.set_pinned(cid, False)

    def dropped(self, cid: CID) -> bool:
        return (self._store.root / DROPPED / str(cid)).exists()

    def undrop(self, cid: CID) -> None:
        """Asked for again (`sovnet fetch`): a mirror may keep it."""
        with contextlib.suppress(OSError):
            (self._store.root / DROPPED / str(cid)).unlink()

    # -- size -----------------------------------------------------------------------

    def store_bytes(self) -> int:
        """The disk the store's models take: their blobs, layers and manifests."""
        total = 0
        for directory in (self._store.blobs, self._store.layers, self._store.manifests):
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
                for entry in entries:
                    with contextlib.suppress(OSError):
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
        # Downloads under way count too: their files become blobs.
        for folder, _, files in os.walk(self._store.partial):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(folder, name)).st_blocks * 512
        return total

    def plan(self, limits: Limits, *, needed: int = 0, protect: Iterable[CID] = ()) -> Plan:
        """The models to remove, least recently used first, so that ``needed`` more
        bytes fit within ``limits``; pinned ones and ``protect`` never."""
        store_bytes = self.store_bytes()
        free = diskspace.free_bytes(self._store.root)
        kept = self._store.cids()
        never = self.pinned() | set(protect)
        used = {cid: self.last_used(cid) for cid in kept if cid not in never}
        candidates = sorted(used, key=used.__getitem__)
        manifests = {cid: self._manifest(cid) for cid in kept}
        # How many models kept use each blob: a blob frees space when none is left.
        users: Counter[bytes] = Counter(
            blake3 for m in manifests.values() if m is not None for blake3 in _blobs(m)
        )
        victims: list[Victim] = []
        freed = 0

        def fits() -> bool:
            quota = limits.max_store_bytes
            within = not quota or store_bytes - freed + needed <= quota
            return within and free + freed - needed >= limits.min_disk_free

        for cid in candidates:
            if fits():
                break
            manifest = manifests[cid]
            if manifest is None:
                continue  # damaged: `sovnet ls` names it; not guessed at here
            users.subtract(_blobs(manifest))
            frees = self._frees(manifest, {b for b in _blobs(manifest) if users[b] <= 0})
            victims.append(Victim(cid, manifest.name, frees, used[cid]))
            freed += frees
        enough = fits()
        problem = None
        if not enough:
            problem = (
                f"{human_size(needed)} more do not fit: the store holds {human_size(store_bytes)}"
                + (
                    f" of its quota of {human_size(limits.max_store_bytes)}"
                    if limits.max_store_bytes
                    else ""
                )
                + f", the disk has {human_size(free)} free"
                + (
                    f" and keeps {human_size(limits.min_disk_free)} free"
                    if limits.min_disk_free
                    else ""
                )
                + f", and removing every model not pinned or in use frees {human_size(freed)}"
            )
        return Plan(tuple(victims), store_bytes, free, enough, problem)

    def _manifest(self, cid: CID) -> Manifest | None:
        try:
            return self._store.manifest(cid)  # parsed once: a plan reads every model
        except (SovnetError, OSError):
            return None

    def _frees(self, manifest: Manifest, unused: set[bytes]) -> int:
        """What removing ``manifest``'s model gives back: the blocks of its blobs that
        no model kept uses (``unused``) and no other link holds."""
        views = Counter(f.blake3 for f in manifest.files)  # its own view's links
        total = 0
        for blake3 in unused:
            links = views[blake3]
            with contextlib.suppress(OSError):
                found = self._store.blob_path(blake3).stat()
                if found.st_nlink <= 1 + links:  # no link but the store's own
                    total += found.st_blocks * 512
        return total


def _blobs(manifest: Manifest) -> set[bytes]:
    return {f.blake3 for f in manifest.files}
