"""sovnet.gate and sovnet.headercheck: what may reach llama.cpp, checked in-process
against real stores (the CLI side is in tests/test_run.py)."""

from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sovnet.core.cid import CID
from sovnet.errors import (
    IntegrityError,
    InvalidCIDError,
    InvalidInputError,
    MalformedFileError,
    NotFoundError,
    RunnerError,
    TrustError,
)
from sovnet.run.admission import Admission, admit
from sovnet.run.gate_child import admit_in_child
from sovnet.run.headercheck import Limits, check_headers
from sovnet.store import stamps
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.publish import publish
from sovnet.store.store import Store
from sovnet.trust.keys import TrustStore
from tests.conftest import flip_byte, write_gguf, write_safetensors, write_tiny_gguf
from tests.signed_store import commit_signed

TINY = "sovnet-tiny.gguf"


class Node:
    """A state directory with a publisher key, and a way to publish into it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = NodeFiles(root)
        self.key = self.files.generate_key()
        self.store = Store(root).init()

    @property
    def trust(self) -> TrustStore:
        return self.files.load_trust()

    def publish(self, path: Path, name: str = "acme/tiny", version: str | None = None) -> str:
        result = publish(self.store, self.key, path, name=name, version=version, copy=True)
        return str(result.cid)

    def admit(self, ref: str, **kwargs: object) -> Admission:
        return admit(self.store, self.trust, ref, **kwargs)  # type: ignore[arg-type]

    def view(self, cid: str, path: str = TINY) -> Path:
        return self.root / "models" / cid / path


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path / "state")


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    model = tmp_path / "tiny"
    write_tiny_gguf(model)
    (model / "config.json").write_text('{"model_type": "llama"}\n')
    return model


# -- resolving a reference -------------------------------------------------------


def test_admits_by_cid_and_by_name(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny, version="1.0")
    for ref in (cid, "acme/tiny", "acme/tiny@1.0"):
        admission = node.admit(ref)
        assert admission.cid == cid
        assert admission.entry == TINY
        assert admission.entry_path == node.view(cid)
        assert admission.entry_path.is_file()
        assert admission.label == "acme/tiny 1.0"
        assert admission.context_length == 256  # the tiny model's trained context


def test_bare_name_of_several_versions_is_refused_with_the_list(node: Node, tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    write_tiny_gguf(first, seed=1)
    write_tiny_gguf(second, seed=2)
    cid_1 = node.publish(first, version="1.0")
    cid_2 = node.publish(second, version="2.0")
    with pytest.raises(InvalidInputError) as info:
        node.admit("acme/tiny")
    assert "2 trusted models" in info.value.message
    assert cid_1 in info.value.message and cid_2 in info.value.message
    assert "@VERSION" in (info.value.hint or "")
    assert node.admit("acme/tiny@2.0").cid == cid_2


def test_name_signed_by_nobody_trusted_is_refused_not_resolved(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    node.files.update_trust(lambda t: t.without(node.key.public_key.key_id))
    with pytest.raises(TrustError) as info:
        node.admit("acme/tiny")
    assert cid in info.value.message and "no trusted key signed" in info.value.message
    with pytest.raises(TrustError):
        node.admit(cid)


def test_unknown_and_malformed_references(node: Node, tiny: Path) -> None:
    node.publish(tiny)
    with pytest.raises(NotFoundError):
        node.admit("acme/other")
    with pytest.raises(NotFoundError):
        node.admit("acme/tiny@9.9")
    with pytest.raises(InvalidInputError):
        node.admit("acme/tiny@")
    with pytest.raises(InvalidInputError):
        node.admit("not a/valid name")
    with pytest.raises(InvalidCIDError):
        node.admit("bnotacid")


# -- stamps and re-hashing ----------------------------------------------------------


def test_commit_stamps_every_blob_and_matching_stamps_mean_no_rehash(
    node: Node, tiny: Path
) -> None:
    cid = node.publish(tiny)
    manifest = node.store.open(CID.parse(cid), node.trust).manifest
    for entry in manifest.files:
        view = node.view(cid, entry.path)
        assert os.path.samefile(view, node.store.blob_path(entry.blake3))
        stamp = stamps.read(node.store.stamps, entry.blake3)
        assert stamp == stamps.Stamp.of(os.stat(view)), entry.path
    assert node.admit(cid).rehashed == ()
    assert node.admit(cid, verify_full=True).rehashed == ("config.json", TINY)


def test_touched_file_is_rehashed_once_then_stamped_again(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    os.utime(node.view(cid), ns=(1_000_000_000, 1_000_000_000))
    assert node.admit(cid).rehashed == (TINY,)
    assert node.admit(cid).rehashed == ()


def test_damaged_or_missing_stamp_means_rehash(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    stamp_files = sorted(node.store.stamps.iterdir())
    stamp_files[0].write_bytes(b'{"sovnet_stamp": 1, "dev": true}')
    stamp_files[1].unlink()
    assert len(node.admit(cid).rehashed) == 2
    assert node.admit(cid).rehashed == ()


def test_flipped_byte_is_refused_naming_the_file(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    flip_byte(node.view(cid), 300_000)
    with pytest.raises(IntegrityError) as info:
        node.admit(cid)
    assert TINY in info.value.message and "differs from the manifest" in info.value.message
    assert "sovnet verify" in (info.value.hint or "")


def test_edit_hidden_from_mtime_is_still_caught_through_ctime(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    view = node.view(cid)
    before = os.stat(view)
    time.sleep(0.01)  # a ctime the kernel can tell apart
    flip_byte(view, 300_000)
    os.chmod(view, 0o444)
    os.utime(view, ns=(before.st_atime_ns, before.st_mtime_ns))  # the mtime it had
    assert os.stat(view).st_mtime_ns == before.st_mtime_ns
    with pytest.raises(IntegrityError):
        node.admit(cid)


def test_replaced_view_file_is_refused(node: Node, tiny: Path, tmp_path: Path) -> None:
    cid = node.publish(tiny)
    other = tmp_path / "other"
    write_tiny_gguf(other, seed=9)  # same size, other bytes, another inode
    view = node.view(cid)
    os.replace(other / TINY, view)
    with pytest.raises(IntegrityError, match=TINY):
        node.admit(cid)
    view.unlink()
    with pytest.raises(IntegrityError, match="missing from the model view"):
        node.admit(cid)


def test_rm_and_repair_drop_stamps(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    assert len(list(node.store.stamps.iterdir())) == 2
    orphan = node.store.stamps / ("ab" * 32)
    orphan.write_bytes(b"{}")
    leftover = node.store.stamps / ".tmp-1-deadbeef"
    leftover.write_bytes(b"")
    with node.store.locked():
        node.store.repair()
    assert sorted(p.name for p in node.store.stamps.iterdir()) == sorted(
        p.name for p in node.store.blobs.iterdir()
    )
    with node.store.locked():
        node.store.remove(CID.parse(cid))
    assert list(node.store.stamps.iterdir()) == []


# -- which file llama.cpp gets ------------------------------------------------------------


def test_split_model_is_admitted_by_its_first_split(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "split"
    write_tiny_gguf(model, split=3)
    cid = node.publish(model)
    admission = node.admit(cid)
    assert admission.entry == "sovnet-tiny-00001-of-00003.gguf"
    assert admission.context_length == 256
    with pytest.raises(RunnerError, match=re.escape("llama.cpp starts from split 00001")):
        node.admit(cid, gguf_file="sovnet-tiny-00002-of-00003.gguf")


def test_incomplete_split_model_is_refused(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "split"
    write_tiny_gguf(model, split=3)
    (model / "sovnet-tiny-00003-of-00003.gguf").unlink()
    cid = node.publish(model)
    with pytest.raises(
        RunnerError, match=re.escape("sovnet-tiny-00003-of-00003.gguf is not part of it")
    ):
        node.admit(cid)


def test_safetensors_only_model_points_to_export(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "st"
    write_safetensors(model / "model.safetensors")
    (model / "config.json").write_text("{}")
    cid = node.publish(model, name="acme/st")
    with pytest.raises(RunnerError) as info:
        node.admit(cid)
    assert "llama.cpp runs GGUF files only" in info.value.message
    assert "sovnet export acme/st --hf-cache" in (info.value.hint or "")
    # an export takes it as it is
    assert node.admit(cid, runnable=False).entry is None


def test_several_gguf_models_need_a_choice(node: Node, tmp_path: Path) -> None:
    model = tmp_path / "two"
    write_tiny_gguf(model)
    write_gguf(model / "other.gguf")
    write_gguf(model / "mmproj.gguf", arch="clip")  # a projector is never the model
    cid = node.publish(model)
    with pytest.raises(RunnerError) as info:
        node.admit(cid)
    assert info.value.message.endswith("could start from: other.gguf, sovnet-tiny.gguf")
    assert "--file" in (info.value.hint or "")
    assert node.admit(cid, gguf_file=TINY).entry == TINY
    with pytest.raises(NotFoundError):
        node.admit(cid, gguf_file="nope.gguf")


def test_model_and_projector_admits_the_model(node: Node, tiny: Path) -> None:
    write_gguf(tiny / "mmproj.gguf", arch="clip")
    cid = node.publish(tiny)
    assert node.admit(cid).entry == TINY


# -- hostile headers reach the header check, not llama.cpp ----------------------------


def tiny_bytes(tmp_path: Path) -> bytes:
    [path] = write_tiny_gguf(tmp_path / "source")
    return path.read_bytes()


def bad_magic(data: bytes) -> bytes:
    return b"GGUX" + data[4:]


def huge_tensor_count(data: bytes) -> bytes:
    return data[:8] + struct.pack("<Q", 2**40) + data[16:]


def string_past_end(data: bytes) -> bytes:
    # The u64 length of the value of general.name, after its key and type.
    at = data.index(b"general.name") + len("general.name") + 4
    return data[:at] + struct.pack("<Q", len(data) + 1000) + data[at + 8 :]


HOSTILE = [
    (bad_magic, "bad GGUF magic"),
    (huge_tensor_count, "tensor count 1099511627776"),
    (string_past_end, "past the end of the"),
]


@pytest.mark.parametrize(("corrupt", "phrase"), HOSTILE, ids=lambda v: getattr(v, "__name__", ""))
def test_hostile_header_signed_by_a_trusted_key_is_refused(
    node: Node, tmp_path: Path, corrupt: object, phrase: str
) -> None:
    assert callable(corrupt)
    cid = commit_signed(node.root, {"model.gguf": corrupt(tiny_bytes(tmp_path))})
    for runnable in (True, False):
        with pytest.raises(MalformedFileError) as info:
            node.admit(cid, runnable=runnable)
        assert info.value.message.startswith("model.gguf: ")
        assert phrase in info.value.message, info.value.message


def test_split_header_that_contradicts_its_name_is_refused(node: Node, tmp_path: Path) -> None:
    cid = commit_signed(
        node.root, {"model-00001-of-00001.gguf": tiny_bytes(tmp_path)}, name="acme/liar"
    )
    with pytest.raises(MalformedFileError, match="its name says split 1 of 1"):
        node.admit(cid)


# -- the header check's own limits ---------------------------------------------------


@pytest.fixture(scope="module")
def big_header(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid GGUF of 300,000 one-float tensors: its names alone take tens of MiB
    to hold, and parsing it takes about a second."""
    count = 300_000
    path = tmp_path_factory.mktemp("big") / "big.gguf"
    # Written through one buffer: a heap left full of freed small objects here would
    # be memory the forked header check could reuse under its address-space limit.
    info = struct.Struct("<Q7sIQIQ")  # name length, name, n_dims, dim, type, offset
    head = b"GGUF" + struct.pack("<IQQ", 3, count, 0)
    size = len(head) + count * info.size
    buffer = bytearray(size + -size % 32 + 32 * count)
    buffer[: len(head)] = head
    for i in range(count):
        info.pack_into(buffer, len(head) + i * info.size, 7, b"t%06d" % i, 1, 1, 0, 32 * i)
    path.write_bytes(buffer)
    return path


