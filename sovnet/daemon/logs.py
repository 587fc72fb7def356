"""sovnetd's log lines: for a person (text), for a log shipper (JSON, one object a
line), and for systemd's journal (its priority prefixes, so `journalctl -p warning`
finds sovnet's warnings; journald stamps the time itself).

Whether stderr is the journal is what systemd says in ``JOURNAL_STREAM``
(device:inode of the stream it connected), checked against stderr itself, as
sd_journal_stream_fd's documentation asks: a child that inherited the variable but
writes elsewhere is not the journal.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from collections.abc import Mapping
from typing import TextIO

# sd-daemon(3): <3> error, <4> warning, <6> info, <7> debug.
_JOURNAL_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def stderr_is_journal(env: Mapping[str, str], stream: TextIO = sys.stderr) -> bool:
    device, _, inode = env.get("JOURNAL_STREAM", "").partition(":")
    try:
        found = os.fstat(stream.fileno())
        return (found.st_dev, found.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and the
    exception's traceback if there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class JournalFormatter(logging.Formatter):
    """Text with sd-daemon priority prefixes, on every line of a multi-line message
    (journald reads each line as an entry)."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _JOURNAL_PRIORITY.get(record.levelno, 6)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def configure(log_format: str, *, journal: bool) -> None:
    """Log to stderr in ``log_format`` (JSON wins over the journal's text: a shipper
    reading the journal asked for JSON)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif journal:
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
