"""The daemon's configuration: a TOML file, ``SOVNET_*`` variables and flags.

Precedence, highest first: command-line flags, environment variables, the
config file, defaults. Every value is checked here, once, and a bad one is
refused with the field and where it came from named, so ``sovnetd`` never
starts half-configured.

The file (all keys optional)::

    state_dir = "/var/lib/sovnet"        # SOVNET_STATE_DIR
    socket = "/run/sovnet/api.sock"      # SOVNET_SOCKET: the local API (mode 0600)
    swarm_listen = "0.0.0.0:6881"        # SOVNET_SWARM_LISTEN: BitTorrent over TLS
    control_listen = "0.0.0.0:6880"      # SOVNET_CONTROL_LISTEN: HTTPS between peers
    metrics_listen = "127.0.0.1:9680"    # SOVNET_METRICS_LISTEN: /metrics, /healthz, /readyz
                                         # over plain HTTP, or "off"; left out, that
                                         # address if it is free (a second node here
                                         # goes without), set, it must listen
    peers = ["192.0.2.7:6880"]           # SOVNET_PEERS (comma-separated): control addresses
    upload_rate_limit = 0                # SOVNET_UPLOAD_RATE_LIMIT: bytes/s, 0 = none
    download_rate_limit = 0              # SOVNET_DOWNLOAD_RATE_LIMIT
    local_upload_rate_limit = 0          # bytes/s to peers on local_networks, a budget of their
    local_download_rate_limit = 0        # own (left out: the same as upload/download_rate_limit)
    local_networks = ["10.0.0.0/8"]      # CIDRs whose peers are local; loopback always is
    max_store_bytes = "500GiB"           # SOVNET_MAX_STORE_BYTES: the store's quota, 0 = none
    min_disk_free = "20GiB"              # SOVNET_MIN_DISK_FREE: left free on its disk, 0 = none
                                         # (garbage collection removes unpinned models, least
                                         # recently used first, to keep both)
    stall_timeout = 120                  # SOVNET_STALL_TIMEOUT: s without progress -> fail
    peer_timeout = 10                    # SOVNET_PEER_TIMEOUT: s per control-plane request
    refresh_interval = 5                 # SOVNET_REFRESH_INTERVAL: s between peer rounds
    resume_interval = 5                  # SOVNET_RESUME_INTERVAL: s between resume saves
    check_interval = 60                  # SOVNET_CHECK_INTERVAL: s between checks of seeded files
    active_seeds = 1000                  # SOVNET_ACTIVE_SEEDS: seeded models in the swarm at
                                         # once (the rest join when a peer asks for one)
    metadata_interval = 600              # SOVNET_METADATA_INTERVAL: s between refreshes of the
                                         # pinned publishers' metadata (and renewals of this
                                         # node's own publishers' timestamps)
    # The control plane against slow or hostile clients (SOVNET_ + the name in capitals):
    control_handshake_timeout = 10       # s for a peer's TLS handshake
    control_header_timeout = 10          # s for a request's headers (and an idle connection)
    control_request_timeout = 30         # s for a request's body and its handling
    control_max_connections = 512        # connections to the control plane at once
    control_max_connections_per_peer = 64  # of them from one address
    rejection_log_interval = 60          # s: refused connections, one log line a source
    summary_interval = 300               # s: one log line of what was uploaded and downloaded
    log_level = "info"                   # SOVNET_LOG_LEVEL: debug, info, warning, error
    log_format = "text"                  # SOVNET_LOG_FORMAT: text, or json (a line an object)
    revoked = "refuse"                   # SOVNET_REVOKED: run/serve/export of a release its
                                         # publisher's advisories revoked: refuse, or allow
    # A mirror: the pinned publishers whose releases it fetches and seeds unasked
    # (SOVNET_FOLLOW: "acme,beta", every release of each), each optionally only some
    # models, or only what some channels point at:
    follow = ["acme", {publisher = "beta", models = ["beta/tiny"], channels = ["stable"]}]
    # (a table's versions = N: of each model only the N newest, by version number)

Pure: the caller passes the file's bytes, the environment and the home
directory; nothing here reads files or ``os.environ`` (store/configfile.py reads
the file, for sovnetd and for the settings the CLI applies itself, such as
``revoked``).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from pathlib import Path
from typing import Literal

from sovnet.core.address import PeerAddress
from sovnet.core.locations import expand_home
from sovnet.core.locations import state_dir as default_state_dir
from sovnet.core.manifest import CHANNEL_PATTERN, NAME_PATTERN, ORG_PATTERN
from sovnet.errors import ConfigError, InvalidInputError

CONFIG_NAME = "sovnetd.toml"
SOCKET_NAME = "sovnetd.sock"
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
DEFAULT_METRICS_LISTEN = PeerAddress("127.0.0.1", 9680)
MetricsListen = PeerAddress | Literal["off"] | None  # None: DEFAULT_METRICS_LISTEN if free
REVOKED_POLICIES = ("refuse", "allow")


@dataclass(frozen=True)
class DaemonConfig:
    state_dir: Path
    socket: Path
    swarm_listen: PeerAddress
    control_listen: PeerAddress
    metrics_listen: MetricsListen = None
    peers: tuple[PeerAddress, ...] = ()
    upload_rate_limit: int = 0
    # None: as upload/download_rate_limit (a budget of their own, of that size)
    local_upload_rate_limit: int | None = None
    local_download_rate_limit: int | None = None
    local_networks: tuple[str, ...] = ()
    max_store_bytes: int = 0
    min_disk_free: int = 0
    download_rate_limit: int = 0
    stall_timeout: float = 120.0
    peer_timeout: float = 10.0
    refresh_interval: float = 5.0
    resume_interval: float = 5.0
    check_interval: float = 60.0
    active_seeds: int = 1000
    metadata_interval: float = 600.0
    control_handshake_timeout: float = 10.0
    control_header_timeout: float = 10.0
    control_request_timeout: float = 30.0
    control_max_connections: int = 512
    control_max_connections_per_peer: int = 64
    rejection_log_interval: float = 60.0
    summary_interval: float = 300.0
    log_level: str = "info"
    log_format: str = "text"
    revoked: str = "refuse"
    follow: tuple[FollowRule, ...] = ()


@dataclass(frozen=True)
class FollowRule:
    """A publisher a mirror follows: every release, or those of ``models`` only, or
    only those ``channels`` point at (both: both)."""

    publisher: str
    models: tuple[str, ...] = ()  # ORG/MODEL names; empty: all
    channels: tuple[str, ...] = ()  # empty: every release, not only channels' ones
    versions: int = 0  # of each model, only the newest this many (version_order); 0: all

    def wants(self, name: str, channels: tuple[str, ...]) -> bool:
        """Whether a release of ``name``, which ``channels`` point at, is followed."""
        return (not self.models or name in self.models) and (
            not self.channels or bool(set(channels) & set(self.channels))
        )


def config_file(
    env: Mapping[str, str], home: Path, override: str | None = None
) -> tuple[Path, bool]:
    """Where the config file is, and whether it must exist (named explicitly)."""
    if override:
        return expand_home(override, home), True
    if env.get("SOVNET_CONFIG"):
        return expand_home(env["SOVNET_CONFIG"], home), True
    if env.get("CONFIGURATION_DIRECTORY"):
        return Path(env["CONFIGURATION_DIRECTORY"].split(":")[0]) / CONFIG_NAME, False
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    return base / "sovnet" / CONFIG_NAME, False


def default_socket(env: Mapping[str, str], home: Path, state: Path) -> Path:
    """The API socket: SOVNET_SOCKET, else beside the state (the CLI looks there too)."""
    if env.get("SOVNET_SOCKET"):
        return expand_home(env["SOVNET_SOCKET"], home)
    return state / SOCKET_NAME


# -- field parsers: each takes a TOML value or an environment string ---------------


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _path(value: object) -> Path:
    return Path(_text(value))  # a leading ~ is expanded by load(), which knows home


def _listen(value: object) -> PeerAddress:
    try:
        return PeerAddress.parse(_text(value), allow_zero_port=True)
    except InvalidInputError as exc:
        raise ValueError(exc.message) from exc


def _metrics_listen(value: object) -> PeerAddress | Literal["off"]:
    if isinstance(value, str) and value.strip().lower() == "off":
        return "off"
    return _listen(value)


def _peers(value: object) -> tuple[PeerAddress, ...]:
    items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("expected a list of HOST:PORT")
    try:
        return tuple(dict.fromkeys(PeerAddress.parse(_text(v)) for v in items))
    except InvalidInputError as exc:
        raise ValueError(exc.message) from exc


def _rate(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError("expected bytes per second, a whole number >= 0 (0 = no limit)")
    return value


_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip


def _networks(value: object) -> tuple[str, ...]:
    import ipaddress

    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        raise ValueError('expected a list of networks ("192.168.0.0/16", "fd00::/8")')
    try:
        return tuple(str(ipaddress.ip_network(v, strict=False)) for v in items)
    except ValueError as exc:
        raise ValueError(f"not a network: {exc}") from None


def parse_size(value: object) -> int:
    """A size: a whole number of bytes, or text like "500GiB", "1.5TB" (rounded down
    to a byte)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = (
        re.fullmatch(r"\s*([0-9]{1,20}(?:\.[0-9]{1,12})?)\s*([A-Za-z]*)\s*", value)
        if isinstance(value, str)
        else None
    )
    unit = _UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None or (unit == 1 and "." in match.group(1)):
        raise ValueError('expected a size: whole bytes, or a number and a unit ("500GiB", "1.5TB")')
    return int(Decimal(match.group(1)) * unit)


