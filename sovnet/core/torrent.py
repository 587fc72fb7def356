"""The BitTorrent v2 torrent of a model, derived from its signed manifest alone.

Every node derives the same torrent from the same manifest and network, so the
swarm's address (the v2 info-hash) needs no coordination and no trust in
whoever announces it:

* ``file tree``: every file of the manifest under its path; a file's
  ``pieces root`` is the one the publisher signed, so a peer cannot swap in
  other content, and libtorrent checks every 16 KiB block against it;
* ``meta version`` 2, ``piece length`` the manifest's piece size;
* ``name`` the manifest's CID (libtorrent replaces it by the file name when the
  model has one file; it is informational either way);
* ``ssl-cert`` the network's CA certificate (PEM), which makes it a libtorrent
  SSL torrent: only peers holding a certificate issued by that CA can join;
* nothing else: no creation date, creator, comment, trackers or URL seeds.

The piece layers (a large file's piece hashes) are not part of the info
dictionary; a node that has the files supplies them from its store, and a node
that downloads gets them from peers, checked against the signed roots.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sovnet.core import bencode
from sovnet.core.cid import CID
from sovnet.core.manifest import FileEntry, Manifest
from sovnet.core.merkle import ZERO_HASH
from sovnet.errors import ManifestFormatError


def _components(path: str) -> tuple[bytes, ...]:
    return tuple(part.encode("utf-8") for part in path.split("/"))


def torrent_order(manifest: Manifest) -> tuple[FileEntry, ...]:
    """The files in the order a BitTorrent client lists them: a depth-first walk of
    the file tree with keys sorted as bytes (not the manifest's order by path text:
    ``a.txt`` sorts before ``a/b`` as text but after it in the tree)."""
    return tuple(sorted(manifest.files, key=lambda f: _components(f.path)))


@dataclass(frozen=True)
class TorrentSpec:
    """What the swarm needs to share one model: the info dictionary and its hash."""

    cid: CID
    manifest: Manifest
    info: bytes  # bencoded info dictionary
    files: tuple[FileEntry, ...]  # in torrent order (pad files excluded)

    @property
    def info_hash(self) -> bytes:
        """The v2 info-hash: SHA-256 of the bencoded info dictionary."""
        return hashlib.sha256(self.info).digest()

    @property
    def single_file(self) -> bool:
        """BitTorrent's single-file form: one file, not in a directory. libtorrent
        then names the file by its path alone; otherwise by ``name/path``."""
        return len(self.files) == 1 and "/" not in self.files[0].path

    @property
    def has_payload(self) -> bool:
        """False for a model of empty files only: no torrent can carry it (libtorrent
        refuses a torrent of zero bytes), and none is needed."""
        return self.manifest.total_size > 0

    def torrent_file(self, layers: dict[bytes, bytes]) -> bytes:
        """A whole .torrent: the info dictionary and the given piece layers (by root)."""
        body = bencode.encode({"piece layers": {root: layer for root, layer in layers.items()}})
        # Splice the exact info bytes in, so the info-hash cannot drift by re-encoding.
        return b"d4:info" + self.info + body[1:]


def derive(cid: CID, manifest: Manifest, ca_pem: bytes) -> TorrentSpec:
    """The torrent of ``manifest`` (whose CID is ``cid``) in the network of ``ca_pem``."""
    tree: dict[bytes, Any] = {}
    for entry in manifest.files:
        if entry.size and entry.pieces_root == ZERO_HASH:
            # No data hashes to zero; BitTorrent reads a zero root as "none".
            raise ManifestFormatError(
                f"{cid}: file {entry.path!r} has {entry.size} bytes but an all-zero pieces root",
                hint="the publisher's manifest is broken; it cannot be shared over a swarm",
            )
        node = tree
        *dirs, leaf = _components(entry.path)
        for part in dirs:
            node = node.setdefault(part, {})  # relpath.check_tree: no file is also a dir
        props: dict[bytes, bencode.BValue] = {b"length": entry.size}
        if entry.size:
            props[b"pieces root"] = entry.pieces_root
        node[leaf] = {b"": props}
    info: dict[bytes, bencode.BValue] = {
        b"file tree": tree,
        b"meta version": 2,
        b"name": str(cid),
        b"piece length": manifest.piece_size,
        b"ssl-cert": ca_pem,
    }
    return TorrentSpec(
        cid=cid, manifest=manifest, info=bencode.encode(info), files=torrent_order(manifest)
    )
