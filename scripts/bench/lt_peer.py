"""One bare libtorrent peer, for the fetch benchmark's floor: libtorrent alone, with
sovnet's session settings and none of sovnet's code around it.

    lt_peer.py seed TORRENT DIR PORT_FILE [CERT KEY DH]
        seed the files of TORRENT found in DIR; write the listen port to PORT_FILE;
        run until SIGTERM.
    lt_peer.py get TORRENT DIR HOST:PORT [CERT KEY DH]
        download TORRENT into DIR from that one peer; print {"seconds", "bytes"}:
        from adding the torrent until every piece is checked and on disk (a bounded
        wait; exit 1 if it does not finish).

With CERT KEY DH (PEM files), the torrent must be an SSL torrent and the session
listens with SSL, as sovnetd does; without, plain TCP.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import libtorrent as lt

from sovnet.core.address import PeerAddress
from sovnet.net.libtorrent.settings import session_settings
from sovnet.net.swarm import SwarmSettings

DEADLINE = 300.0


def session(ssl: bool) -> Any:
    settings = session_settings(SwarmSettings(listen=PeerAddress("127.0.0.1", 0)))
    settings["listen_interfaces"] = "127.0.0.1:0s" if ssl else "127.0.0.1:0"
    return lt.session(settings)


def add(ses: Any, torrent: Path, directory: Path, tls: list[str]) -> Any:
    params = lt.add_torrent_params()
    params.ti = lt.torrent_info(str(torrent))
    params.save_path = str(directory)
    layout = params.ti.layout()
    # The file where sovnet keeps it: by its own name in DIR, not under the CID.
    params.renamed_files = {
        i: str(directory / Path(layout.file_path(i)).name)
        for i in range(layout.num_files())
        if not layout.file_flags(i) & lt.file_storage.flag_pad_file
    }
    handle = ses.add_torrent(params)
    if tls:
        cert, key, dh = (Path(p).read_text() for p in tls)
        handle.set_ssl_certificate_buffer(cert, key, dh)
    return handle


def wait(handle: Any, done: Any, what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not done(handle.status()):
        if time.monotonic() > deadline:
            sys.exit(f"lt_peer: {what} did not happen within {DEADLINE:.0f} s")
        time.sleep(0.01)


def seed(torrent: Path, directory: Path, port_file: Path, tls: list[str]) -> None:
    ses = session(bool(tls))
    handle = add(ses, torrent, directory, tls)
    wait(handle, lambda s: s.is_seeding, "checking the files")
    port = ses.ssl_listen_port() if tls else ses.listen_port()
    port_file.write_text(str(port))
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


def get(torrent: Path, directory: Path, peer: str, tls: list[str]) -> None:
    ses = session(bool(tls))
    host, _, port = peer.rpartition(":")
    start = time.perf_counter()
    handle = add(ses, torrent, directory, tls)
    handle.connect_peer((host, int(port)))
    wait(handle, lambda s: s.is_seeding, "the download")
    seconds = time.perf_counter() - start
    received = handle.status().total_payload_download
    ses.remove_torrent(handle)
    print(json.dumps({"seconds": seconds, "bytes": received}))


def main() -> None:
    role, torrent, directory, where, *tls = sys.argv[1:]
    if role == "seed":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        seed(Path(torrent), Path(directory), Path(where), tls)
    else:
        get(Path(torrent), Path(directory), where, tls)


if __name__ == "__main__":
    main()
