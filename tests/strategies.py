"""Hypothesis strategies for sovnet's value types, shared by the property tests."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from sovnet.core.manifest import FileEntry, Manifest
from sovnet.formats.fileformat import FileFormat
from sovnet.formats.gguf import GGUFFacts
from sovnet.formats.safetensors import SafetensorsFacts

_component = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_. -]{0,11}", fullmatch=True).filter(
    lambda s: s not in (".", "..") and not s.endswith(" ")
)
paths = st.lists(_component, min_size=1, max_size=3).map("/".join)
hashes = st.binary(min_size=32, max_size=32)

gguf_facts = st.builds(
    lambda version, arch, file_type, tensors, split: GGUFFacts(
        version=version,
        architecture=arch,
        file_type=file_type,
        tensor_count=tensors,
        split_no=split[0] if split else None,
        split_count=split[1] if split else None,
    ),
    st.sampled_from([2, 3]),
    st.none() | st.from_regex(r"[a-z0-9]{1,12}", fullmatch=True),
    st.none() | st.integers(0, 40),
    st.integers(0, 5000),
    st.none() | st.integers(1, 9).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
)
safetensors_facts = st.builds(
    lambda dtypes, count: SafetensorsFacts(
        tensor_count=count if dtypes else 0, dtypes=tuple(sorted(set(dtypes)))
    ),
    st.lists(st.sampled_from(["BF16", "F16", "F32", "I64", "U8"]), max_size=3),
    st.integers(1, 1000),
)


@st.composite
def file_entries(draw: st.DrawFn, path: str) -> FileEntry:
    file_format = draw(st.sampled_from(list(FileFormat)))
    facts: GGUFFacts | SafetensorsFacts | None = None
    if file_format is FileFormat.GGUF:
        facts = draw(gguf_facts)
    elif file_format is FileFormat.SAFETENSORS:
        facts = draw(safetensors_facts)
    size = draw(st.integers(0, 2**40))
    return FileEntry(
        path=path,
        size=size,
        blake3=draw(hashes),
        pieces_root=draw(hashes) if size else bytes(32),
        format=file_format,
        facts=facts,
    )


@st.composite
def manifests(draw: st.DrawFn) -> Manifest:
    chosen = draw(st.lists(paths, min_size=1, max_size=5, unique_by=str.casefold))
    chosen = sorted(chosen)
    # Drop paths that would be both a file and a directory of another path.
    folded = [p.casefold() for p in chosen]
    chosen = [
        p
        for p, f in zip(chosen, folded, strict=True)
        if not any(other.startswith(f + "/") for other in folded)
    ]
    return Manifest(
        name=draw(
            st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}/[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True)
        ),
        version=draw(st.none() | st.from_regex(r"[0-9][0-9.]{0,6}", fullmatch=True)),
        license=draw(
            st.none() | st.sampled_from(["apache-2.0", "MIT", "gemma", "Llama 3 Community"])
        ),
        piece_size=draw(st.sampled_from([16384, 1 << 22, 1 << 26])),
        files=tuple(draw(file_entries(p)) for p in chosen),
    )


# -- edits of a valid file, for parsers: random bytes rarely get past a magic number ------

Edit = tuple[str, int, int]
byte_edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate"]),
        st.integers(min_value=0),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=6,
)


def mutate(data: bytes, edits: Sequence[Edit]) -> bytes:
    """``data`` with each edit applied in turn (positions wrap around its length)."""
    out = bytearray(data)
    for kind, where, byte in edits:
        if not out:
            break
        at = where % len(out)
        if kind == "flip":
            out[at] ^= 1 << (byte % 8)
        elif kind == "set":
            out[at] = byte
        elif kind == "insert":
            out[at:at] = bytes([byte])
        elif kind == "delete":
            del out[at]
        else:
            del out[at:]
    return bytes(out)
