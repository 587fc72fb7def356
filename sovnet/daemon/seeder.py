"""The models this node seeds: one torrent each, in the swarm, from the store.

:meth:`Seeder.seed` derives a committed model's torrent (core/torrent.py: every
node derives the same one); from then on the model is seeded. :meth:`Seeder.join`
reads its piece layers from the store (made again from the blob if missing or
wrong) and adds the torrent to the swarm as complete. :meth:`Seeder.unseed` takes
it out. The seeder knows which info-hash is which model, for routing the swarm's
events; a model that cannot be seeded (its stored blob is damaged, the swarm
refused it) is listed as damaged, not seeded.

A seeded model is not always in the swarm. libtorrent gives each SSL torrent its
own TLS context, about 35 KiB (measured: 5,000 seeded torrents took 118 MiB more
than the same torrents without the network's CA), so a node keeps at most
``active_seeds`` in the swarm. Every fetch announces to its holders on the
control plane before it connects to their swarm ports (fetcher.py), and the
announce joins the model (:meth:`Seeder.join`) before it is answered, so a peer
never finds a seeded model missing. Beyond the limit, torrents with no peer for
:data:`STAY` seconds leave the swarm, least recently wanted first; one that no
peer came to within :data:`JOIN_GRACE` of joining, sooner (an announce alone, which
any member may send for every CID, keeps nothing in for long; a member that goes
on announcing every CID keeps them in, which costs what seeding them all did).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from sovnet.core import torrent
from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.core.network import TlsIdentity
from sovnet.errors import IntegrityError, SovnetError
from sovnet.net.swarm import Swarm
from sovnet.store import blobcheck, filehash
from sovnet.store.store import Store

log = logging.getLogger(__name__)

# Seconds a torrent stays in the swarm after a peer was last seen on it, however
# many there are: a fetch's peers may come and go. One just joined has JOIN_GRACE
# for its first peer: an announce alone (a member may announce every CID) does not
# keep it in.
STAY = 120.0
JOIN_GRACE = 30.0


class Seeder:
    def __init__(
        self,
        store: Store,
        swarm: Swarm,
        identity: TlsIdentity,
        ca_pem: bytes,
        active_seeds: int = 1000,
    ) -> None:
        self._store = store
        self._swarm = swarm
        self.identity = identity  # this node's certificate, for every torrent it joins
        self._ca_pem = ca_pem
        self._active_seeds = active_seeds
        self._seeding: dict[CID, torrent.TorrentSpec] = {}
        self._joined: dict[CID, float] = {}  # in the swarm: when last wanted (monotonic)
        self._joining: dict[CID, asyncio.Future[None]] = {}
        self._leaving: dict[CID, asyncio.Future[None]] = {}  # being taken out of the swarm
        self._by_hash: dict[bytes, CID] = {}
        self.damaged: dict[str, str] = {}  # CID: why it is not seeded

    def derive(self, cid: CID, manifest: Manifest) -> torrent.TorrentSpec:
        """The torrent of ``cid``, known from now on by its info-hash."""
        spec = torrent.derive(cid, manifest, self._ca_pem)
        self._by_hash[spec.info_hash] = cid
        return spec

    def cid_of(self, info_hash: bytes) -> CID | None:
        return self._by_hash.get(info_hash)

    def seeding(self) -> dict[CID, torrent.TorrentSpec]:
        return dict(self._seeding)

    def is_seeding(self, cid: CID) -> bool:
        return cid in self._seeding

    def joined(self) -> int:
        """How many seeded models are in the swarm now."""
        return len(self._joined)

    def in_swarm(self, cid: CID) -> bool:
        return cid in self._joined

    async def seed(self, cid: CID, *, join: bool = True) -> None:
        """Seed a committed model (nothing to do if it is seeded already); in the
        swarm at once with ``join``, else when a peer asks for it."""
        if cid not in self._seeding:
            manifest = self._store.manifest(cid)
            if manifest is None:
                raise IntegrityError(f"the stored manifest of {cid} is damaged")
            for entry in manifest.files:
                if not self._store.blob_path(entry.blake3).is_file():
                    raise IntegrityError(f"{entry.path} is missing from the store")
            self._seeding[cid] = self.derive(cid, manifest)
            self.damaged.pop(str(cid), None)
        if join:
            await self.join(cid)

    async def join(self, cid: CID) -> bool:
        """Put a seeded model's torrent in the swarm, if it is not there; False if
        the model is not seeded. A model whose blob turns out damaged is unseeded,
        listed as damaged, and raised."""
        spec = self._seeding.get(cid)
        if spec is None:
            return False
        leaving = self._leaving.get(cid)
        if leaving is not None:  # out first, then in again: never both at once
            await asyncio.shield(leaving)
        now = asyncio.get_running_loop().time()
        if cid in self._joined:
            # Answered "complete": the asker connects next, so it stays JOIN_GRACE at
            # least (a member can keep a torrent in by announcing it: see the module).
            self._joined[cid] = max(self._joined[cid], now - STAY + JOIN_GRACE)
            return True
        if not spec.has_payload:  # no torrent can carry nothing: seeded as it is
            self._joined[cid] = now
            return True
        joining = self._joining.get(cid)
        if joining is not None:  # another caller is adding it: its outcome
            await asyncio.shield(joining)
            return cid in self._joined
        done = self._joining[cid] = asyncio.get_running_loop().create_future()
        try:
            try:
                layers = await asyncio.to_thread(self._layers, cid, spec.manifest)
            except OSError as exc:  # a blob or layer gone or unreadable since it was seeded
                raise IntegrityError(
                    f"the stored files of {spec.manifest.name} cannot be read: "
                    f"{exc.strerror or exc}"
                ) from exc
            paths = {k: self._store.blob_path(f.blake3) for k, f in enumerate(spec.files)}
            await self._swarm.add(
                spec, identity=self.identity, paths=paths, seeding=True, layers=layers
            )
        except SovnetError as exc:
            self._seeding.pop(cid, None)
            self.damaged[str(cid)] = exc.message
            raise
        finally:
            del self._joining[cid]
            done.set_result(None)
        if cid not in self._seeding:  # unseeded while it was being added
            await self._swarm.remove(spec.info_hash)
            return False
        self._joined[cid] = now - STAY + JOIN_GRACE  # idle soon unless a peer comes
        await self.leave_idle()
        return True

    async def join_all(self) -> None:
        """Join the swarm with as many seeded models as it may hold (at start: the
        daemon answers before all are in)."""
        for cid in list(self._seeding):
            if len(self._joined) >= self._active_seeds:
                return
            try:
                await self.join(cid)
            except SovnetError as exc:
                log.error("not seeding %s: %s", cid, exc.message)

    async def leave_idle(self) -> None:
        """Over ``active_seeds``, take out of the swarm the torrents without peers
        that were not wanted for :data:`STAY` seconds, least recently wanted first."""
        if len(self._joined) <= self._active_seeds:
            return
        now = asyncio.get_running_loop().time()
        statuses = self._swarm.statuses()
        for cid in self._joined:
            status = statuses.get(self._seeding[cid].info_hash)
            if status is not None and status.peers:
                self._joined[cid] = now
        idle = sorted((t, c) for c, t in self._joined.items() if now - t >= STAY)
        for _, cid in idle[: len(self._joined) - self._active_seeds]:
            spec = self._seeding.get(cid)
            if self._joined.pop(cid, None) is None or spec is None or cid in self._leaving:
                continue
            done = self._leaving[cid] = asyncio.get_running_loop().create_future()
            try:
                await self._swarm.remove(spec.info_hash)
            finally:
                del self._leaving[cid]
                done.set_result(None)

    async def check(self, cid: CID) -> dict[bytes, str]:
        """Re-check a held model's blobs whose stat changed since they were verified;
        a damaged one stops its model's seeding (peers would ban this node for its
        bytes) and lists it as damaged. The damaged blobs, by BLAKE3."""
        try:
            manifest = self._store.manifest(cid)  # parsed once, not at every check
        except (SovnetError, OSError):  # removed meanwhile
            return {}
        if manifest is None:  # its bytes are not the CID's: repair's business
            return {}
        found = await asyncio.to_thread(blobcheck.damaged, self._store, manifest.files)
        if not found and str(cid) in self.damaged and cid not in self._seeding:
            # Put right (the publisher undid an edit): seeded again.
            try:
                await self.seed(cid, join=False)
            except SovnetError as exc:
                self.damaged[str(cid)] = exc.message
            else:
                log.info("seeding %s (%s) again: its files are intact", manifest.name, cid)
        if found:
            why = blobcheck.describe(manifest.files, found)
            if cid in self._seeding:
                log.warning("not seeding %s (%s) any more: %s", manifest.name, cid, why)
            await self.unseed(cid)
            self.damaged[str(cid)] = why
        return found

    async def keep_within(self) -> None:
        """Take idle torrents out of the swarm while there are more than allowed
        (runs until cancelled): after a burst of announces, within a few seconds of
        their grace, not at the next check of the files."""
        while True:
            await asyncio.sleep(JOIN_GRACE / 3)
            await self.leave_idle()

    async def watch(self, interval: float) -> None:
        """Check every seeded or damaged model every ``interval`` seconds (runs until
        cancelled): BitTorrent never tells an uploader that a peer found its bytes
        wrong, and a damaged model put right is seeded again."""
        while True:
            await asyncio.sleep(interval)
            for cid in [*self._seeding, *map(CID.parse, self.damaged)]:
                await self.check(cid)

    async def unseed(self, cid: CID) -> None:
        spec = self._seeding.pop(cid, None)
        if spec is not None and self._joined.pop(cid, None) is not None:
            await self._swarm.remove(spec.info_hash)

    def _layers(self, cid: CID, manifest: Manifest) -> dict[bytes, bytes]:
        """Every stored piece layer of a model, made again from its blob if missing
        (and kept, unless the model was removed meanwhile)."""
        layers: dict[bytes, bytes] = {}
        for entry in manifest.files:
            if entry.size <= manifest.piece_size:
                continue
            layer = self._store.layer(entry.blake3, manifest.piece_size)
            if layer is None or not filehash.layer_matches(
                layer, entry.size, manifest.piece_size, entry.pieces_root
            ):
                with ThreadPoolExecutor(2) as executor:
                    digest = filehash.hash_file(
                        self._store.blob_path(entry.blake3),
                        executor,
                        piece_size=manifest.piece_size,
                    )
                if digest.pieces_root != entry.pieces_root:
                    raise IntegrityError(f"the stored blob of {entry.path} is damaged")
                layer = digest.piece_layer
                with self._store.locked():
                    if self._store.has(cid):  # not a layer of a blob `rm` just removed
                        self._store.put_layer(entry.blake3, manifest.piece_size, layer)
            layers[entry.pieces_root] = layer
        return layers
