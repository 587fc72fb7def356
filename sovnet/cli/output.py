"""How the CLI shows things: sizes, tables, JSON, errors and progress bars.

Data goes to stdout (a CID, a table, JSON); everything meant for a person only
(summaries, progress, errors) goes to stderr, so ``cid=$(sovnet publish ...)``
and ``sovnet ls --json | jq`` work. rich is imported only when a progress bar is
actually drawn, which keeps ``sovnet --help`` fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import click

from sovnet.core.sizes import human_size
from sovnet.errors import SovnetError


def emit_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False))


def say(message: str = "") -> None:
    """A line for the person at the terminal (stderr)."""
    click.echo(message, err=True)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def report_error(error: SovnetError, as_json: bool) -> None:
    if as_json:
        # One line, so that it also ends a stream of JSON lines (`sovnet fetch --json`).
        click.echo(json.dumps({"error": error.to_json()}, sort_keys=True, ensure_ascii=False))
        return
    click.echo(f"sovnet: error: {error.message}", err=True)
    if error.hint:
        click.echo(f"  hint: {error.hint}", err=True)


class ProgressSink(Protocol):
    def start(self, total: int) -> None: ...

    def advance(self, amount: int) -> None: ...


class _Silent:
    def start(self, total: int) -> None:
        pass

    def advance(self, amount: int) -> None:
        pass


@contextmanager
def byte_progress(description: str, *, enabled: bool) -> Iterator[ProgressSink]:
    """A bytes/rate/ETA bar on stderr when it is a terminal and ``enabled``."""
    if not enabled or not sys.stderr.isatty():
        yield _Silent()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )

    class _Bar:
        task: Any = None

        def start(self, total: int) -> None:
            self.task = progress.add_task(description, total=total)

        def advance(self, amount: int) -> None:
            if self.task is not None:
                progress.advance(self.task, amount)

    with progress:
        yield _Bar()


class TransferSink(Protocol):
    def update(self, done: int, total: int, peers: int) -> None: ...

    def verifying(self) -> None:
        """Every byte is here; the files are being checked against the manifest."""
        ...


class _SilentTransfer:
    def update(self, done: int, total: int, peers: int) -> None:
        pass

    def verifying(self) -> None:
        pass


@contextmanager
def transfer_progress(*, enabled: bool) -> Iterator[TransferSink]:
    """A download bar on stderr (bytes, rate, peers, ETA) when it is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield _SilentTransfer()
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class _Speed(ProgressColumn):
        """The rate in the units of the sizes beside it (KiB/s, MiB/s), not rich's MB/s."""

        def render(self, task: Task) -> Text:
            return Text(f"{human_size(int(task.speed or 0))}/s", style="progress.data.speed")

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        _Speed(),
        TextColumn("{task.fields[peers]}"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )

    class _Bar:
        task: Any = None

        def update(self, done: int, total: int, peers: int) -> None:
            shown = f"{peers} peer" if peers == 1 else f"{peers} peers"
            if self.task is None:
                self.task = progress.add_task("fetching", total=total, peers=shown)
            progress.update(self.task, completed=done, total=total, peers=shown)

        def verifying(self) -> None:
            if self.task is not None:
                progress.update(self.task, description="verifying")

    with progress:
        yield _Bar()