def test_header_check_that_runs_out_of_time_is_a_refusal(big_header: Path) -> None:
    started = time.monotonic()
    with pytest.raises(MalformedFileError) as info:
        check_headers([("big.gguf", big_header)], Limits(wall_seconds=0.001))
    assert time.monotonic() - started < 5
    assert info.value.message.startswith("big.gguf: the GGUF header check did not finish")
    assert "refusing to hand this file to llama.cpp" in info.value.message


def test_a_whole_report_that_ends_after_the_deadline_is_still_a_verdict(tmp_path: Path) -> None:
    # The race CI met: the child wrote every verdict, and the wall clock ran out
    # before the parent read the end of the pipe. The verdicts are whole: use them.
    from sovnet.run.headercheck import _interpret

    report = (
        b'{"file": 0}\n{"ok": {"facts": {"version": 3, "architecture": "llama", '
        b'"file_type": 0, "tensor_count": 21, "split_no": null, "split_count": null}, '
        b'"context_length": 256}}\n'
    )
    files = [("tiny.gguf", tmp_path / "tiny.gguf")]
    (verdict,) = _interpret(files, report, 0, True, Limits(wall_seconds=0.001))
    assert verdict.context_length == 256 and verdict.facts.tensor_count == 21
    # Cut short before its verdict, the same report is a refusal naming the file.
    with pytest.raises(MalformedFileError, match=r"^tiny\.gguf: the GGUF header check did not"):
        _interpret(files, report.split(b"\n")[0], 0, True, Limits(wall_seconds=0.001))


