"""sovnetd's log formats: JSON a line for shippers, priority prefixes for journald."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from sovnet.daemon.logs import JournalFormatter, JsonFormatter, stderr_is_journal


def _record(level: int, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("sovnet.daemon.fetcher", level, __file__, 1, message, args, None)


def test_json_is_one_object_a_line_even_for_a_message_of_several_lines() -> None:
    line = JsonFormatter().format(_record(logging.WARNING, "fetch %s failed:\n%s", "bafk", "why"))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "warning" and parsed["logger"] == "sovnet.daemon.fetcher"
    assert parsed["message"] == "fetch bafk failed:\nwhy"
    assert parsed["time"].endswith("+00:00")


def test_json_carries_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record(logging.ERROR, "failed")
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


def test_the_journal_gets_a_priority_on_every_line() -> None:
    formatter = JournalFormatter()
    assert formatter.format(_record(logging.ERROR, "disk full")).startswith("<3>ERROR ")
    assert formatter.format(_record(logging.INFO, "ready")).startswith("<6>INFO ")
    two = formatter.format(_record(logging.WARNING, "one\ntwo")).splitlines()
    assert [line[:3] for line in two] == ["<4>", "<4>"]


def test_stderr_is_the_journal_only_if_journal_stream_names_it(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as stream:
        found = os.fstat(stream.fileno())
        assert stderr_is_journal({"JOURNAL_STREAM": f"{found.st_dev}:{found.st_ino}"}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": f"{found.st_dev}:1"}, stream)
        assert not stderr_is_journal({"JOURNAL_STREAM": "garbage"}, stream)
        assert not stderr_is_journal({}, stream)
