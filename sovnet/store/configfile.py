"""The configuration file, read: core/config.py says where it is and what it means."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from sovnet.core.config import DaemonConfig, config_file, load
from sovnet.errors import ConfigError


def read_config(
    env: Mapping[str, str],
    home: Path,
    override: str | None = None,
    overrides: Mapping[str, object] | None = None,
    *,
    only: Collection[str] | None = None,
) -> DaemonConfig:
    """The configuration from the config file (one named explicitly must exist), the
    environment and ``overrides`` (flags); ``only`` those settings, if given."""
    path, required = config_file(env, home, override)
    try:
        data: bytes | None = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"the config file {path} does not exist") from None
        data = None
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror}") from exc
    return load(data, env, home, overrides, source=str(path), only=only)