_OUT_OF_MEMORY = """
import sys
from pathlib import Path
from sovnet.errors import MalformedFileError
from sovnet.run.headercheck import Limits, check_headers
try:
    check_headers([("big.gguf", Path(sys.argv[1]))], Limits(memory_bytes=1024 * 1024))
except MalformedFileError as exc:
    print(exc.message)
"""


def test_header_check_that_runs_out_of_memory_is_a_refusal(big_header: Path) -> None:
    # From a fresh, small process, as `sovnet run`'s gate is: the child may use what
    # it inherits as well as its limit, and pytest's heap holds enough freed memory
    # for it to keep parsing (slowly) long past 1 MiB. The parse needs ~70 MiB.
    done = subprocess.run(
        [sys.executable, "-c", _OUT_OF_MEMORY, str(big_header)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.startswith("big.gguf: "), done
    assert "needed more than the 1 MiB it may use" in done.stdout


def test_header_check_reports_each_file_in_order(tmp_path: Path) -> None:
    small = write_gguf(tmp_path / "small.gguf")
    two = write_gguf(
        tmp_path / "two.gguf", {"a": np.zeros(8, np.float32), "b": np.ones(8, np.float32)}
    )
    reports = check_headers([("a", small), ("b", two)])
    assert [r.facts.tensor_count for r in reports] == [1, 2]
    with pytest.raises(MalformedFileError, match=r"^missing\.gguf: cannot be read"):
        check_headers([("small", small), ("missing.gguf", tmp_path / "missing.gguf")])


def test_header_check_refuses_to_fork_beside_other_threads(tmp_path: Path) -> None:
    small = write_gguf(tmp_path / "small.gguf")
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        with pytest.raises(RuntimeError, match="other threads"):
            check_headers([("small", small)])
    finally:
        stop.set()
        thread.join()


# -- the gate in a child process ---------------------------------------------------


def test_admission_crosses_the_process_boundary(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny, version="1.0")
    pending = admit_in_child(node.root, "acme/tiny@1.0")
    try:
        admission = pending.result()
    finally:
        pending.close()
    assert admission == node.admit(cid)


def test_refusal_crosses_the_process_boundary_with_its_class(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    flip_byte(node.view(cid), 300_000)
    pending = admit_in_child(node.root, cid)
    try:
        with pytest.raises(IntegrityError, match=TINY):
            pending.result()
    finally:
        pending.close()
    pending.close()  # idempotent


# -- the header verdict cache ---------------------------------------------------------


def _blake3_of(node: Node, cid: str) -> bytes:
    from sovnet.core.manifest import Manifest

    manifest = Manifest.from_bytes(node.store.manifest_bytes(CID.parse(cid)))
    return next(f.blake3 for f in manifest.files if f.path == TINY)


def test_a_checked_header_is_not_parsed_again_for_the_same_bytes(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    blake3 = _blake3_of(node, cid)
    assert stamps.read_header(node.store.stamps, blake3) is None
    first = node.admit(cid)
    cached = stamps.read_header(node.store.stamps, blake3)
    assert cached is not None and cached["context_length"] == 256
    # A check given no time at all refuses (before the child can say a word): with
    # it, admission succeeds only on the cached verdict.
    no_child = Limits(wall_seconds=0)
    assert node.admit(cid, limits=no_child).context_length == first.context_length
    # --verify-full checks again, and a damaged verdict is checked again.
    with pytest.raises(MalformedFileError):
        node.admit(cid, limits=no_child, verify_full=True)
    stamps.header_path(node.store.stamps, blake3).write_text("{broken")
    with pytest.raises(MalformedFileError):
        node.admit(cid, limits=no_child)
    assert node.admit(cid).context_length == 256
    assert stamps.read_header(node.store.stamps, blake3) is not None


def test_a_verdict_goes_with_its_blob(node: Node, tiny: Path) -> None:
    cid = node.publish(tiny)
    blake3 = _blake3_of(node, cid)
    node.admit(cid)
    with node.store.locked():
        node.store.remove(CID.parse(cid))
    assert not stamps.header_path(node.store.stamps, blake3).exists()
