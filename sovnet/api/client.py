"""The typed client of sovnetd's local API (server.py), for the CLI.

Synchronous and built on the standard library's http.client over a Unix
socket: the CLI is a short-lived process, and importing aiohttp would cost it
more than a whole status request takes.

Answers come back as the messages of messages.py, checked as they are parsed;
errors the daemon reports come back as the same SovnetError classes they were
raised as (errors.error_from_json). A daemon that is not running is a
DaemonError that says how to start it.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sovnet.api.messages import (
    JSON,
    STREAM_EVENTS,
    FetchEvent,
    FetchResult,
    GcResult,
    KnownPeer,
    Limits,
    MirrorStatus,
    NodeStatus,
    PeerRemoved,
    PublishEvent,
    PublishRequest,
    PublishResult,
    Releases,
    RemoveResult,
    SeedingStats,
    from_json,
    to_json,
)
from sovnet.errors import DaemonError, error_from_json

R = TypeVar("R")

START_HINT = (
    "start it with `sovnetd` (or `systemctl start sovnetd`); with another state "
    "directory, pass the same --state-dir (or SOVNET_SOCKET) to both"
)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self._path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, socket_path: Path, timeout: float = 30.0) -> None:
        self.socket_path = socket_path
        self.timeout = timeout

    def running(self) -> bool:
        """Whether a daemon answers on the socket (a cheap connect, no request)."""
        if not self.socket_path.exists():
            return False
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)
        try:
            probe.connect(str(self.socket_path))
        except OSError:
            return False
        finally:
            probe.close()
        return True

    def _send(
        self, method: str, path: str, body: dict[str, JSON] | None, timeout: float | None
    ) -> http.client.HTTPResponse:
        connection = _UnixConnection(self.socket_path, timeout)
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        try:
            connection.request(method, path, body=payload, headers=headers)
            return connection.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            raise DaemonError(
                f"sovnetd is not running (no daemon at {self.socket_path})", hint=START_HINT
            ) from None
        except PermissionError:
            raise DaemonError(
                f"no permission to talk to sovnetd at {self.socket_path}",
                hint="run the command as the user sovnetd runs as",
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(f"cannot talk to sovnetd at {self.socket_path}: {exc}") from exc

    def _call(self, method: str, path: str, body: dict[str, JSON] | None = None) -> JSON:
        response = self._send(method, path, body, self.timeout)
        try:
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonError(f"sovnetd stopped answering: {exc}") from exc
        try:
            value = json.loads(data)
        except ValueError:
            raise DaemonError(f"sovnetd sent something that is not JSON: {data[:200]!r}") from None
        if response.status != 200:
            raise error_from_json(value.get("error") if isinstance(value, dict) else value)
        return value

    def _stream(self, path: str, body: dict[str, JSON], result: type[R]) -> Iterator[Any]:
        """The events of a streamed call, each as the message its "event" names; the
        last is the result (an error is raised)."""
        response = self._send("POST", path, body, None)  # a fetch may take hours
        if response.status != 200:
            try:
                value = json.loads(response.read())
            except ValueError:
                value = None
            raise error_from_json(value.get("error") if isinstance(value, dict) else value)
        while True:
            try:
                line = response.readline()
            except (OSError, http.client.HTTPException) as exc:
                raise DaemonError(f"sovnetd stopped answering: {exc}") from exc
            if not line:
                raise DaemonError(
                    "sovnetd stopped before it finished (it may have been stopped or crashed)",
                    hint="a fetch continues when sovnetd starts again; run the command again "
                    "to follow it",
                )
            try:
                event = json.loads(line)
                kind = str(event.pop("event"))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise DaemonError(f"sovnetd sent a malformed event: {line[:200]!r}") from None
            if kind == "error":
                raise error_from_json(event.get("error"))
            if kind == "result":
                yield from_json(result, event)
                return
            if kind in STREAM_EVENTS:  # an event of a kind this client does not know is skipped
                yield from_json(STREAM_EVENTS[kind], event)

    # -- the API -------------------------------------------------------------------

    def status(self) -> NodeStatus:
        return from_json(NodeStatus, self._call("GET", "/v1/status"))

    def seeding(self) -> dict[str, SeedingStats]:
        value = self._call("GET", "/v1/models")
        seeding = value.get("seeding") if isinstance(value, dict) else None
        return from_json(dict[str, SeedingStats], seeding)

    def publish(self, request: PublishRequest) -> Iterator[PublishEvent | PublishResult]:
        return self._stream("/v1/models", to_json(request), PublishResult)

    def fetch(self, cid: str, peers: list[str]) -> Iterator[FetchEvent | FetchResult]:
        return self._stream("/v1/fetch", {"cid": cid, "peers": peers}, FetchResult)

    def remove(self, cid: str) -> RemoveResult:
        return from_json(RemoveResult, self._call("DELETE", f"/v1/models/{quote(cid, safe='')}"))

    def releases(self) -> Releases:
        return from_json(Releases, self._call("GET", "/v1/releases"))

    def gc(self, dry_run: bool) -> GcResult:
        return from_json(GcResult, self._call("POST", "/v1/gc", {"dry_run": dry_run}))

    def limits(self) -> Limits:
        return from_json(Limits, self._call("GET", "/v1/limits"))

    def set_limits(self, changes: dict[str, JSON]) -> Limits:
        return from_json(Limits, self._call("POST", "/v1/limits", changes))

    def mirror_status(self) -> MirrorStatus:
        return from_json(MirrorStatus, self._call("GET", "/v1/mirror"))

    def peers(self) -> list[KnownPeer]:
        value = self._call("GET", "/v1/peers")
        listed = value.get("peers") if isinstance(value, dict) else None
        return list(from_json(tuple[KnownPeer, ...], listed))

    def add_peer(self, address: str) -> KnownPeer:
        return from_json(KnownPeer, self._call("POST", "/v1/peers", {"address": address}))

    def remove_peer(self, address: str) -> PeerRemoved:
        return from_json(PeerRemoved, self._call("DELETE", f"/v1/peers/{quote(address, safe='')}"))
