"""A child of ``sovnet run`` / ``serve`` dies with the process that started it.

If the CLI is killed (kill -9, a closed terminal), its children must not live on:
a gate re-hashing a large model for minutes, or a llama.cpp server still
listening. Linux delivers SIGKILL to a process whose parent dies once it asked
for that (``PR_SET_PDEATHSIG``); elsewhere the check of the parent is all there is.
"""

from __future__ import annotations

import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> None:
    """Be killed when ``parent`` dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before we asked
        os._exit(0)
