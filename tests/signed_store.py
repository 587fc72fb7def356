"""Put a model into a store the way a trusted publisher with another tool could:
signed by this node's key, committed with the store's own code, but without
``sovnet publish``'s content checks.

This is how a hostile GGUF header gets past publish in the tests: publish refuses
it (tests/test_cli.py), so only a publisher who signs such a file with something
else, or a compromised key, can put one in front of ``sovnet run``; the run-time
header check is the defence against exactly that. The store, manifest, signature
and hashing code used here are sovnet's real ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sovnet.core.cid import CID
from sovnet.core.manifest import Facts, FileEntry, Manifest, piece_size_for
from sovnet.core.signing import SignatureBundle
from sovnet.formats.fileformat import FileFormat
from sovnet.formats.gguf import GGUFFacts
from sovnet.formats.safetensors import SafetensorsFacts
from sovnet.store.filehash import hash_file
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.store import Store

# What a careless tool might claim; the gate never believes a manifest's facts
# about a header, it parses the header itself.
CLAIMED_GGUF_FACTS = GGUFFacts(
    version=3, architecture="llama", file_type=0, tensor_count=1, split_no=None, split_count=None
)


def _format_of(path: str) -> tuple[FileFormat, Facts]:
    if path.endswith(".gguf"):
        return FileFormat.GGUF, CLAIMED_GGUF_FACTS
    if path.endswith(".safetensors"):
        return FileFormat.SAFETENSORS, SafetensorsFacts(tensor_count=1, dtypes=("F32",))
    if path.endswith(".json"):
        return FileFormat.JSON, None
    return FileFormat.TEXT, None


def commit_signed(
    state_dir: Path,
    files: Mapping[str, bytes],
    *,
    name: str = "acme/hostile",
    version: str | None = None,
) -> str:
    """Commit ``files`` (path -> bytes) as one model signed by the node key; its CID."""
    store = Store(state_dir).init()
    key = NodeFiles(state_dir).load_key()
    piece_size = piece_size_for(sum(len(data) for data in files.values()))
    entries = []
    digests = []
    with ThreadPoolExecutor(max_workers=2) as executor:
        for path, data in sorted(files.items()):
            temp = store.temp_path()
            temp.write_bytes(data)
            digest = hash_file(temp, executor, piece_size=piece_size)
            file_format, facts = _format_of(path)
            entries.append(
                FileEntry(path, len(data), digest.blake3, digest.pieces_root, file_format, facts)
            )
            digests.append((temp, digest))
    manifest = Manifest(name=name, version=version, piece_size=piece_size, files=tuple(entries))
    raw = manifest.to_bytes()
    cid = CID.of(raw)
    with store.locked():
        for temp, digest in digests:
            store.adopt_blob(temp, digest.blake3)
            store.put_layer(digest.blake3, piece_size, digest.piece_layer)
        store.commit(manifest, raw, SignatureBundle(cid).with_signature(key.sign(cid)))
    return str(cid)
