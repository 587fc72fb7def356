"""The messages between sovnetd and its clients: typed values, and their JSON.

The daemon builds these (daemon/), the API serialises them (server.py), the
client parses them back (client.py) and the CLI shows them; metrics will read the
same values. Each is a frozen dataclass whose JSON object has exactly its fields
(a field that is None and marked optional is left out); :func:`from_json` checks a
JSON value against the class's fields and their types, so a malformed reply is a
DaemonError at the boundary, never a KeyError in the CLI.

Streamed answers (fetch, publish) are events, one JSON object a line with an
``"event"`` field naming the kind (the ``EVENT`` of its class), then one
``"result"`` (or ``"error"``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from sovnet.errors import DaemonError

JSON = Any  # a value json.loads returns: the one place messages are untyped


def _optional(default: object = None) -> Any:
    """A field left out of the JSON when it is None."""
    return field(default=default, metadata={"optional": True})


# -- fetch --------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    key_id: str
    trusted_as: str | None


@dataclass(frozen=True)
class ManifestAccepted:
    """A fetch accepted the manifest (trusted, hashing to the CID); the download starts."""

    EVENT: ClassVar[str] = "manifest"
    cid: str
    name: str
    version: str | None
    size: int
    files: int
    signers: tuple[Signer, ...]
    # A pinned publisher root's release vouches for it (its signers may be nobody here).
    released_as: str | None = _optional()


@dataclass(frozen=True)
class FetchProgress:
    EVENT: ClassVar[str] = "progress"
    done: int
    total: int
    rate: int  # bytes/s over the last seconds
    eta: float | None  # seconds; None: no rate yet
    peers: int
    hash_failures: int


@dataclass(frozen=True)
class FetchVerifying:
    """Every byte is here: the files are being re-hashed against the signed manifest."""

    EVENT: ClassVar[str] = "verifying"
    files: int  # downloaded files to check
    size: int  # their bytes


@dataclass(frozen=True)
class FetchResult:
    cid: str
    name: str
    version: str | None
    size: int
    files: int
    already_here: bool
    downloaded: int  # payload bytes that came from the swarm
    path: str  # the model view
    repaired: int  # files of the view put back from the store (missing, replaced, linked)


@dataclass(frozen=True)
class RecentFetch(FetchResult):
    """A fetch that ended in this daemon's life, with how long it took."""

    seconds: float


# -- publish ------------------------------------------------------------------------


@dataclass(frozen=True)
class PublishRequest:
    path: str
    name: str
    version: str | None = None
    license: str | None = None
    copy: bool = False
    include: tuple[str, ...] = ()  # hf upload's globs (store/scan.py, ScanOptions)
    exclude: tuple[str, ...] = ()
    follow_links_within: tuple[str, ...] = ()  # absolute directories


@dataclass(frozen=True)
class PublishScanned:
    EVENT: ClassVar[str] = "scanned"
    total: int  # bytes to hash


@dataclass(frozen=True)
class PublishHashed:
    EVENT: ClassVar[str] = "hashed"
    bytes: int  # hashed so far


@dataclass(frozen=True)
class PublishResult:
    """What `sovnet publish --json` reports (store/publish.py's summary)."""

    cid: str
    name: str
    version: str | None
    size: int
    files: int
    signer: str  # key id
    linked: int  # files hard-linked into the store
    copied: int


# What a streamed call sends before its result, by call.
FetchEvent = ManifestAccepted | FetchProgress | FetchVerifying
PublishEvent = PublishScanned | PublishHashed
STREAM_EVENTS: dict[str, type[FetchEvent | PublishEvent]] = {
    cls.EVENT: cls
    for cls in (ManifestAccepted, FetchProgress, FetchVerifying, PublishScanned, PublishHashed)
}


# -- the rest of the API --------------------------------------------------------------


@dataclass(frozen=True)
class RemoveResult:
    removed: str
    freed_bytes: int  # the disk blocks that came back (what `df` sees)
    blobs_removed: int
    held_bytes: int = 0  # bytes of removed blobs other links (an HF export) keep


