"""The swarm on libtorrent: the only module that imports libtorrent.

One session per daemon, listening only on a TLS socket (``HOST:PORTs``): every
torrent is an SSL torrent of the node's network, so there is nothing to say to
a peer without a certificate. DHT, local peer discovery, UPnP, NAT-PMP and uTP
are off: peers come from the control plane, and uTP is about 40 times slower
than TCP on loopback here.

asyncio integration: libtorrent writes a byte to a socketpair whenever its
alert queue becomes non-empty (``set_alert_fd``); the event loop reads it and
pops the alerts. (``set_alert_notify`` with a Python callback can deadlock
under the GIL.) Everything is copied out of an alert before the next
``pop_alerts``. Calls that would wait for libtorrent's network thread are made
asynchronously (``async_add_torrent``, ``post_torrent_updates``,
``save_resume_data``), so the loop never blocks on libtorrent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import libtorrent as lt

from sovnet.core import merkle
from sovnet.core.address import PeerAddress
from sovnet.core.network import TlsIdentity
from sovnet.core.torrent import TorrentSpec
from sovnet.errors import LocalStateError
from sovnet.net.swarm import (
    Finished,
    HashFailed,
    PeerBanned,
    ResumeSaved,
    SwarmEvent,
    SwarmSettings,
    TorrentFailed,
    TransferStatus,
)

log = logging.getLogger("sovnet.net.swarm")

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
_LISTEN_TIMEOUT = 10.0


def session_settings(settings: SwarmSettings) -> lt.settings_pack:
    """sovnetd's libtorrent settings (the fetch benchmark's bare peers use them too)."""
    # Measured on loopback (design notes): these buffers take a 2 GiB v2 transfer
    # from 0.39 to 0.49 GB/s.
    return {
        "listen_interfaces": f"{settings.listen}s",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Several nodes of one machine (tests, the demo) or behind one NAT.
        "allow_multiple_connections_per_ip": True,
        "send_buffer_watermark": 8 * 1024 * 1024,
        "max_out_request_queue": 1500,
        # Ask each peer for about one second of what it delivers, not three: a
        # seeder behind a slow uplink then has fewer pieces in flight to every
        # downloader at once, so fewer go out twice. Fan-out benchmark, N = 8,
        # 400 Mbit/s: the seeder uploaded 2.07-2.22x the model instead of
        # 2.34-2.47x, makespan unchanged; a fast peer's queue stays at the cap.
        "request_queue_time": 1,
        "max_allowed_in_request_queue": 4000,
        # Blocks that passed their hash check but still wait in memory to be written
        # do not survive a crash: the smaller this queue, the less a restarted fetch
        # downloads again. 1 GiB fetch on loopback,
        # SIGKILL at half (scripts/bench/resume.py): 22-25% of the model downloaded
        # twice with 256 MiB here, 13% with 64 MiB, 3-8% with 16 MiB. Speed: A/B of
        # 1 GiB, 4 rounds, medians 4.39 s (256), 4.41 (64), 4.34 (16); two A/B runs
        # at 256 MiB disagreed (256: 0.93 and 1.39 s, 16: 1.48 and 1.42 s), which
        # is this VM's noise, not a trend.
        "max_queued_disk_bytes": 16 * 1024 * 1024,
        "hashing_threads": 2,
        # One disk thread a core: libtorrent's default of 10 spends a third of a
        # 2-core seeder in futex hand-offs (perf); measured here, a 256 MiB fetch
        # took 1.4-1.6 s with 2 threads against 1.8-2.2 s with 10.
        "aio_threads": max(2, os.cpu_count() or 2),
        # libtorrent connects to new peers on its tick: every 100 ms, not 500, starts
        # a fetch about 0.6 s sooner (measured: first byte 0.9 s -> 0.3 s after the
        # manifest arrived).
        "tick_interval": 100,
        # Peers come from the control plane and are few and known: retry a failed
        # one after seconds, not libtorrent's default minute.
        "min_reconnect_time": 2,
        "upload_rate_limit": settings.upload_rate_limit,
        "download_rate_limit": settings.download_rate_limit,
        # A mirror seeds hundreds of models: no queueing of torrents.
        "active_limit": 100_000,
        "active_seeds": 100_000,
        "active_downloads": 100_000,
        "user_agent": "sovnet",
        "alert_mask": _ALERTS,
        "alert_queue_size": 10_000,
    }


def _info_hash(handle_or_hashes: Any) -> bytes:
    hashes = handle_or_hashes.info_hashes() if hasattr(handle_or_hashes, "info_hashes") else None
    if hashes is None:
        hashes = handle_or_hashes
    return bytes(hashes.v2.to_bytes())


def _leaves_from_resume(
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


def _file_indexes(info: Any, spec: TorrentSpec) -> list[int]:
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


class LibtorrentSwarm:
    """The :class:`sovnet.swarm.Swarm` of one libtorrent session."""

    def __init__(self, settings: SwarmSettings) -> None:
        self._settings = settings
        self._session: Any = None
        self._port = 0
        self._events: asyncio.Queue[SwarmEvent] = asyncio.Queue()
        self._handles: dict[bytes, Any] = {}
        self._downloading: set[bytes] = set()
        self._statuses: dict[bytes, TransferStatus] = {}
        self._pending_adds: dict[bytes, asyncio.Future[Any]] = {}
        self._pending_removes: dict[bytes, asyncio.Future[None]] = {}
        self._pending_resume: set[bytes] = set()
        self._pending_trees: dict[bytes, asyncio.Future[bytes | None]] = {}
        self._file_indexes: dict[bytes, list[int]] = {}
        # Torrents libtorrent let start before add() was ready to resume them (see
        # add()), and those add() left paused until it does.
        self._startable: set[bytes] = set()
        self._waiting_to_start: dict[bytes, Any] = {}
        self._listening: asyncio.Future[int] | None = None
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._ticker: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._port

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listening = loop.create_future()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._session = lt.session(session_settings(self._settings))
        # Rate limits apply to every peer: libtorrent exempts peers on the local
        # network by default, which would leave a LAN mirror (and tests on
        # loopback) unlimited.
        every_ip = lt.ip_filter()
        every_ip.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        every_ip.add_rule(
            "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1 << lt.session.global_peer_class_id
        )
        self._session.set_peer_class_filter(every_ip)
        loop.add_reader(self._reader.fileno(), self._on_alerts)
        self._session.set_alert_fd(self._writer.fileno())
        self._on_alerts()  # alerts posted before the fd was set
        try:
            self._port = await asyncio.wait_for(self._listening, _LISTEN_TIMEOUT)
        except TimeoutError:
            raise LocalStateError(
                f"the swarm did not start listening on {self._settings.listen} "
                f"within {_LISTEN_TIMEOUT:.0f} s"
            ) from None
        self._ticker = asyncio.create_task(self._tick(), name="swarm-status")

    async def close(self) -> None:
        if self._session is None:
            return
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._session.pause()
        waiting = [h for h in self._downloading if h in self._handles]
        for info_hash in waiting:
            self.save_resume(info_hash)
        # Give libtorrent a bounded time to hand over resume data.
        for _ in range(100):
            if not self._pending_resume:
                break
            await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        if self._reader is not None:
            loop.remove_reader(self._reader.fileno())
        session, self._session = self._session, None
        # Destroying the session joins libtorrent's threads: not on the loop.
        await asyncio.to_thread(self._destroy, session)
        for sock in (self._reader, self._writer):
            if sock is not None:
                sock.close()

    @staticmethod
    def _destroy(session: Any) -> None:
        del session

    # -- torrents ----------------------------------------------------------------

    async def add(
        self,
        spec: TorrentSpec,
        *,
        identity: TlsIdentity,
        paths: Mapping[int, Path],
        seeding: bool,
        layers: Mapping[bytes, bytes] | None = None,
        resume: bytes | None = None,
        skip: Iterable[int] = (),
        peers: Iterable[PeerAddress] = (),
    ) -> None:
        info_hash = spec.info_hash
        if info_hash in self._handles or info_hash in self._pending_adds:
            return
        torrent = spec.torrent_file(dict(layers or {}))
        info = lt.torrent_info(torrent)
        if _info_hash(info.info_hashes()) != info_hash:  # pragma: no cover - a bug
            raise AssertionError("libtorrent derived another info-hash")
        params = lt.read_resume_data(resume) if resume else lt.add_torrent_params()
        params.ti = info
        params.save_path = str(Path(next(iter(paths.values()))).parent)
        indexes = self._file_indexes[info_hash] = _file_indexes(info, spec)
        params.renamed_files = {indexes[k]: str(path) for k, path in paths.items()}
        skipped = set(skip)
        priorities = [4] * info.layout().num_files()
        for k in skipped:
            priorities[indexes[k]] = 0
        params.file_priorities = priorities
        if seeding:
            # The store verified every byte (BLAKE3 against the signed manifest)
            # before it committed the files: no need for libtorrent to read them.
            params.have_pieces = [True] * info.num_pieces()
        # libtorrent connects to the peers it knows as a torrent starts, at once;
        # to any other only in its once-a-second connect round. So the torrent
        # starts with the holders' addresses, and only once it has its certificate
        # and libtorrent has checked it (added paused, resumed after both): an SSL
        # torrent without a certificate wants no peers, and one resumed while
        # still being checked starts without connecting too. Measured: from the
        # holders' answer to the first connection, 0.4-0.6 s with neither; with
        # the certificate only, 3-6 ms, but 0.55-0.73 s in 3 fetches of 8 (the
        # check had not ended); with both, 1-2 ms in 20 of 20. A torrent whose
        # files must be hashed (files on disk, no usable resume data) is not
        # checked while paused: it is resumed as that check begins (_handle).
        params.peers = [*params.peers, *((p.host, p.port) for p in peers)]
        params.flags &= ~lt.torrent_flags.auto_managed
        params.flags |= lt.torrent_flags.paused
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending_adds[info_hash] = future
        self._session.async_add_torrent(params)
        try:
            handle = await asyncio.wait_for(future, 30)
        finally:
            self._pending_adds.pop(info_hash, None)
        handle.set_ssl_certificate_buffer(
            identity.cert_pem.decode("ascii"),
            identity.key_pem.decode("ascii"),
            identity.dh_pem.decode("ascii"),
        )
        if info_hash in self._startable:
            self._startable.discard(info_hash)
            handle.resume()
        else:
            self._waiting_to_start[info_hash] = handle
        self._handles[info_hash] = handle
        if not seeding:
            self._downloading.add(info_hash)

    async def remove(self, info_hash: bytes) -> None:
        handle = self._handles.pop(info_hash, None)
        self._downloading.discard(info_hash)
        self._startable.discard(info_hash)
        self._waiting_to_start.pop(info_hash, None)
        self._file_indexes.pop(info_hash, None)
        self._statuses.pop(info_hash, None)
        if handle is None:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_removes[info_hash] = future
        self._session.remove_torrent(handle)
        try:
            await asyncio.wait_for(future, 30)
        except TimeoutError:
            log.warning("libtorrent did not confirm removing %s", info_hash.hex()[:16])
        finally:
            self._pending_removes.pop(info_hash, None)

    def connect(self, info_hash: bytes, peers: Iterable[PeerAddress]) -> None:
        handle = self._handles.get(info_hash)
        if handle is None:
            return
        for peer in peers:
            try:
                handle.connect_peer((peer.host, peer.port))
            except RuntimeError as exc:  # an address libtorrent cannot parse
                log.warning("cannot connect to %s: %s", peer, exc)

    def save_resume(self, info_hash: bytes) -> bool:
        handle = self._handles.get(info_hash)
        if handle is None or info_hash in self._pending_resume:
            return False
        self._pending_resume.add(info_hash)
        handle.save_resume_data(lt.torrent_handle.flush_disk_cache)
        return True

    async def verified_leaves(self, info_hash: bytes, spec: TorrentSpec) -> dict[int, list[bytes]]:
        handle = self._handles.get(info_hash)
        indexes = self._file_indexes.get(info_hash)
        if handle is None or indexes is None or info_hash in self._pending_trees:
            return {}
        # A periodic save may be under way: its alert must not be taken for ours.
        for _ in range(100):
            if info_hash not in self._pending_resume:
                break
            await asyncio.sleep(0.05)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending_trees[info_hash] = future
        handle.save_resume_data()
        try:
            data = await asyncio.wait_for(future, 30)
        except TimeoutError:
            log.warning("libtorrent did not hand over the hashes of %s", info_hash.hex()[:16])
            return {}
        finally:
            self._pending_trees.pop(info_hash, None)
        return _leaves_from_resume(data, indexes, spec) if data else {}

    def statuses(self) -> Mapping[bytes, TransferStatus]:
        return dict(self._statuses)

    async def status_now(self, info_hash: bytes) -> TransferStatus | None:
        handle = self._handles.get(info_hash)
        if handle is None:
            return None
        # handle.status() waits for libtorrent's network thread: not on the loop.
        self._record(await asyncio.to_thread(handle.status))
        return self._statuses.get(info_hash)

    async def next_event(self) -> SwarmEvent:
        return await self._events.get()

    # -- alerts --------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            if self._session is not None:
                self._session.post_torrent_updates()
            # Fresh figures while something downloads: a fetch asks for resume data
            # by the bytes it has, and 0.5 s can be a quarter of a model on a LAN.
            await asyncio.sleep(0.1 if self._downloading else 0.5)

    def _on_alerts(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(BlockingIOError):
                while self._reader.recv(4096):
                    pass
        if self._session is None:
            return
        for alert in self._session.pop_alerts():
            try:
                self._handle(alert)
            except Exception:  # one odd alert must not stop the swarm
                log.exception("error handling libtorrent alert %s", type(alert).__name__)

    def _handle(self, alert: Any) -> None:
        kind = type(alert).__name__
        if kind == "listen_succeeded_alert":
            is_tls = "SSL" in str(alert.socket_type) or "ssl" in alert.message().lower()
            if is_tls and self._listening is not None and not self._listening.done():
                self._listening.set_result(int(alert.port))
        elif kind == "listen_failed_alert":
            log.error("swarm: %s", alert.message())
            if self._listening is not None and not self._listening.done():
                self._listening.set_exception(
                    LocalStateError(
                        f"the swarm cannot listen on {self._settings.listen}: {alert.message()}",
                        hint="choose another swarm_listen address or port",
                    )
                )
        elif kind == "add_torrent_alert":
            info_hash = _info_hash(alert.params.ti.info_hashes()) if alert.params.ti else b""
            future = self._pending_adds.get(info_hash)
            if future is not None and not future.done():
                if alert.error.value():
                    future.set_exception(
                        LocalStateError(f"libtorrent refused the torrent: {alert.error.message()}")
                    )
                else:
                    future.set_result(alert.handle)
        elif kind == "torrent_removed_alert":
            info_hash = _info_hash(alert.info_hashes)
            future_removed = self._pending_removes.get(info_hash)
            if future_removed is not None and not future_removed.done():
                future_removed.set_result(None)
        elif kind == "state_update_alert":
            for status in alert.status:
                self._record(status)
        elif kind == "torrent_checked_alert" or (
            kind == "state_changed_alert" and alert.state == lt.torrent_status.checking_files
        ):
            # Checked (start now), or a full check that a paused torrent never begins.
            # Either may come before add() has set the certificate: remembered.
            info_hash = _info_hash(alert.handle)
            waiting = self._waiting_to_start.pop(info_hash, None)
            if waiting is not None:
                waiting.resume()
            elif info_hash in self._pending_adds:
                self._startable.add(info_hash)
        elif kind == "torrent_finished_alert":
            info_hash = _info_hash(alert.handle)
            if info_hash in self._downloading:
                self._events.put_nowait(Finished(info_hash))
        elif kind == "save_resume_data_alert":
            self._resume_arrived(
                _info_hash(alert.handle), bytes(lt.write_resume_data_buf(alert.params))
            )
        elif kind == "save_resume_data_failed_alert":
            self._resume_arrived(_info_hash(alert.handle), None)
        elif kind == "hash_failed_alert":
            info_hash = _info_hash(alert.handle)
            log.warning(
                "swarm: piece %d of %s failed its hash check",
                alert.piece_index,
                info_hash.hex()[:16],
            )
            self._events.put_nowait(HashFailed(info_hash, int(alert.piece_index)))
        elif kind == "peer_ban_alert":
            info_hash = _info_hash(alert.handle)
            peer = f"{alert.endpoint[0]}:{alert.endpoint[1]}"
            log.warning(
                "swarm: banned peer %s on %s for sending corrupt data", peer, info_hash.hex()[:16]
            )
            self._events.put_nowait(
                PeerBanned(info_hash, peer, "sent data that failed hash checks")
            )
        elif kind in ("torrent_error_alert", "file_error_alert"):
            info_hash = _info_hash(alert.handle)
            log.error("swarm: %s", alert.message())
            self._events.put_nowait(TorrentFailed(info_hash, alert.message()))
        elif kind in ("peer_error_alert", "peer_disconnected_alert") and log.isEnabledFor(
            logging.DEBUG
        ):
            log.debug("swarm: %s", alert.message())

    def _resume_arrived(self, info_hash: bytes, data: bytes | None) -> None:
        """Resume data (None: libtorrent could not make it), for whoever asked first."""
        trees = self._pending_trees.get(info_hash)
        if trees is not None and info_hash not in self._pending_resume:
            if not trees.done():
                trees.set_result(data)
            return
        self._pending_resume.discard(info_hash)
        if data is not None:
            self._events.put_nowait(ResumeSaved(info_hash, data))

    def _record(self, status: Any) -> None:
        info_hash = _info_hash(status.info_hashes)
        if info_hash not in self._handles:
            return
        if status.errc.value():
            state = "error"
        elif status.paused:
            state = "paused"
        else:
            state = _STATES.get(status.state, "downloading")
        self._statuses[info_hash] = TransferStatus(
            info_hash=info_hash,
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
