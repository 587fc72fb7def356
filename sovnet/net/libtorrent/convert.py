"""Values copied out of libtorrent's objects, so that nothing above holds one."""

from __future__ import annotations

from typing import Any

import libtorrent as lt

from sovnet.core import merkle
from sovnet.core.torrent import TorrentSpec
from sovnet.net.swarm import TransferStatus

_STATES = {
    lt.torrent_status.checking_files: "checking",
    lt.torrent_status.checking_resume_data: "checking",
    lt.torrent_status.downloading_metadata: "downloading",
    lt.torrent_status.downloading: "downloading",
    lt.torrent_status.finished: "finished",
    lt.torrent_status.seeding: "seeding",
}
_ALERTS = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.storage
    | lt.alert_category.peer
    | lt.alert_category.ip_block
)


def info_hash(handle_or_hashes: Any) -> bytes:
    hashes = handle_or_hashes.info_hashes() if hasattr(handle_or_hashes, "info_hashes") else None
    if hashes is None:
        hashes = handle_or_hashes
    return bytes(hashes.v2.to_bytes())


def leaves_from_resume(
    data: bytes, indexes: list[int], spec: TorrentSpec
) -> dict[int, list[bytes]]:
    """The leaf hashes libtorrent verified, by file of ``spec``, from its resume data.

    For each file, libtorrent's resume data keeps the nodes of its merkle tree it
    has checked ("trees": a list by libtorrent's file index of {"hashes", "mask"},
    no mask meaning the whole tree); a finished download keeps every leaf of a
    file larger than a piece. A file whose leaves are not all there is left out.
    """
    try:
        decoded: Any = lt.bdecode(data)
        trees = decoded.get(b"trees") if isinstance(decoded, dict) else None
    except RuntimeError:
        return {}
    if not isinstance(trees, list):
        return {}
    found: dict[int, list[bytes]] = {}
    for k, entry in enumerate(spec.files):
        index = indexes[k]
        tree = trees[index] if index < len(trees) else None
        if entry.size == 0 or not isinstance(tree, dict):
            continue
        hashes, mask = tree.get(b"hashes"), tree.get(b"mask")
        if isinstance(hashes, bytes) and isinstance(mask, bytes | None):
            leaves = merkle.leaves_from_sparse_tree(hashes, mask, merkle.leaf_count(entry.size))
            if leaves is not None:
                found[k] = leaves
    return found


def file_indexes(info: Any, spec: TorrentSpec) -> list[int]:
    """libtorrent's index of each file of ``spec`` (pad files skipped), checked by path."""
    layout = info.layout()
    indexes = [
        i
        for i in range(layout.num_files())
        if not layout.file_flags(i) & lt.file_storage.flag_pad_file
    ]
    prefix = "" if spec.single_file else f"{info.name()}/"
    found = [layout.file_path(i) for i in indexes]
    expected = [prefix + entry.path for entry in spec.files]
    if found != expected:  # pragma: no cover - torrent.py and libtorrent disagree: a bug
        raise AssertionError(f"torrent file order differs from libtorrent's: {found[:3]}")
    return indexes


def transfer_status(status: Any) -> TransferStatus:
    """A torrent_status, as the swarm reports it."""
    if status.errc.value():
        state = "error"
    elif status.paused:
        state = "paused"
    else:
        state = _STATES.get(status.state, "downloading")
    return TransferStatus(
        info_hash=info_hash(status.info_hashes),
        state=state,
        wanted=int(status.total_wanted),
        wanted_done=int(status.total_wanted_done),
        download_rate=int(status.download_payload_rate),
        upload_rate=int(status.upload_payload_rate),
        peers=int(status.num_peers),
        seeds=int(status.num_seeds),
        session_downloaded=int(status.total_payload_download),
        session_uploaded=int(status.total_payload_upload),
        failed_bytes=int(status.total_failed_bytes),
        error=status.errc.message() if status.errc.value() else None,
    )
