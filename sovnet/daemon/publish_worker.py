"""Work sovnetd hands to a child process: ``python -m sovnet.worker publish ...``.

Publishing hashes a file the daemon does not own, through a memory mapping
(filehash.py): if its owner truncates it meanwhile, the process that maps it
gets SIGBUS. In a child, that ends the child, and the daemon reports a failed
publish. The child also keeps the hashing threads' pressure on the GIL away
from the daemon's event loop.

The child writes one JSON object a line to stdout: ``{"event": "scanned",
"total"}``, ``{"event": "hashed", "bytes"}`` (at most ten a second),
then ``{"event": "result", ...}`` or ``{"event": "error", "error": {...}}``.

SIGTERM cancels the publish (its client left, publisher.py): the temp files are
removed on the way out, and nothing is published. Once the commit has begun it
is let finish: a publish is then either all there or not at all.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from sovnet.errors import SovnetError


class _Cancelled(Exception):
    """SIGTERM before the commit began."""


class _Cancellation:
    """SIGTERM raises _Cancelled in the main thread until the commit begins; after,
    the commit finishes and its result is sent."""

    def __init__(self) -> None:
        self.committing = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: object) -> None:
        if self.committing:
            return
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup is not cut short
        raise _Cancelled

    def commit_begins(self) -> None:
        self.committing = True


def _send(event: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def publish(args: argparse.Namespace, cancellation: _Cancellation) -> None:
    from sovnet.store.keyfiles import NodeFiles
    from sovnet.store.publish import publish as do_publish
    from sovnet.store.scan import ScanOptions
    from sovnet.store.store import Store

    state = Path(args.state_dir)
    hashed = 0
    last = 0.0

    def progress(amount: int) -> None:
        nonlocal hashed, last
        hashed += amount
        now = time.monotonic()
        if now - last >= 0.1:
            last = now
            _send({"event": "hashed", "bytes": hashed})

    options = ScanOptions(
        include=tuple(args.include),
        exclude=tuple(args.exclude),
        follow_links_within=tuple(Path(d) for d in args.follow_links_within),
    )
    key = NodeFiles(state).load_key()
    result = do_publish(
        Store(state).init(),
        key,
        Path(args.path),
        name=args.name,
        version=args.version,
        license=args.license,
        copy=args.copy,
        options=options,
        on_scanned=lambda total: _send({"event": "scanned", "total": total}),
        progress=progress,
        on_committing=cancellation.commit_begins,
    )
    _send({"event": "result", **result.summary()})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sovnet.worker")
    commands = parser.add_subparsers(dest="command", required=True)
    pub = commands.add_parser("publish")
    pub.add_argument("--state-dir", required=True)
    pub.add_argument("--name", required=True)
    pub.add_argument("--version")
    pub.add_argument("--license")
    pub.add_argument("--copy", action="store_true")
    pub.add_argument("--include", action="append", default=[])
    pub.add_argument("--exclude", action="append", default=[])
    pub.add_argument("--follow-links-within", action="append", default=[])
    pub.add_argument("path")
    args = parser.parse_args(argv)
    cancellation = _Cancellation()
    try:
        publish(args, cancellation)
    except SovnetError as exc:
        _send({"event": "error", "error": exc.to_json()})
        sys.exit(exc.exit_code)
    except _Cancelled:
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
