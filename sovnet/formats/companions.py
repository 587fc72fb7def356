"""Checks for the files that travel with weights: JSON, text, sharded-safetensors indexes.

JSON and text files must decode as strict UTF-8 (JSON also must parse, without
NaN or Infinity, which strict parsers refuse). A sharded safetensors index
(``NAME.safetensors.index.json``) must describe exactly the shards beside it:
every shard it names is present, every ``NAME-NNNNN-of-NNNNN.safetensors`` file
present is named, and its weight map and the shards' own headers list the same
tensors in the same shards.

Pure: bytes and parsed headers in, errors out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from sovnet.errors import MalformedFileError

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_TEXT_BYTES = 64 * 1024 * 1024
INDEX_SUFFIX = ".safetensors.index.json"
_SHARD_NAME = re.compile(r"-\d{5}-of-\d{5}\.safetensors")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_text(relpath: str, data: bytes) -> str:
    if len(data) > MAX_TEXT_BYTES:
        raise MalformedFileError(f"{relpath}: text file over {MAX_TEXT_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedFileError(
            f"{relpath}: not UTF-8 text (byte {exc.start})",
            hint="text companions must be UTF-8",
        ) from exc
    if "\x00" in text:
        raise MalformedFileError(f"{relpath}: text file contains NUL bytes")
    return text


def check_json(relpath: str, data: bytes) -> object:
    if len(data) > MAX_JSON_BYTES:
        raise MalformedFileError(f"{relpath}: JSON file over {MAX_JSON_BYTES} bytes")
    try:
        text = data.decode("utf-8")
        value: object = json.loads(text, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise MalformedFileError(f"{relpath}: not UTF-8 (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise MalformedFileError(
            f"{relpath}: not valid JSON ({exc.msg}, line {exc.lineno} column {exc.colno})"
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise MalformedFileError(f"{relpath}: not acceptable JSON ({exc})") from exc
    return value


def is_index(relpath: str) -> bool:
    return relpath.endswith(INDEX_SUFFIX)


def check_safetensors_index(
    relpath: str, index: object, shards: Mapping[str, frozenset[str]]
) -> None:
    """Check an index against ``shards``: every safetensors file of the model, by
    relative path, with the tensor names its header lists."""
    directory, _, name = relpath.rpartition("/")
    prefix = f"{directory}/" if directory else ""
    stem = name[: -len(INDEX_SUFFIX)]
    if not isinstance(index, dict) or not isinstance(index.get("weight_map"), dict):
        raise MalformedFileError(f"{relpath}: a safetensors index needs a weight_map object")
    weight_map: dict[str, object] = index["weight_map"]
    listed: dict[str, set[str]] = {}
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str) or "/" in shard or shard in ("", ".", ".."):
            raise MalformedFileError(
                f"{relpath}: tensor {tensor!r} maps to {shard!r}, not a file name"
            )
        listed.setdefault(prefix + shard, set()).add(tensor)
    for shard_path, tensors in sorted(listed.items()):
        if shard_path not in shards:
            raise MalformedFileError(
                f"{relpath}: lists shard {shard_path}, which is not in the model",
                hint="publish the complete sharded model",
            )
        present = shards[shard_path]
        if tensors != present:
            missing = sorted(tensors - present)
            extra = sorted(present - tensors)
            detail = (
                f"tensor {missing[0]!r} is not in that shard"
                if missing
                else f"the shard also holds {extra[0]!r}, which the index does not list"
            )
            raise MalformedFileError(f"{relpath}: index and {shard_path} disagree: {detail}")
    for shard_path in sorted(shards):
        shard_dir, _, shard_name = shard_path.rpartition("/")
        same_family = shard_dir == directory and shard_name.startswith(stem)
        if (
            same_family
            and _SHARD_NAME.fullmatch(shard_name[len(stem) :])
            and shard_path not in listed
        ):
            raise MalformedFileError(
                f"{relpath}: shard {shard_path} is present but the index does not list it",
                hint="remove the stray shard, or publish the index that describes it",
            )
