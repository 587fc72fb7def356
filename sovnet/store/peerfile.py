"""``<state>/peers.json``: the peers added with `sovnet peers add`, across restarts.

Canonical JSON ``{"peers": ["HOST:PORT", ...], "sovnet_peers": 1}``. While sovnetd
runs, it owns the file (net/peerbook.py); without a daemon, the CLI writes it.
"""

from __future__ import annotations

from pathlib import Path

from sovnet.core import canonjson
from sovnet.core.address import PeerAddress
from sovnet.errors import InvalidInputError, LocalStateError, SovnetError
from sovnet.store.atomicfile import write_atomic

PEERS_FILE_VERSION = 1
MAX_PEERS_FILE_BYTES = 1024 * 1024


def read_added(path: Path) -> list[PeerAddress]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise LocalStateError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        value = canonjson.loads(data, max_size=MAX_PEERS_FILE_BYTES)
        if not isinstance(value, dict) or value.get("sovnet_peers") != PEERS_FILE_VERSION:
            raise InvalidInputError("expected sovnet_peers 1")
        items = value.get("peers")
        if not isinstance(items, list):
            raise InvalidInputError("expected a list of peers")
        return [PeerAddress.parse(str(item)) for item in items]
    except SovnetError as exc:
        raise LocalStateError(
            f"{path} is damaged: {exc.message}",
            hint="fix or remove it, then add peers again with `sovnet peers add`",
        ) from exc


def write_added(path: Path, peers: list[PeerAddress]) -> None:
    data = canonjson.dumps(
        {"peers": [str(p) for p in sorted(set(peers))], "sovnet_peers": PEERS_FILE_VERSION}
    )
    write_atomic(path, data, mode=0o600)
