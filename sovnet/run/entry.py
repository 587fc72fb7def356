"""Which GGUF file of a model llama.cpp starts from, and every file it will open.

A model may hold one GGUF model, a split one (llama.cpp's ``gguf-split`` names,
``NAME-00001-of-00003.gguf``: it loads the first and finds the rest by name beside
it), multimodal projectors (architecture ``clip``, loaded beside a model, never
on their own), or none (safetensors only: `sovnet export` serves those).
:func:`choose_entry` decides from the manifest alone; :func:`check_split_facts`
holds a split file's header to its name. Pure: no I/O.
"""

from __future__ import annotations

import re

from sovnet.core.manifest import FileEntry, Manifest
from sovnet.errors import MalformedFileError, NotFoundError, RunnerError
from sovnet.formats.fileformat import FileFormat
from sovnet.formats.gguf import GGUFFacts

# llama.cpp's split naming (gguf-split, llama_split_path): "%s-%05d-of-%05d.gguf".
SPLIT_NAME = re.compile(r"(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf")
# GGUF files of this architecture are multimodal projectors, loaded beside a model.
PROJECTOR_ARCHITECTURE = "clip"


def choose_entry(
    manifest: Manifest, label: str, wanted: str | None = None
) -> tuple[FileEntry, tuple[FileEntry, ...]]:
    """The GGUF file to hand llama.cpp, and every file it will open (its splits)."""
    ggufs = [f for f in manifest.files if f.format is FileFormat.GGUF]
    if not ggufs:
        raise _no_gguf(manifest, label)
    if wanted is not None:
        chosen = [f for f in ggufs if f.path == wanted]
        if not chosen:
            raise NotFoundError(
                f"{label} has no GGUF file {wanted!r}; it has: " + ", ".join(f.path for f in ggufs),
            )
        candidates = chosen
    else:
        candidates = [f for f in ggufs if _is_model_entry(f)]
    if len(candidates) != 1:
        listed = ", ".join(f.path for f in (candidates or ggufs))
        raise RunnerError(
            f"{label} holds {len(candidates) or 'no'} GGUF models llama.cpp could start from: "
            f"{listed}",
            hint="choose the file with --file PATH",
        )
    entry = candidates[0]
    match = SPLIT_NAME.fullmatch(entry.path)
    if match is None:
        return entry, (entry,)
    if int(match["no"]) != 1:
        raise RunnerError(
            f"{entry.path} is split {int(match['no'])} of a split model; "
            "llama.cpp starts from split 00001",
            hint="choose the first split with --file",
        )
    by_path = {f.path: f for f in ggufs}
    count = int(match["count"])
    parts = []
    for number in range(1, count + 1):
        path = f"{match['stem']}-{number:05d}-of-{count:05d}.gguf"
        if path not in by_path:
            raise RunnerError(
                f"{label} is a split model of {count} files, but {path} is not part of it",
                hint="the publisher must publish every split in one model",
            )
        parts.append(by_path[path])
    return entry, tuple(parts)


def _is_model_entry(entry: FileEntry) -> bool:
    match = SPLIT_NAME.fullmatch(entry.path)
    if match is not None and int(match["no"]) != 1:
        return False  # a later split: llama.cpp finds it from the first
    facts = entry.facts
    return not (isinstance(facts, GGUFFacts) and facts.architecture == PROJECTOR_ARCHITECTURE)


def _no_gguf(manifest: Manifest, label: str) -> RunnerError:
    if any(f.format is FileFormat.SAFETENSORS for f in manifest.files):
        return RunnerError(
            f"{label} holds safetensors weights; llama.cpp runs GGUF files only",
            hint=f"`sovnet export {manifest.name} --hf-cache` makes it available offline to "
            "transformers and other Hugging Face tools; or convert it to GGUF "
            "(llama.cpp's convert_hf_to_gguf.py) and publish that",
        )
    return RunnerError(f"{label} holds no GGUF file, so llama.cpp cannot run it")


def check_split_facts(path: str, split_no: int | None, split_count: int | None) -> None:
    match = SPLIT_NAME.fullmatch(path)
    named = (int(match["no"]) - 1, int(match["count"])) if match else None
    if named is None:
        if split_count not in (None, 1):
            raise MalformedFileError(
                f"{path}: its header says it is split {_ordinal(split_no)} of {split_count}, "
                "but its name is not a split name",
            )
        return
    if (split_no, split_count) != named:
        raise MalformedFileError(
            f"{path}: its name says split {named[0] + 1} of {named[1]}, its header says "
            f"{_ordinal(split_no)} of {split_count}",
        )


def _ordinal(split_no: int | None) -> str:
    return "?" if split_no is None else str(split_no + 1)
