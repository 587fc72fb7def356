"""Files a user names as input (an invite, a certificate request, a root file): read
with a bound, and only if they are regular files, so that ``/dev/zero`` or a FIFO
is refused at once instead of filling memory or waiting forever."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sovnet.errors import InvalidInputError, LocalStateError, NotFoundError


def read_input(path: Path, limit: int, *, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``, refused if there are over ``limit``."""
    try:
        # O_NONBLOCK: opening a FIFO waits for a writer otherwise; files ignore it.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except OSError as exc:
        raise LocalStateError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise InvalidInputError(
                f"{path} is not a regular file", hint=f"give the {what} itself, saved to a file"
            )
        try:
            data = handle.read(limit + 1)
        except OSError as exc:
            raise LocalStateError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InvalidInputError(
            f"{path} is over {limit} bytes: not a {what}", hint=f"check that it is the {what}"
        )
    return data