@dataclass(frozen=True)
class FetchUnderWay:
    cid: str
    state: str  # "finding peers", "downloading"
    done: int | None = _optional()
    total: int | None = _optional()
    rate: int | None = _optional()
    resumable: int | None = _optional()  # bytes the last resume file covers
    hash_failures: int | None = _optional()
    swarm_peers: int | None = _optional()
    session_downloaded: int | None = _optional()


@dataclass(frozen=True)
class Ban:
    peer: str
    cid: str
    reason: str


@dataclass(frozen=True)
class NodeStatus:
    node: str
    node_id: str
    network: str
    network_id: str
    version: str
    pid: int
    uptime: float
    state_dir: str
    swarm_port: int
    control_port: int
    seeding: int
    uploaded: int
    upload_rate: int
    download_rate: int
    peers: int
    fetches: tuple[FetchUnderWay, ...]
    recent_fetches: tuple[RecentFetch, ...]
    hash_failures: int
    banned_peers: tuple[Ban, ...]
    damaged: Mapping[str, str]  # CID: why it is not seeded
    rejected: tuple[Rejected, ...] = ()  # connections refused, by listener and reason
    # The host the control plane listens on (0.0.0.0: all; 127.0.0.1: this machine only):
    # `network invite` names an address peers can reach. "" from an older sovnetd.
    control_host: str = ""
    # Publishers caught saying two things (equivocation), newest last, each once a refresh.
    publisher_alerts: tuple[str, ...] = ()
    swarm_problem: str | None = _optional()  # why the swarm does not listen now
    metrics: str | None = _optional()  # HOST:PORT of /metrics, /healthz, /readyz
    # Seeded models whose torrent is in the swarm now (the others join when asked).
    in_swarm: int | None = _optional()


@dataclass(frozen=True)
class Rejected:
    """Connections a listener refused for one reason (a TLS handshake without a
    member certificate, a request too slow, ...), since the daemon started."""

    plane: str  # "control" (the control plane) or "swarm"
    reason: str
    count: int
    last_from: str  # the address of the latest


@dataclass(frozen=True)
class SeedingStats:
    uploaded: int
    peers: int


@dataclass(frozen=True)
class RemoteRelease:
    """A release of a pinned publisher root, as `sovnet ls --remote` lists it."""

    name: str  # ORG/MODEL
    version: str
    cid: str
    channels: tuple[str, ...]
    here: bool  # in this node's store
    holders: tuple[str, ...]  # peers (control addresses) that hold it complete
    # What its publisher's advisories say of it: revoked, deprecated, superseded.
    advisory: str | None = _optional()
    advisory_text: str | None = _optional()  # the whole advisory, for a person


@dataclass(frozen=True)
class Releases:
    releases: tuple[RemoteRelease, ...]
    problems: tuple[str, ...]  # a publisher that could not be refreshed, and why


@dataclass(frozen=True)
class Limits:
    """The swarm's rate limits in force, bytes/s (0: none): to and from peers on the
    local networks, and everyone else."""

    upload: int
    download: int
    local_upload: int
    local_download: int
    local_networks: tuple[str, ...] = ()
    persisted: bool = False  # set by `sovnet limits set`, kept over sovnetd.toml's


@dataclass(frozen=True)
class GcVictim:
    cid: str
    name: str
    frees: int  # bytes its removal gives back, as planned
    last_used: float  # Unix time


@dataclass(frozen=True)
class GcResult:
    """What garbage collection removed (or would, with --dry-run) to keep the store
    within its budget."""

    planned: tuple[GcVictim, ...]
    removed: tuple[RemoveResult, ...]
    freed_bytes: int  # the disk blocks that came back (what `df` sees)
    store_bytes: int  # before
    max_store_bytes: int  # 0: no quota
    min_disk_free: int  # 0: none
    enough: bool
    problem: str | None = _optional()


