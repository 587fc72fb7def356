"""The kinds of file sovnet publishes, each validated by its own parser here."""

from __future__ import annotations

from enum import StrEnum


class FileFormat(StrEnum):
    """How a file's content was validated when it was published."""

    GGUF = "gguf"
    SAFETENSORS = "safetensors"
    JSON = "json"
    TEXT = "text"
    SENTENCEPIECE = "sentencepiece"
