"""The swarm on libtorrent: this package is the only code that imports libtorrent.

asyncio integration: libtorrent writes a byte to a socketpair whenever its alert
queue becomes non-empty (``set_alert_fd``); the event loop reads it and pops the
alerts. (``set_alert_notify`` with a Python callback can deadlock under the GIL.)
Everything is copied out of an alert before the next ``pop_alerts``. Calls that
would wait for libtorrent's network thread are made asynchronously
(``async_add_torrent``, ``post_torrent_updates``, ``save_resume_data``), so the loop
never blocks on libtorrent. What was asked and not yet answered is kept in
:class:`_Pending`; each torrent's own state in a :class:`_Torrent`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import libtorrent as lt

from sovnet.core.address import PeerAddress
from sovnet.core.network import TlsIdentity
from sovnet.core.torrent import TorrentSpec
from sovnet.errors import LocalStateError
from sovnet.net.libtorrent.convert import (
    file_indexes,
    info_hash,
    leaves_from_resume,
    transfer_status,
)
from sovnet.net.libtorrent.settings import peer_class_filter, session_settings
from sovnet.net.peerbytes import Connection, PeerBytes
from sovnet.net.rejections import SWARM, Rejections, handshake_reason
from sovnet.net.swarm import (
    Finished,
    HashFailed,
    PeerBanned,
    RateLimits,
    ResumeSaved,
    SwarmEvent,
    SwarmSettings,
    TorrentFailed,
    TransferStatus,
    VerifiedDownload,
)

log = logging.getLogger("sovnet.net.swarm")

_LISTEN_TIMEOUT = 10.0
# A swarm port another process holds is tried again this often: the old sovnetd of a
# restart may still be saving resume data, and the node serves its API meanwhile,
# saying why it is not ready (/readyz, `sovnet status`).
_LISTEN_RETRY = 5.0
# Connections' payload totals are sampled this often (and as their torrent leaves),
# to share each torrent's bytes out among peer classes (net/peerbytes.py).
_SAMPLE_EVERY = 0.5


def _connections(busy: list[tuple[bytes, Any]]) -> list[Connection]:
    found = []
    for key, handle in busy:
        try:
            peers = handle.get_peer_info()
        except RuntimeError:  # removed meanwhile
            continue
        for peer in peers:
            host, port = peer.ip
            found.append(
                Connection(key, str(host), int(port), peer.total_download, peer.total_upload)
            )
    return found


async def _answered(future: asyncio.Future[None], what: str) -> None:
    """Wait for libtorrent's answer, at most 30 s; a silence is logged, not raised
    (the torrent is gone from sovnet's view either way)."""
    try:
        await asyncio.wait_for(future, 30)
    except TimeoutError:
        log.warning("libtorrent did not %s", what)


@dataclass
class _Torrent:
    handle: Any
    indexes: list[int]  # libtorrent's index of each file of the spec
    downloading: bool
    status: TransferStatus | None = None
    failed: bool = False  # a disk error was reported (once)


@dataclass
class _Pending:
    """What was asked of libtorrent and not answered yet, by info-hash."""

    adds: dict[bytes, asyncio.Future[Any]] = field(default_factory=dict)
    removes: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)
    trees: dict[bytes, asyncio.Future[bytes | None]] = field(default_factory=dict)
    resume: set[bytes] = field(default_factory=set)
    # Torrents libtorrent let start before add() was ready to resume them (see
    # add()), and those add() left paused until it does.
    startable: set[bytes] = field(default_factory=set)
    waiting_to_start: dict[bytes, Any] = field(default_factory=dict)
    # Seeding torrents add() waits for until they are resumed (accept peers).
    started: dict[bytes, asyncio.Future[None]] = field(default_factory=dict)