@dataclass(frozen=True)
class FollowedPublisher:
    """A publisher a mirror follows, as `sovnet mirror status` shows it."""

    publisher: str
    models: tuple[str, ...]  # followed models (empty: all)
    channels: tuple[str, ...]  # only what these channels point at (empty: every release)
    releases_version: int | None  # of the releases metadata trusted here (None: none yet)
    refreshed: str | None  # when its metadata was last refreshed successfully (ISO 8601, UTC)
    problem: str | None  # why the last refresh failed: what is held stays held
    wanted: int  # releases followed, in the newest metadata trusted
    held: int  # of them here
    fetching: int
    missing: int  # wanted and not here: how far behind the newest it has seen
    failed: tuple[str, ...] = ()  # fetches that failed last round, "CID: why"
    stale: bool = False  # the last refresh failed: nothing new is fetched until one works
    versions: int = 0  # of each model only the newest this many (0: all)


@dataclass(frozen=True)
class MirrorStatus:
    followed: tuple[FollowedPublisher, ...]


@dataclass(frozen=True)
class KnownPeer:
    address: str
    source: str  # "added", "config", "learned"
    name: str | None = None
    # "verified" (answered), "unverified" (not asked yet), "failing" (not answering)
    state: str | None = _optional()


@dataclass(frozen=True)
class PeerRemoved:
    removed: str


# -- JSON -----------------------------------------------------------------------------

M = TypeVar("M")


def to_json(message: object) -> dict[str, JSON]:
    """The JSON object of a message (nested messages included)."""
    if not dataclasses.is_dataclass(message) or isinstance(message, type):
        raise TypeError(f"not a message: {message!r}")
    out: dict[str, JSON] = {}
    for item in dataclasses.fields(message):
        value = getattr(message, item.name)
        if value is None and item.metadata.get("optional"):
            continue
        out[item.name] = _value_to_json(value)
    return out


def event_json(message: object) -> dict[str, JSON]:
    """A streamed event: its JSON object with the ``"event"`` field of its class."""
    return {"event": type(message).EVENT, **to_json(message)}  # type: ignore[attr-defined]


def _value_to_json(value: object) -> JSON:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_json(value)
    if isinstance(value, tuple | list):
        return [_value_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _value_to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[M], value: JSON) -> M:
    """``value`` as a ``cls`` from sovnetd; DaemonError naming what does not fit."""
    try:
        return parse(cls, value)
    except MalformedMessage as exc:
        raise DaemonError(f"sovnetd sent a malformed {cls.__name__}: {exc}") from None


class MalformedMessage(ValueError):
    """A JSON value that is not the message it should be; says where it differs."""


def parse(cls: type[M], value: JSON) -> M:
    """``value`` as a ``cls``; MalformedMessage naming what does not fit (the caller
    says who sent it: from_json for sovnetd's answers, the server for requests)."""
    parsed: M = _parse(cls, value, cls.__name__)
    return parsed


def _parse(kind: Any, value: JSON, where: str) -> Any:
    origin = typing.get_origin(kind)
    if kind is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(kind):
            try:
                return _parse(option, value, where)
            except MalformedMessage:
                continue
        raise MalformedMessage(f"{where} is {value!r:.60}")
    if kind is type(None):
        if value is not None:
            raise MalformedMessage(f"{where} is not null")
        return None
    if origin is tuple:
        (item,) = typing.get_args(kind)[:1]
        if not isinstance(value, list):
            raise MalformedMessage(f"{where} is not a list")
        return tuple(_parse(item, v, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or kind in (dict, Mapping):
        _, item = typing.get_args(kind) or (str, Any)
        if not isinstance(value, dict):
            raise MalformedMessage(f"{where} is not an object")
        return {str(k): _parse(item, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise MalformedMessage(f"{where} is not an object")
        hints = typing.get_type_hints(kind)
        given = {}
        for item in dataclasses.fields(kind):
            if item.name in value:
                given[item.name] = _parse(hints[item.name], value[item.name], item.name)
            elif item.default is dataclasses.MISSING:
                raise MalformedMessage(f"{where} has no {item.name}")
        return typing.cast(Any, kind)(**given)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MalformedMessage(f"{where} is not a number")
        return float(value)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise MalformedMessage(f"{where} is not an integer")
    if kind in (str, bool) and not isinstance(value, kind):
        raise MalformedMessage(f"{where} is not a {kind.__name__}")
    return value
