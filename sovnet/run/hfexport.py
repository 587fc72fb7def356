"""Export a verified model into a Hugging Face hub cache, without copying its bytes.

huggingface_hub (and transformers, llama-cpp-python's ``from_pretrained``, vLLM…)
find a model offline (``HF_HUB_OFFLINE=1``) in this layout::

    <cache>/models--ORG--NAME/
        blobs/<sha256 hex>                     the file contents
        snapshots/<revision>/<path>            -> ../../blobs/<sha256 hex> (relative symlink)
        refs/main                              <revision>

sovnet fills it from the model view: each ``blobs/`` entry is a hard link to the
verified file (the same inode: no second copy, no extra space), or a symbolic link
to it when the cache is on another filesystem.

Names, decided here and documented in README.md:

* ``blobs/`` entries are named by the SHA-256 of the content, which is what the Hub
  uses as the etag of LFS files (weights). An online huggingface_hub that later
  downloads the same file from the Hub finds it already there. (Small files that
  the Hub keeps in git have a git-SHA-1 etag instead; for those the name only has
  to agree with the snapshot links, which it does.) Computing it reads each file
  once.
* ``<revision>`` stands where a git commit id would: 40 hex digits, the first 20
  bytes of BLAKE3(``"sovnet hf-cache revision v1\\0"`` || binary CID). The same
  model always exports to the same revision, on every machine.
* ``refs/main`` is set to that revision: the last export of a name wins. Earlier
  exports stay reachable by their revision.

Only the cache is written; nothing here reads the environment (the CLI resolves the
default cache directory with :func:`default_cache_dir`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import blake3

from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.errors import InvalidInputError, LocalStateError
from sovnet.store.atomicfile import replace_with, write_atomic

REVISION_DOMAIN = b"sovnet hf-cache revision v1\x00"
# The Hub's rules for a repo id (huggingface_hub.utils.validate_repo_id).
_HF_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")


@dataclass(frozen=True)
class HFExport:
    repo_id: str
    revision: str
    repo_dir: Path
    snapshot: Path
    hard_linked: int  # blobs that are hard links to the store's files
    symlinked: int  # blobs that are symbolic links to them (another filesystem)
    already: int  # blobs that already were the store's files


def default_cache_dir(env: Mapping[str, str], home: Path) -> Path:
    """The cache huggingface_hub uses by default, as it decides it."""
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(name):
            return Path(env[name]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    cache = Path(env["XDG_CACHE_HOME"]).expanduser() if env.get("XDG_CACHE_HOME") else None
    return (cache or home / ".cache") / "huggingface" / "hub"


def revision_for(cid: CID) -> str:
    return blake3.blake3(REVISION_DOMAIN + cid.binary).hexdigest()[:40]


def hf_repo_id(name: str) -> str:
    """``name`` as a Hub repo id, or InvalidInputError if the Hub's rules forbid it."""
    parts = name.split("/")
    if (
        len(parts) != 2
        or not all(_HF_PART.fullmatch(part) for part in parts)
        or "--" in name
        or ".." in name
        or name.endswith(".git")
    ):
        raise InvalidInputError(
            f"{name!r} cannot be a Hugging Face repo id (letters, digits, - _ . ; no '--' "
            "or '..'; each part starts and ends with a letter, digit or _; at most 96 "
            "characters)",
            hint="publish the model under a name the Hub accepts",
        )
    return name


def export_hf_cache(view: Path, cid: CID, manifest: Manifest, cache_dir: Path) -> HFExport:
    """Link the files of the model view ``view`` (already through the gate) into the cache."""
    repo_id = hf_repo_id(manifest.name)
    revision = revision_for(cid)
    repo = cache_dir / ("models--" + repo_id.replace("/", "--"))
    blobs, snapshot, refs = repo / "blobs", repo / "snapshots" / revision, repo / "refs"
    sources = [view / entry.path for entry in manifest.files]
    try:
        for directory in (blobs, snapshot, refs):
            directory.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as executor:
            digests = list(executor.map(_sha256, sources))
        counts = {"hard": 0, "sym": 0, "already": 0}
        for entry, source, digest in zip(manifest.files, sources, digests, strict=True):
            blob = blobs / digest
            counts[_place_blob(source, blob)] += 1
            link = snapshot / entry.path  # entry.path passed check_relpath
            link.parent.mkdir(parents=True, exist_ok=True)
            _symlink(link, os.path.relpath(blob, link.parent))
        write_atomic(refs / "main", revision.encode())
    except OSError as exc:
        raise LocalStateError(
            f"cannot write the Hugging Face cache at {cache_dir}: {exc.strerror}"
        ) from exc
    return HFExport(
        repo_id, revision, repo, snapshot, counts["hard"], counts["sym"], counts["already"]
    )


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _place_blob(source: Path, blob: Path) -> str:
    """Make ``blob`` the store's file: a hard link if possible, else a symbolic link."""
    if blob.exists() and os.path.samefile(blob, source):
        return "already"
    try:
        _replace(blob, lambda temp: os.link(source, temp))
        return "hard"
    except OSError:
        # Another filesystem (EXDEV), or hard links not allowed here: point at it.
        _symlink(blob, str(source.resolve()))
        return "sym"


def _symlink(link: Path, target: str) -> None:
    _replace(link, lambda temp: os.symlink(target, temp))


def _replace(target: Path, make: Callable[[Path], None]) -> None:
    replace_with(target, make, prefix=".sovnet-")