class LibtorrentSwarm:
    """The :class:`sovnet.net.swarm.Swarm` of one libtorrent session."""

    def __init__(self, settings: SwarmSettings, rejections: Rejections | None = None) -> None:
        self._settings = settings
        # Incoming connections refused at the TLS handshake: counted, logged at INFO.
        self.rejections = rejections or Rejections()
        self._session: Any = None
        self._port = 0
        self._events: asyncio.Queue[SwarmEvent] = asyncio.Queue()
        self._torrents: dict[bytes, _Torrent] = {}
        self._pending = _Pending()
        self._listening: asyncio.Future[int] | None = None
        self._listen_problem: str | None = None  # why the swarm does not listen now
        self._listen_tried = 0.0
        # Payload bytes of the torrents removed since start, for totals().
        self._retired = (0, 0)
        self._alert_fds: tuple[socket.socket, socket.socket] | None = None  # read, write
        self._ticker: asyncio.Task[None] | None = None
        self._peer_bytes = PeerBytes(settings.local_networks)

    @property
    def port(self) -> int:
        return self._port

    @property
    def listen_problem(self) -> str | None:
        return self._listen_problem

    def set_limits(self, limits: RateLimits) -> None:
        self._session.apply_settings(
            {"upload_rate_limit": limits.upload, "download_rate_limit": limits.download}
        )
        self._set_local_limits(limits)

    def _set_local_limits(self, limits: RateLimits) -> None:
        self._session.set_peer_class(
            lt.session.local_peer_class_id,
            {"upload_limit": limits.local_upload, "download_limit": limits.local_download},
        )

    def limits(self) -> RateLimits:
        settings = self._session.get_settings()
        local = self._session.get_peer_class(lt.session.local_peer_class_id)
        return RateLimits(
            upload=int(settings["upload_rate_limit"]),
            download=int(settings["download_rate_limit"]),
            local_upload=int(local["upload_limit"]),
            local_download=int(local["download_limit"]),
        )

    def totals(self) -> tuple[int, int]:
        down, up = self._retired
        for torrent in self._torrents.values():
            if torrent.status is not None:
                down += torrent.status.session_downloaded
                up += torrent.status.session_uploaded
        return down, up

    def class_totals(self) -> Mapping[str, tuple[int, int]]:
        self._share_bytes()  # up to the same statuses as totals()
        return self._peer_bytes.totals()

    def _share_bytes(self, only: bytes | None = None) -> None:
        self._peer_bytes.update(
            {
                key: (t.status.session_downloaded, t.status.session_uploaded)
                for key, t in self._torrents.items()
                if t.status is not None and (only is None or key == only)
            }
        )

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._listening = loop.create_future()
        reader, writer = self._alert_fds = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        self._session = lt.session(session_settings(self._settings))
        self._session.set_peer_class_filter(peer_class_filter(self._settings.local_networks))
        self._set_local_limits(self._settings.limits)
        loop.add_reader(reader.fileno(), self._on_alerts)
        self._session.set_alert_fd(writer.fileno())
        self._on_alerts()  # alerts posted before the fd was set
        try:
            self._port = await asyncio.wait_for(self._listening, _LISTEN_TIMEOUT)
        except TimeoutError:
            raise LocalStateError(
                f"the swarm did not start listening on {self._settings.listen} "
                f"within {_LISTEN_TIMEOUT:.0f} s"
            ) from None
        self._ticker = asyncio.create_task(self._tick(), name="swarm-status")
        self._ticker.add_done_callback(_loud)

    async def close(self) -> None:
        if self._session is None:
            return
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self._session.pause()
        for key, torrent in list(self._torrents.items()):
            if torrent.downloading:
                self.save_resume(key)
        # Give libtorrent a bounded time to hand over resume data.
        for _ in range(100):
            if not self._pending.resume:
                break
            await asyncio.sleep(0.5)
        if self._alert_fds is not None:
            asyncio.get_running_loop().remove_reader(self._alert_fds[0].fileno())
        session, self._session = self._session, None
        # Destroying the session joins libtorrent's threads: not on the loop.
        await asyncio.to_thread(self._destroy, session)
        for sock in self._alert_fds or ():
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
        key = spec.info_hash
        if key in self._torrents or key in self._pending.adds:
            return
        info = lt.torrent_info(spec.torrent_file(dict(layers or {})))
        if info_hash(info.info_hashes()) != key:  # pragma: no cover - a bug
            raise AssertionError("libtorrent derived another info-hash")
        params = lt.read_resume_data(resume) if resume else lt.add_torrent_params()
        params.ti = info
        params.save_path = str(Path(next(iter(paths.values()))).parent)
        indexes = file_indexes(info, spec)
        params.renamed_files = {indexes[k]: str(path) for k, path in paths.items()}
        priorities = [4] * info.layout().num_files()
        for k in set(skip):
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
        params.peers = [*params.peers, *((p.host, p.port) for p in _endpoints(peers))]
        # Resume data saved after a disk error records libtorrent's upload mode (no
        # downloading): a torrent added again, once there is room, must download.
        params.flags &= ~(lt.torrent_flags.auto_managed | lt.torrent_flags.upload_mode)
        params.flags |= lt.torrent_flags.paused
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.adds[key] = future
        self._session.async_add_torrent(params)
        try:
            handle = await asyncio.wait_for(future, 30)
        finally:
            self._pending.adds.pop(key, None)
        handle.set_ssl_certificate_buffer(
            identity.cert_pem.decode("ascii"),
            identity.key_pem.decode("ascii"),
            identity.dh_pem.decode("ascii"),
        )
        self._torrents[key] = _Torrent(handle, indexes, downloading=not seeding)
        if key in self._pending.startable:
            self._pending.startable.discard(key)
            handle.resume()
        elif seeding:
            # A seed joins when a peer's announce asks for it (seeder.py): the
            # announce is answered once the torrent takes connections, or the
            # asker's first connection is refused and retried seconds later.
            started = self._pending.started[key] = asyncio.get_running_loop().create_future()
            self._pending.waiting_to_start[key] = handle
            try:
                await _answered(started, f"start seeding {key.hex()[:16]}")
            finally:
                self._pending.started.pop(key, None)
        else:
            self._pending.waiting_to_start[key] = handle

    async def remove(self, info_hash: bytes) -> None:
        if info_hash in self._torrents:
            await self._sample_connections(only=info_hash)  # their last bytes
        self._peer_bytes.forget(info_hash)
        torrent = self._torrents.pop(info_hash, None)
        self._pending.startable.discard(info_hash)
        self._pending.waiting_to_start.pop(info_hash, None)
        started = self._pending.started.get(info_hash)
        if started is not None and not started.done():
            started.set_result(None)  # add() waits no more for a torrent removed
        if torrent is None:
            return
        if torrent.status is not None:
            down, up = self._retired
            self._retired = (
                down + torrent.status.session_downloaded,
                up + torrent.status.session_uploaded,
            )
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.removes[info_hash] = future
        self._session.remove_torrent(torrent.handle)
        try:
            await _answered(future, f"confirm removing {info_hash.hex()[:16]}")
        finally:
            self._pending.removes.pop(info_hash, None)

    def connect(self, info_hash: bytes, peers: Iterable[PeerAddress]) -> None:
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            return
        for peer in _endpoints(peers):
            try:
                torrent.handle.connect_peer((peer.host, peer.port))
            except RuntimeError as exc:  # an address libtorrent cannot parse
                log.warning("cannot connect to %s: %s", peer, exc)

    def save_resume(self, info_hash: bytes) -> bool:
        torrent = self._torrents.get(info_hash)
        if torrent is None or info_hash in self._pending.resume:
            return False
        self._pending.resume.add(info_hash)
        torrent.handle.save_resume_data(lt.torrent_handle.flush_disk_cache)
        return True

    async def verified_download(self, info_hash: bytes, spec: TorrentSpec) -> VerifiedDownload:
        torrent = self._torrents.get(info_hash)
        if torrent is None or info_hash in self._pending.trees:
            return VerifiedDownload({}, None)
        # A periodic save may be under way: its alert must not be taken for ours.
        for _ in range(100):
            if info_hash not in self._pending.resume:
                break
            await asyncio.sleep(0.05)
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending.trees[info_hash] = future
        torrent.handle.save_resume_data()
        try:
            data = await asyncio.wait_for(future, 30)
        except TimeoutError:
            log.warning("libtorrent did not hand over the hashes of %s", info_hash.hex()[:16])
            return VerifiedDownload({}, None)
        finally:
            self._pending.trees.pop(info_hash, None)
        if data is None:
            return VerifiedDownload({}, None)
        return VerifiedDownload(leaves_from_resume(data, torrent.indexes, spec), data)

    def statuses(self) -> Mapping[bytes, TransferStatus]:
        return {key: t.status for key, t in self._torrents.items() if t.status is not None}

    async def status_now(self, info_hash: bytes) -> TransferStatus | None:
        torrent = self._torrents.get(info_hash)
        if torrent is None:
            return None
        # handle.status() waits for libtorrent's network thread: not on the loop.
        self._record(await asyncio.to_thread(torrent.handle.status))
        return torrent.status

    async def next_event(self) -> SwarmEvent:
        return await self._events.get()

    # -- alerts --------------------------------------------------------------------

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        self._listen_tried = sampled = loop.time()
        while True:
            if self._session is not None:
                self._session.post_torrent_updates()
                now = loop.time()
                if self._listen_problem is not None and now - self._listen_tried >= _LISTEN_RETRY:
                    self._listen_tried = now
                    self._session.reopen_network_sockets(lt.session.reopen_map_ports)
                if now - sampled >= _SAMPLE_EVERY:
                    sampled = now
                    await self._sample_connections()
            # Fresh figures while something downloads: a fetch asks for resume data
            # by the bytes it has, and 0.5 s can be a quarter of a model on a LAN.
            downloading = any(t.downloading for t in self._torrents.values())
            await asyncio.sleep(0.1 if downloading else 0.5)

    async def _sample_connections(self, only: bytes | None = None) -> None:
        """Sample the connections of the torrents that have peers, or of ``only``
        (peer_info waits for libtorrent's network thread: not on the loop)."""
        if only is not None:
            busy = [(only, self._torrents[only].handle)] if only in self._torrents else []
        else:
            busy = [(k, t.handle) for k, t in self._torrents.items() if t.status and t.status.peers]
        if busy:
            found = await asyncio.to_thread(_connections, busy)
            self._peer_bytes.sample(found, (key for key, _ in busy))
        self._share_bytes(only)

    def _on_alerts(self) -> None:
        if self._alert_fds is not None:
            with contextlib.suppress(BlockingIOError):
                while self._alert_fds[0].recv(4096):
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
            if not is_tls:
                return
            if self._listen_problem is not None:
                log.info("swarm: listening on port %d now", alert.port)
            self._port, self._listen_problem = int(alert.port), None
            if self._listening is not None and not self._listening.done():
                self._listening.set_result(int(alert.port))
        elif kind == "listen_failed_alert":
            in_use = alert.error.value() == errno.EADDRINUSE
            if self._listen_problem is None:  # once, not at every retry
                retry = f"; trying again every {_LISTEN_RETRY:.0f} s" if in_use else ""
                log.error("swarm: %s%s", alert.message(), retry)
            self._listen_problem = (
                f"the swarm cannot listen on {self._settings.listen}: {alert.error.message()}"
            )
            self._port = 0
            if in_use and self._listening is not None and not self._listening.done():
                self._listening.set_result(0)  # not fatal: tried again (_tick)
            elif self._listening is not None and not self._listening.done():
                self._listening.set_exception(
                    LocalStateError(
                        f"the swarm cannot listen on {self._settings.listen}: {alert.message()}",
                        hint="choose another swarm_listen address or port",
                    )
                )
        elif kind == "add_torrent_alert":
            key = info_hash(alert.params.ti.info_hashes()) if alert.params.ti else b""
            future = self._pending.adds.get(key)
            if future is not None and not future.done():
                if alert.error.value():
                    future.set_exception(
                        LocalStateError(f"libtorrent refused the torrent: {alert.error.message()}")
                    )
                else:
                    future.set_result(alert.handle)
        elif kind == "torrent_removed_alert":
            key = info_hash(alert.info_hashes)
            future_removed = self._pending.removes.get(key)
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
            key = info_hash(alert.handle)
            waiting = self._pending.waiting_to_start.pop(key, None)
            if waiting is not None:
                waiting.resume()
                started = self._pending.started.get(key)
                if started is not None and not started.done():
                    started.set_result(None)
            elif key in self._pending.adds:
                self._pending.startable.add(key)
        elif kind == "peer_connect_alert":  # incoming or outgoing: its peer's class
            self._peer_bytes.connected(info_hash(alert.handle), str(alert.ip[0]))
        elif kind == "torrent_finished_alert":
            key = info_hash(alert.handle)
            torrent = self._torrents.get(key)
            if torrent is not None and torrent.downloading:
                self._events.put_nowait(Finished(key))
        elif kind == "save_resume_data_alert":
            self._resume_arrived(
                info_hash(alert.handle), bytes(lt.write_resume_data_buf(alert.params))
            )
        elif kind == "save_resume_data_failed_alert":
            self._resume_arrived(info_hash(alert.handle), None)
        elif kind == "hash_failed_alert":
            key = info_hash(alert.handle)
            log.warning(
                "swarm: piece %d of %s failed its hash check",
                alert.piece_index,
                key.hex()[:16],
            )
            self._events.put_nowait(HashFailed(key, int(alert.piece_index)))
        elif kind == "peer_ban_alert":
            key = info_hash(alert.handle)
            peer = f"{alert.endpoint[0]}:{alert.endpoint[1]}"
            log.warning(
                "swarm: banned peer %s on %s for sending corrupt data", peer, key.hex()[:16]
            )
            self._events.put_nowait(PeerBanned(key, peer, "sent data that failed hash checks"))
        elif kind in ("torrent_error_alert", "file_error_alert"):
            self._failed(alert)
        elif kind == "peer_error_alert" and alert.op == lt.operation_t.ssl_handshake:
            self._handshake_failed(alert)
        elif kind in ("peer_error_alert", "peer_disconnected_alert") and log.isEnabledFor(
            logging.DEBUG
        ):
            log.debug("swarm: %s", alert.message())

    def _handshake_failed(self, alert: Any) -> None:
        """A TLS handshake that failed. One a peer began (no torrent yet: libtorrent
        picks it by the name the peer asks for) is a refused peer: without a
        certificate of this network, asking for no swarm of ours, or not TLS."""
        if alert.handle.is_valid():  # one this node began: the peer refused us
            log.debug("swarm: %s", alert.message())
            return
        source = str(alert.endpoint[0]) if alert.endpoint else "?"
        self.rejections.record(SWARM, source, handshake_reason(alert.error.message()))

    def _failed(self, alert: Any) -> None:
        """A torrent's disk error: reported once (libtorrent posts one alert for each
        write that fails, hundreds on a full disk), the torrent stopped where it is."""
        key = info_hash(alert.handle)
        torrent = self._torrents.get(key)
        if torrent is None or torrent.failed:
            # Reported once already, or a torrent removed since (libtorrent still
            # finishes the writes it had queued, and reports each that fails).
            log.debug("swarm: %s", alert.message())
            return
        disk_full = alert.error.value() == errno.ENOSPC
        torrent.failed = True
        # On ENOSPC libtorrent stops downloading but keeps the torrent (upload mode);
        # the fetch decides what happens next.
        torrent.handle.pause()
        log.error("swarm: %s", alert.message())
        self._events.put_nowait(TorrentFailed(key, alert.message(), disk_full=disk_full))

    def _resume_arrived(self, key: bytes, data: bytes | None) -> None:
        """Resume data (None: libtorrent could not make it), for whoever asked first."""
        trees = self._pending.trees.get(key)
        if trees is not None and key not in self._pending.resume:
            if not trees.done():
                trees.set_result(data)
            return
        self._pending.resume.discard(key)
        if data is not None:
            self._events.put_nowait(ResumeSaved(key, data))

    def _record(self, status: Any) -> None:
        torrent = self._torrents.get(info_hash(status.info_hashes))
        if torrent is not None:
            torrent.status = transfer_status(status)


def _endpoints(peers: Iterable[PeerAddress]) -> list[PeerAddress]:
    """The peers libtorrent can be given: IP endpoints (names are resolved above)."""
    usable = []
    for peer in peers:
        if peer.is_ip:
            usable.append(peer)
        else:
            log.warning("not connecting to %s: the swarm takes IP addresses only", peer)
    return usable


def _loud(task: asyncio.Task[None]) -> None:
    """The status ticker must not die unnoticed: the daemon's figures would freeze."""
    if not task.cancelled() and task.exception() is not None:
        log.error("the swarm's status ticker crashed", exc_info=task.exception())
