"""Entry point of ``sovnetd``, the node daemon.

The daemon (seeding, fetching from trusted peers, the local API) is not built
yet. Rather than pretend, it says so and exits non-zero.
"""

from __future__ import annotations

import sys


def main() -> None:
    print(
        "sovnetd: the daemon is not built yet. Everything it will serve works today "
        "through the CLI on the local store: run `sovnet --help`.",
        file=sys.stderr,
    )
    sys.exit(1)
