"""Where a node keeps its state, decided from the environment it is given.

Precedence: an explicit ``--state-dir``, then ``SOVNET_STATE_DIR``, then systemd's
``STATE_DIRECTORY`` (first entry), then ``$XDG_DATA_HOME/sovnet``, then
``~/.local/share/sovnet``. Pure: the caller passes the environment and home
directory; nothing here reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def state_dir(env: Mapping[str, str], home: Path, override: str | None = None) -> Path:
    if override:
        return Path(override).expanduser()
    if env.get("SOVNET_STATE_DIR"):
        return Path(env["SOVNET_STATE_DIR"]).expanduser()
    if env.get("STATE_DIRECTORY"):
        # systemd passes several directories separated by colons when asked to.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    xdg = env.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "sovnet"
    return home / ".local" / "share" / "sovnet"