def _seconds(value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError("expected a number of seconds") from None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 86400:
        raise ValueError("expected a number of seconds above 0 (at most 86400)")
    return float(value)


def _count(value: object) -> int:
    try:
        count = _rate(value)  # a whole number >= 0, from TOML or a string
    except ValueError:
        count = 0
    if not 0 < count <= 1_000_000:
        raise ValueError("expected a whole number from 1 to 1000000")
    return count


def _level(value: object) -> str:
    text = _text(value).lower()
    if text not in LOG_LEVELS:
        raise ValueError("expected one of " + ", ".join(LOG_LEVELS))
    return text


def _log_format(value: object) -> str:
    text = _text(value).lower()
    if text not in LOG_FORMATS:
        raise ValueError("expected one of " + ", ".join(LOG_FORMATS))
    return text


def _follow(value: object) -> tuple[FollowRule, ...]:
    items = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError(
            "expected a list of publishers (or tables of publisher, models, channels, versions)"
        )
    rules: dict[str, FollowRule] = {}
    for item in items:
        table = {"publisher": item} if isinstance(item, str) else item
        if not isinstance(table, dict) or set(table) - {
            "publisher",
            "models",
            "channels",
            "versions",
        }:
            raise ValueError(
                "each is a publisher name, or a table of publisher, models, channels, versions"
            )
        publisher = table.get("publisher")
        if not isinstance(publisher, str) or not ORG_PATTERN.fullmatch(publisher):
            raise ValueError(f"{publisher!r} is not a publisher name")
        models = _names(table.get("models", []), NAME_PATTERN, "models")
        if any(m.split("/")[0] != publisher for m in models):
            raise ValueError(f"models of {publisher} are named {publisher}/MODEL")
        channels = _names(table.get("channels", []), CHANNEL_PATTERN, "channels")
        versions = _count(table["versions"]) if "versions" in table else 0
        if publisher in rules:  # which one was meant is not for sovnet to guess
            raise ValueError(f"{publisher} is followed twice: one entry each")
        rules[publisher] = FollowRule(publisher, models, channels, versions)
    return tuple(rules.values())


def _names(value: object, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(v, str) and pattern.fullmatch(v) for v in value
    ):
        raise ValueError(f"{what}: expected a list of names")
    return tuple(dict.fromkeys(value))


def _revoked(value: object) -> str:
    text = _text(value).lower()
    if text not in REVOKED_POLICIES:
        raise ValueError("expected one of " + ", ".join(REVOKED_POLICIES))
    return text


_PARSERS: dict[str, Callable[[object], object]] = {
    "state_dir": _path,
    "socket": _path,
    "swarm_listen": _listen,
    "control_listen": _listen,
    "metrics_listen": _metrics_listen,
    "peers": _peers,
    "upload_rate_limit": _rate,
    "download_rate_limit": _rate,
    "local_upload_rate_limit": _rate,
    "local_download_rate_limit": _rate,
    "local_networks": _networks,
    "max_store_bytes": parse_size,
    "min_disk_free": parse_size,
    "stall_timeout": _seconds,
    "peer_timeout": _seconds,
    "refresh_interval": _seconds,
    "resume_interval": _seconds,
    "check_interval": _seconds,
    "active_seeds": _count,
    "metadata_interval": _seconds,
    "control_handshake_timeout": _seconds,
    "control_header_timeout": _seconds,
    "control_request_timeout": _seconds,
    "control_max_connections": _count,
    "control_max_connections_per_peer": _count,
    "rejection_log_interval": _seconds,
    "summary_interval": _seconds,
    "log_level": _level,
    "log_format": _log_format,
    "revoked": _revoked,
    "follow": _follow,
}
assert set(_PARSERS) == {f.name for f in fields(DaemonConfig)}

_DEFAULT_LISTEN = {"swarm_listen": "0.0.0.0:6881", "control_listen": "0.0.0.0:6880"}


def env_name(field: str) -> str:
    return "SOVNET_" + field.upper()


def load(
    toml_data: bytes | None,
    env: Mapping[str, str],
    home: Path,
    overrides: Mapping[str, object] | None = None,
    *,
    source: str = CONFIG_NAME,
    only: Collection[str] | None = None,
) -> DaemonConfig:
    """The configuration from a file's bytes (or none), the environment and flags;
    with ``only``, just those settings are read (and checked), the rest default: the
    CLI applies one setting of sovnetd's, and a bad other one is sovnetd's to say."""
    layers: list[tuple[str, Mapping[str, object]]] = []
    if toml_data is not None:
        try:
            table = tomllib.loads(toml_data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{source} is not valid TOML: {exc}") from exc
        if only is not None:
            table = {k: v for k, v in table.items() if k in only}
        unknown = sorted(set(table) - set(_PARSERS))
        if unknown:
            raise ConfigError(
                f"{source}: unknown setting {unknown[0]!r}",
                hint="settings: " + ", ".join(sorted(_PARSERS)),
            )
        layers.append((source, table))
    wanted = [k for k in _PARSERS if only is None or k in only]
    layers.append(("the environment", {k: env[env_name(k)] for k in wanted if env_name(k) in env}))
    if overrides:
        layers.append(("the command line", {k: v for k, v in overrides.items() if v is not None}))

    values: dict[str, object] = {}
    for where, layer in layers:
        for key, raw in layer.items():
            shown = env_name(key) if where == "the environment" else key
            try:
                values[key] = _PARSERS[key](raw)
            except ValueError as exc:
                raise ConfigError(
                    f"setting {shown!r} from {where}: {exc} (got {raw!r})",
                    hint="fix it and start sovnetd again",
                ) from None
    for key in ("state_dir", "socket"):
        if isinstance(values.get(key), Path):
            values[key] = expand_home(values[key], home)  # type: ignore[arg-type]
    state = values.get("state_dir")
    if not isinstance(state, Path):
        state = default_state_dir(env, home)
        values["state_dir"] = state
    if "socket" not in values:
        runtime = env.get("RUNTIME_DIRECTORY")
        values["socket"] = (
            Path(runtime.split(":")[0]) / "api.sock"
            if runtime
            else default_socket(env, home, state)
        )
    for key, default in _DEFAULT_LISTEN.items():
        values.setdefault(key, _listen(default))
    return DaemonConfig(**values)  # type: ignore[arg-type]
