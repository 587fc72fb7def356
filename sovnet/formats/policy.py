"""Which files a sovnet model may contain, by name, and why the rest are refused.

It is an allowlist: a file is published only if its name maps to a format whose
content sovnet validates (docs/spec.md, "Allowed files"). Formats that can run
code when loaded (pickle and its relatives, scripts, native libraries) get a
message that says so; everything else unknown is refused as unknown.

Pure: decides from names only; scan.py checks file types and content.
"""

from __future__ import annotations

from sovnet.errors import RefusedFile, UnsafeFileError
from sovnet.formats.fileformat import FileFormat

_BY_SUFFIX = {
    ".gguf": FileFormat.GGUF,
    ".safetensors": FileFormat.SAFETENSORS,
    ".json": FileFormat.JSON,
    ".txt": FileFormat.TEXT,
    ".md": FileFormat.TEXT,
    ".jinja": FileFormat.TEXT,
    ".tiktoken": FileFormat.TEXT,
}

_BY_NAME = {
    "tokenizer.model": FileFormat.SENTENCEPIECE,
    "spiece.model": FileFormat.SENTENCEPIECE,
    "sentencepiece.bpe.model": FileFormat.SENTENCEPIECE,
    "LICENSE": FileFormat.TEXT,
    "LICENCE": FileFormat.TEXT,
    "NOTICE": FileFormat.TEXT,
    "COPYING": FileFormat.TEXT,
    "README": FileFormat.TEXT,
    "USE_POLICY": FileFormat.TEXT,
    ".gitattributes": FileFormat.TEXT,
}

_PICKLE = "a Python pickle, which runs code when it is loaded"
_DANGEROUS = {
    ".bin": "usually a PyTorch pickle, which runs code when it is loaded",
    ".pt": _PICKLE,
    ".pth": _PICKLE,
    ".pkl": _PICKLE,
    ".pickle": _PICKLE,
    ".ckpt": _PICKLE,
    ".joblib": _PICKLE,
    ".dill": _PICKLE,
    ".npy": "a NumPy array file, which can hold pickled objects",
    ".npz": "a NumPy archive, which can hold pickled objects",
    ".h5": "a Keras/HDF5 model, which can hold code (Lambda layers)",
    ".keras": "a Keras model, which can hold code (Lambda layers)",
    ".pb": "a TensorFlow graph, which can call arbitrary ops",
    ".onnx": "an ONNX graph, which can reference external code and data",
    ".py": "Python source",
    ".pyc": "compiled Python",
    ".sh": "a shell script",
    ".so": "a native library",
    ".dylib": "a native library",
    ".dll": "a native library",
    ".exe": "a program",
}

SAFE_ALTERNATIVE = "convert the weights to safetensors or GGUF, or leave the file out"

_PICKLE_SUFFIXES = frozenset(s for s, why in _DANGEROUS.items() if "pickle" in why)

KNOWN_TYPES = (
    ".gguf, .safetensors, .json, .txt, .md, .jinja, .tiktoken, tokenizer.model, LICENSE, ..."
)


def _exclude(pattern: str) -> str:
    return f"`--exclude '{pattern}'`"


def classify(relpath: str) -> FileFormat | RefusedFile:
    """The format a file is published as, or why it is refused with what to do instead
    (a hint that fits the file, so a mixed repository can be published without it)."""
    name = relpath.rsplit("/", 1)[-1]
    if name in _BY_NAME:
        return _BY_NAME[name]
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > 0 else ""
    if suffix in _BY_SUFFIX and name[dot:] == suffix:
        return _BY_SUFFIX[suffix]
    if suffix in _DANGEROUS:
        reason = f"{suffix} is {_DANGEROUS[suffix]}"
        if suffix in _PICKLE_SUFFIXES:
            hint = f"sovnet never loads a pickle; {_exclude('*' + suffix)} to publish the rest"
        else:
            hint = f"{SAFE_ALTERNATIVE}: {_exclude('*' + suffix)} publishes the rest"
        return RefusedFile(relpath, reason, hint)
    return RefusedFile(
        relpath,
        f"not a file type sovnet publishes ({KNOWN_TYPES})",
        f"only the allowlist of docs/spec.md §11.1 is published; {_exclude(relpath)} "
        "publishes the rest",
    )


def format_for(relpath: str) -> FileFormat:
    """The format a file is published as, or UnsafeFileError naming the file."""
    found = classify(relpath)
    if isinstance(found, RefusedFile):
        raise UnsafeFileError(f"refusing {relpath}: {found.reason}", hint=found.hint)
    return found
