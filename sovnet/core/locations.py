"""Where a node keeps its state, decided from the environment it is given.

Precedence: an explicit ``--state-dir``, then ``SOVNET_STATE_DIR``, then systemd's
``STATE_DIRECTORY`` (first entry), then ``$XDG_DATA_HOME/sovnet``, then
``~/.local/share/sovnet``. Pure: the caller passes the environment and home
directory; nothing here reads ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def expand_home(path: str | Path, home: Path) -> Path:
    """``path`` with a leading ``~`` or ``~/`` standing for ``home`` (as a shell would;
    ``~user`` is left as written: that needs the password database)."""
    text = str(path)
    if text == "~":
        return home
    if text.startswith("~/"):
        return home / text[2:]
    return Path(text)


def state_dir(env: Mapping[str, str], home: Path, override: str | None = None) -> Path:
    if override:
        return expand_home(override, home)
    if env.get("SOVNET_STATE_DIR"):
        return expand_home(env["SOVNET_STATE_DIR"], home)
    if env.get("STATE_DIRECTORY"):
        # systemd passes several directories separated by colons when asked to.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    xdg = env.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "sovnet"
    return home / ".local" / "share" / "sovnet"
