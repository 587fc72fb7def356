"""The models this node seeds: one torrent each, in the swarm, from the store.

:meth:`Seeder.seed` derives a committed model's torrent (core/torrent.py: every
node derives the same one), reads its piece layers from the store (made again
from the blob if missing or wrong), and adds it to the swarm as complete.
:meth:`Seeder.unseed` takes it out. The seeder knows which info-hash is which
model, for routing the swarm's events; a model that cannot be seeded (its stored
blob is damaged, the swarm refused it) is listed as damaged, not seeded.
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


class Seeder:
    def __init__(self, store: Store, swarm: Swarm, identity: TlsIdentity, ca_pem: bytes) -> None:
        self._store = store
        self._swarm = swarm
        self.identity = identity  # this node's certificate, for every torrent it joins
        self._ca_pem = ca_pem
        self._seeding: dict[CID, torrent.TorrentSpec] = {}
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

    async def seed(self, cid: CID) -> None:
        """Seed a committed model (nothing to do if it is seeded already)."""
        if cid in self._seeding:
            return
        manifest = Manifest.from_bytes(self._store.manifest_bytes(cid))
        for entry in manifest.files:
            if not self._store.blob_path(entry.blake3).is_file():
                raise IntegrityError(f"{entry.path} is missing from the store")
        spec = self.derive(cid, manifest)
        self._seeding[cid] = spec  # first: a second call while this one works does nothing
        try:
            if spec.has_payload:
                layers = await asyncio.to_thread(self._layers, manifest)
                paths = {k: self._store.blob_path(f.blake3) for k, f in enumerate(spec.files)}
                await self._swarm.add(
                    spec, identity=self.identity, paths=paths, seeding=True, layers=layers
                )
        except BaseException:
            del self._seeding[cid]
            raise
        self.damaged.pop(str(cid), None)

    async def check(self, cid: CID) -> dict[bytes, str]:
        """Re-check a held model's blobs whose stat changed since they were verified;
        a damaged one stops its model's seeding (peers would ban this node for its
        bytes) and lists it as damaged. The damaged blobs, by BLAKE3."""
        try:
            manifest = Manifest.from_bytes(self._store.manifest_bytes(cid))
        except (SovnetError, OSError):  # removed meanwhile
            return {}
        found = await asyncio.to_thread(blobcheck.damaged, self._store, manifest.files)
        if not found and str(cid) in self.damaged and cid not in self._seeding:
            # Put right (the publisher undid an edit): seeded again.
            try:
                await self.seed(cid)
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
        if spec is not None and spec.has_payload:
            await self._swarm.remove(spec.info_hash)

    def _layers(self, manifest: Manifest) -> dict[bytes, bytes]:
        """Every stored piece layer of a model, made again from its blob if missing."""
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
                    self._store.put_layer(entry.blake3, manifest.piece_size, layer)
            layers[entry.pieces_root] = layer
        return layers
