"""Which symbolic links a publish follows, and where they may lead.

A Hugging Face cache snapshot (``hub/models--ORG--NAME/snapshots/REV``) is a tree
of links to ``../../blobs/<hash>``: publishing one means following them, and
nothing else should be. A link is followed only when it resolves to a regular
file inside an allowed root: the cache repository (``models--ORG--NAME``) the
model is in, found from its path, and any directory the user names
(``--follow-links-within``). Everything else (a link out of the roots, a chain
whose end is out, a link to a directory, a dangling link, a loop) is refused with
its reason.

The link is resolved once (``realpath``, strict) and the containment checked on
that resolved path, against roots that are resolved too. The caller opens the
resolved path with ``O_NOFOLLOW`` and compares the inode it opened with the one
checked here (scan.py, publish.py), so a link or directory swapped in between the
check and the open cannot lead anywhere else.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from sovnet.errors import InvalidInputError, RefusedFile

HF_REPO_PREFIX = "models--"

FOLLOW_HINT = (
    "sovnet follows links only into the Hugging Face cache repository the model is "
    "in, or into a directory named with --follow-links-within DIR"
)


def hf_cache_repository(model: Path) -> Path | None:
    """The cache repository (``.../models--ORG--NAME``) a snapshot path is in, resolved."""
    resolved = Path(os.path.realpath(model))
    for ancestor in (resolved, *resolved.parents):
        snapshots = ancestor.parent
        if snapshots.name == "snapshots" and snapshots.parent.name.startswith(HF_REPO_PREFIX):
            return snapshots.parent
    return None


def link_roots(model: Path, follow_within: tuple[Path, ...]) -> tuple[Path, ...]:
    """The resolved directories links under ``model`` may lead into."""
    roots: list[Path] = []
    repository = hf_cache_repository(model)
    if repository is not None:
        roots.append(repository)
    for directory in follow_within:
        try:
            resolved = directory.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InvalidInputError(
                f"cannot follow links within {directory}: it does not exist or cannot be read"
            ) from exc
        if not resolved.is_dir():
            raise InvalidInputError(f"cannot follow links within {directory}: not a directory")
        roots.append(resolved)
    return tuple(roots)


@dataclass(frozen=True)
class Followed:
    """A link that may be published: the file it resolves to, as checked."""

    target: Path
    info: os.stat_result


def _shown(target: str | Path) -> str:
    return repr(str(target))[1:-1]  # escaped, so a hostile name cannot forge lines


def follow(link: Path, relpath: str, roots: tuple[Path, ...]) -> Followed | RefusedFile:
    """Where the link ``link`` (named ``relpath`` in the model) leads, or why not."""
    if not roots:
        return RefusedFile(relpath, "a symbolic link", FOLLOW_HINT)
    try:
        target = Path(os.path.realpath(link, strict=True))
    except FileNotFoundError:
        return RefusedFile(
            relpath,
            "a symbolic link whose target does not exist (dangling)",
            "is the download complete? `--exclude` it to publish the rest",
        )
    except OSError as exc:
        # ELOOP for a loop; EACCES for a directory on the way that cannot be entered.
        if exc.errno == errno.ELOOP:
            return RefusedFile(
                relpath,
                "a symbolic link that cannot be followed: it leads back to itself (a loop)",
                "point the link at a file, or `--exclude` it",
            )
        return RefusedFile(
            relpath, f"a symbolic link that cannot be followed: {exc.strerror}", FOLLOW_HINT
        )
    if not any(target.is_relative_to(root) for root in roots):
        return RefusedFile(
            relpath,
            f"a symbolic link that leads out of {_shown(roots[0])}, to {_shown(target)}",
            FOLLOW_HINT,
        )
    try:
        info = os.lstat(target)  # realpath left no link in it
    except OSError as exc:
        return RefusedFile(relpath, f"a symbolic link to {_shown(target)}: {exc.strerror}")
    if stat.S_ISDIR(info.st_mode):
        return RefusedFile(
            relpath,
            "a symbolic link to a directory",
            "sovnet does not walk linked directories; publish the directory itself",
        )
    if not stat.S_ISREG(info.st_mode):
        return RefusedFile(relpath, "a symbolic link to a device, pipe or socket")
    return Followed(target, info)
