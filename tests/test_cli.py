"""The ``sovnet`` command line, run as a real subprocess, as a user would run it.

Each numbered section is one acceptance criterion of the issue.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import warnings
from pathlib import Path

import blake3
import libtorrent as lt
import numpy as np
import pytest
from multiformats import CID as MultiformatsCID

from tests.conftest import (
    SOVNETD,
    Runner,
    assert_store_empty,
    corrupt_gguf_magic,
    corrupt_gguf_tensor_count,
    flip_byte,
    store_entries,
    write_companions,
    write_gguf,
    write_safetensors,
    write_tiny_gguf,
)

# A valid sovnet CID (CIDv1, raw, blake3) of bytes no test ever stores.
UNKNOWN_CID = "bafkr4iauqeduauv2vts4spip7cisgg2pf6onw45jehxhdton3o7cclfpqa"


def _ls(sovnet: Runner) -> list[dict[str, object]]:
    rows = sovnet.json("ls")
    assert isinstance(rows, list)
    return rows


def _manifest(sovnet: Runner, cid: str) -> dict[str, object]:
    shown = sovnet.json("show", cid)
    assert shown["cid"] == cid
    return dict(shown["manifest"])


def _files_by_path(sovnet: Runner, cid: str) -> dict[str, dict[str, object]]:
    files = _manifest(sovnet, cid)["files"]
    assert isinstance(files, list)
    return {f["path"]: f for f in files}


# -- 1. publish prints a CID that any multiformats library reads ---------------------


def test_publish_prints_cidv1_raw_blake3_of_the_raw_manifest(
    sovnet: Runner, two_file_model: Path
) -> None:
    gen = sovnet("key", "gen")
    assert gen.returncode == 0, gen.stderr

    published = sovnet("publish", two_file_model, "--name", "acme/tiny", "--version", "1.0")
    assert published.returncode == 0, published.stderr
    text = published.stdout.strip()
    assert text.splitlines() == [text], "publish prints the CID alone on stdout"

    cid = MultiformatsCID.decode(text)
    assert cid.version == 1
    assert cid.codec.name == "raw"
    assert cid.hashfun.name == "blake3"
    assert cid.encode("base32") == text

    raw = sovnet("show", text, "--raw", text=False, check=True).stdout
    assert bytes(cid.raw_digest) == blake3.blake3(raw).digest()
    manifest = json.loads(raw)
    assert manifest["name"] == "acme/tiny"
    assert manifest["version"] == "1.0"
    assert [f["path"] for f in manifest["files"]] == ["config.json", "sovnet-tiny.gguf"]


# -- 2. per-file hashes match b3sum and libtorrent -----------------------------------


@pytest.fixture
def mixed_model(tmp_path: Path) -> Path:
    """GGUF, a safetensors file over two 4 MiB spans (and not block-aligned), companions."""
    model = tmp_path / "mixed"
    write_tiny_gguf(model)
    write_companions(model)
    rng = np.random.default_rng(7)
    # 9 MiB + 123 floats: three 4 MiB spans, a short last 16 KiB block.
    weights = rng.standard_normal((9 * 1024 * 1024) // 4 + 123).astype(np.float32)
    write_safetensors(model / "model.safetensors", {"w": weights})
    return model


def _libtorrent_root(path: Path) -> bytes:
    """The BEP 52 pieces root libtorrent computes for ``path`` (a one-file v2 torrent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        fs = lt.file_storage()
        fs.add_file(path.name, path.stat().st_size)
        ct = lt.create_torrent(fs, 4 * 1024 * 1024, flags=lt.create_torrent.v2_only)
        lt.set_piece_hashes(ct, str(path.parent))
        info = lt.torrent_info(ct.generate())
        files = info.files()
        roots = [
            files.root(i).to_bytes()
            for i in range(files.num_files())
            if not files.file_flags(i) & lt.file_storage.flag_pad_file
        ]
    assert len(roots) == 1
    return bytes(roots[0])


def test_file_blake3_matches_b3sum(sovnet_with_key: Runner, mixed_model: Path) -> None:
    b3sum = shutil.which("b3sum")
    if b3sum is None:
        pytest.skip("the b3sum binary is not installed (cargo install b3sum / apt install b3sum)")
    # Read the expected digests before publishing (publishing makes sources read-only).
    expected = {}
    for path in sorted(mixed_model.iterdir()):
        out = subprocess.run([b3sum, "--no-names", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        expected[path.name] = out.stdout.strip()
    cid = sovnet_with_key.publish(mixed_model)
    files = _files_by_path(sovnet_with_key, cid)
    assert set(files) == set(expected)
    for path, entry in files.items():
        assert entry["blake3"] == expected[path], path


def test_file_pieces_root_matches_libtorrent(sovnet_with_key: Runner, mixed_model: Path) -> None:
    expected = {p.name: _libtorrent_root(p).hex() for p in sorted(mixed_model.iterdir())}
    cid = sovnet_with_key.publish(mixed_model)
    files = _files_by_path(sovnet_with_key, cid)
    assert files["model.safetensors"]["size"] > 8 * 1024 * 1024  # the multi-span path ran
    assert set(files) == set(expected)
    for path, entry in files.items():
        assert entry["pieces_root"] == expected[path], path


# -- 3. verify detects a flipped byte and names the file ----------------------------


def test_verify_intact_model_exits_0(sovnet_with_key: Runner, tiny_gguf_dir: Path) -> None:
    cid = sovnet_with_key.publish(tiny_gguf_dir)
    result = sovnet_with_key("verify", cid)
    assert result.returncode == 0, result.stderr
    assert "sovnet-tiny.gguf" in result.stdout
    report = sovnet_with_key.json("verify", cid)
    assert report["ok"] is True and report["intact"] is True and report["trusted"] is True
    assert all(f["ok"] and f["problem"] is None for f in report["files"])


def test_verify_after_flipping_a_blob_byte_exits_5_and_names_the_file(
    sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path
) -> None:
    cid = sovnet_with_key.publish(tiny_gguf_dir)
    entry = _files_by_path(sovnet_with_key, cid)["sovnet-tiny.gguf"]
    blob = state_dir / "blobs" / str(entry["blake3"])
    assert blob.is_file()
    flip_byte(blob, 1000)

    result = sovnet_with_key("verify", cid)
    assert result.returncode == 5
    output = result.stdout + result.stderr
    assert "sovnet-tiny.gguf" in output
    assert "FAIL  sovnet-tiny.gguf" in result.stdout
    # the intact files are still reported ok
    assert "ok    config.json" in result.stdout

    as_json = sovnet_with_key("verify", cid, "--json")
    assert as_json.returncode == 5
    report = json.loads(as_json.stdout)
    assert report["ok"] is False
    assert report["intact"] is False
    by_path = {f["path"]: f for f in report["files"]}
    assert by_path["sovnet-tiny.gguf"]["ok"] is False
    assert "differs" in by_path["sovnet-tiny.gguf"]["problem"]
    assert by_path["config.json"] == {"path": "config.json", "ok": True, "problem": None}


def test_verify_all_checks_every_model_and_names_the_damaged_one(
    sovnet_with_key: Runner, tmp_path: Path, state_dir: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_tiny_gguf(first, seed=1)
    write_tiny_gguf(second, seed=2)
    cid_a = sovnet_with_key.publish(first, "acme/first", "--copy")
    cid_b = sovnet_with_key.publish(second, "acme/second", "--copy")
    assert sovnet_with_key("verify", "--all").returncode == 0
    entry = _files_by_path(sovnet_with_key, cid_b)["sovnet-tiny.gguf"]
    flip_byte(state_dir / "blobs" / str(entry["blake3"]), 1000)
    result = sovnet_with_key("verify", "--all")
    assert result.returncode == 5, result.stderr
    assert f"ok    {cid_a}  acme/first" in result.stdout
    assert f"FAIL  {cid_b}  acme/second: sovnet-tiny.gguf" in result.stdout
    assert "1 of 2 models intact and trusted." in result.stderr
    rows = json.loads(sovnet_with_key("verify", "--all", "--json").stdout)
    assert [(r["cid"], r["ok"]) for r in rows] == sorted([(cid_a, True), (cid_b, False)])
    both = sovnet_with_key("verify", cid_a, "--all")
    assert both.returncode == 4 and "a MODEL or --all" in both.stderr


# -- 4. trust decides whether verify passes ------------------------------------------


def test_verify_without_trusted_signer_exits_6_until_trusted_again(
    sovnet: Runner, tiny_gguf_dir: Path
) -> None:
    key = sovnet.json("key", "gen")
    cid = sovnet.publish(tiny_gguf_dir)

    listed = sovnet.json("trust", "ls")
    assert listed == [
        {"key_id": key["key_id"], "name": "this node", "public_key": key["public_key"]}
    ]

    removed = sovnet("trust", "rm", "this node")
    assert removed.returncode == 0, removed.stderr
    assert sovnet.json("trust", "ls") == []

    untrusted = sovnet("verify", cid)
    assert untrusted.returncode == 6
    assert "not trusted" in untrusted.stdout + untrusted.stderr
    assert "sovnet trust add" in untrusted.stderr  # the hint says what to do
    report = json.loads(sovnet("verify", cid, "--json").stdout)
    assert report["ok"] is False and report["intact"] is True and report["trusted"] is False

    added = sovnet("trust", "add", key["key_id"], "--name", "x")
    assert added.returncode == 0, added.stderr
    assert sovnet("verify", cid).returncode == 0
    listed = sovnet.json("trust", "ls")
    assert [(k["key_id"], k["name"]) for k in listed] == [(key["key_id"], "x")]


def test_trust_rm_by_key_id_and_add_by_public_key(sovnet: Runner, tiny_gguf_dir: Path) -> None:
    key = sovnet.json("key", "gen")
    cid = sovnet.publish(tiny_gguf_dir)

    assert sovnet("trust", "rm", key["key_id"]).returncode == 0
    assert sovnet("verify", cid).returncode == 6

    added = sovnet.json("trust", "add", key["public_key"], "--name", "me again")
    assert added["key_id"] == key["key_id"]
    assert sovnet("verify", cid).returncode == 0
    assert sovnet.json("trust", "ls") == [
        {"key_id": key["key_id"], "name": "me again", "public_key": key["public_key"]}
    ]


def _typo(key_id: str, at: int) -> str:
    """``key_id`` with the character at ``at`` replaced by another of base32's."""
    replacement = "A" if key_id[at] != "A" else "B"
    return key_id[:at] + replacement + key_id[at + 1 :]


def test_trust_add_refuses_a_mistyped_key_id_and_trusts_nothing(sovnet: Runner) -> None:
    key = sovnet.json("key", "gen")
    other = Runner(sovnet.state_dir.parent / "other").json("key", "gen")
    assert len(key["key_id"].split("-")) == 9  # key show / gen print the checked form
    before = sovnet.json("trust", "ls")
    for typo in (_typo(other["key_id"], 0), _typo(other["key_id"], 20)):
        result = sovnet("trust", "add", typo, "--name", "alice")
        assert result.returncode == 4, (typo, result.stderr)
        assert "key id check group does not match: a typo?" in result.stderr
    assert sovnet.json("trust", "ls") == before
    added = sovnet.json("trust", "add", other["key_id"].lower(), "--name", "alice")
    assert added["key_id"] == other["key_id"]


def test_trust_add_of_a_key_id_without_its_check_group_says_what_to_give(
    sovnet_with_key: Runner,
) -> None:
    other = Runner(sovnet_with_key.state_dir.parent / "other").json("key", "gen")
    short = "-".join(other["key_id"].split("-")[:8])
    result = sovnet_with_key("trust", "add", short, "--name", "alice")
    assert result.returncode == 4, result.stderr
    assert "no check group" in result.stderr
    assert "sovnet key show" in result.stderr and "ed25519:" in result.stderr
    assert [k["name"] for k in sovnet_with_key.json("trust", "ls")] == ["this node"]
    # A trust file written before the check group keeps working, and `trust rm` of
    # the 8-group form (as such a file or an older sovnet shows it) still finds the key.
    sovnet_with_key.json("trust", "add", other["public_key"], "--name", "alice")
    assert sovnet_with_key("trust", "rm", short).returncode == 0
    assert [k["name"] for k in sovnet_with_key.json("trust", "ls")] == ["this node"]


def test_trust_rm_of_unknown_name_exits_3(sovnet_with_key: Runner) -> None:
    result = sovnet_with_key("trust", "rm", "nobody")
    assert result.returncode == 3
    assert "nobody" in result.stderr


# -- 5. publish refuses unsafe or malformed models and stores nothing ----------------


def _assert_refused(sovnet: Runner, state: Path, path: Path, named: str) -> None:
    result = sovnet("publish", path, "--name", "acme/bad")
    assert result.returncode == 4, (result.stdout, result.stderr)
    assert result.stdout == ""  # no CID
    assert named in result.stderr
    as_json = sovnet("publish", path, "--name", "acme/bad", "--json")
    assert as_json.returncode == 4
    error = json.loads(as_json.stdout)["error"]
    assert error["exit_code"] == 4
    assert named in error["message"]
    assert_store_empty(state)
    assert _ls(sovnet) == []


def test_a_version_published_again_with_other_content_is_refused(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    """name@version names one model for ever: the same content again is fine, other
    content is refused before anything is written or made read-only."""
    first, second = tmp_path / "first", tmp_path / "second"
    for model, text in ((first, '{"a": 1}'), (second, '{"a": 2}')):
        model.mkdir()
        (model / "config.json").write_text(text)
    cid = sovnet_with_key.json("publish", first, "--name", "acme/x", "--version", "1")["cid"]
    refused = sovnet_with_key("publish", second, "--name", "acme/x", "--version", "1")
    assert refused.returncode == 4, refused.stderr
    assert f"acme/x@1 is published here already as {cid}" in refused.stderr
    assert (second / "config.json").stat().st_mode & 0o200  # still the user's, writable
    assert [m["cid"] for m in _ls(sovnet_with_key)] == [cid]
    again = sovnet_with_key.json("publish", first, "--name", "acme/x", "--version", "1")
    assert again["cid"] == cid
    other = sovnet_with_key.json("publish", second, "--name", "acme/x", "--version", "2")
    assert other["cid"] != cid


def test_publish_refuses_pt_file(sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path):
    (tiny_gguf_dir / "weights.pt").write_bytes(b"\x80\x04not really a pickle")
    _assert_refused(sovnet_with_key, state_dir, tiny_gguf_dir, "weights.pt")
    assert "pickle" in sovnet_with_key("publish", tiny_gguf_dir, "--name", "a/b").stderr


def test_publish_refuses_symlink(sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path):
    (tiny_gguf_dir / "alias.json").symlink_to("config.json")
    _assert_refused(sovnet_with_key, state_dir, tiny_gguf_dir, "alias.json")
    assert "symbolic link" in sovnet_with_key("publish", tiny_gguf_dir, "--name", "a/b").stderr


def test_publish_refuses_gguf_with_bad_magic(
    sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path
) -> None:
    corrupt_gguf_magic(tiny_gguf_dir / "sovnet-tiny.gguf")
    _assert_refused(sovnet_with_key, state_dir, tiny_gguf_dir, "sovnet-tiny.gguf")


def test_publish_refuses_gguf_with_huge_tensor_count(
    sovnet_with_key: Runner, tmp_path: Path, state_dir: Path
) -> None:
    model = tmp_path / "model"
    write_companions(model)
    gguf_path = write_gguf(model / "small.gguf")
    corrupt_gguf_tensor_count(gguf_path, 2**40)
    _assert_refused(sovnet_with_key, state_dir, model, "small.gguf")
    assert "tensor count" in sovnet_with_key("publish", model, "--name", "a/b").stderr


def test_publish_refuses_bin_file(sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path):
    (tiny_gguf_dir / "pytorch_model.bin").write_bytes(b"PK\x03\x04 zip of pickles")
    _assert_refused(sovnet_with_key, state_dir, tiny_gguf_dir, "pytorch_model.bin")


def test_publish_refuses_empty_directory(
    sovnet_with_key: Runner, tmp_path: Path, state_dir: Path
) -> None:
    empty = tmp_path / "empty-model"
    (empty / "nested" / "deeper").mkdir(parents=True)
    _assert_refused(sovnet_with_key, state_dir, empty, "empty-model")
    assert "no files" in sovnet_with_key("publish", empty, "--name", "a/b").stderr


def test_publish_refuses_fifo(sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path):
    os.mkfifo(tiny_gguf_dir / "pipe.json")
    _assert_refused(sovnet_with_key, state_dir, tiny_gguf_dir, "pipe.json")


def test_publish_refuses_fifo_named_directly(
    sovnet_with_key: Runner, tmp_path: Path, state_dir: Path
) -> None:
    fifo = tmp_path / "model.gguf"
    os.mkfifo(fifo)
    _assert_refused(sovnet_with_key, state_dir, fifo, "model.gguf")


def test_publish_refuses_missing_path(sovnet_with_key: Runner, tmp_path: Path, state_dir: Path):
    _assert_refused(sovnet_with_key, state_dir, tmp_path / "no-such-model", "no-such-model")


def test_publish_refusal_leaves_existing_models_alone(
    sovnet_with_key: Runner, tiny_gguf_dir: Path, tmp_path: Path, state_dir: Path
) -> None:
    cid = sovnet_with_key.publish(tiny_gguf_dir)
    before = store_entries(state_dir)
    bad = tmp_path / "bad"
    write_companions(bad)
    (bad / "model.ckpt").write_bytes(b"pickle")
    result = sovnet_with_key("publish", bad, "--name", "acme/bad")
    assert result.returncode == 4
    assert "model.ckpt" in result.stderr
    assert store_entries(state_dir) == before
    assert [row["cid"] for row in _ls(sovnet_with_key)] == [cid]


# -- 6. errors: missing key, bad CIDs, JSON errors --------------------------------


def test_publish_without_key_exits_3_with_key_gen_hint(
    sovnet: Runner, tiny_gguf_dir: Path, state_dir: Path
) -> None:
    result = sovnet("publish", tiny_gguf_dir, "--name", "acme/tiny")
    assert result.returncode == 3
    assert result.stdout == ""
    assert "sovnet key gen" in result.stderr
    assert_store_empty(state_dir)


def test_json_error_is_an_object_on_stdout(sovnet: Runner, tiny_gguf_dir: Path) -> None:
    result = sovnet("publish", tiny_gguf_dir, "--name", "acme/tiny", "--json")
    assert result.returncode == 3
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "not-found"
    assert error["exit_code"] == 3
    assert "sovnet key gen" in error["hint"]


INVALID_CIDS = [
    "notacid",
    "",
    "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",  # CIDv0
    UNKNOWN_CID.upper(),  # base32 upper
    UNKNOWN_CID[:-1],  # too short
    UNKNOWN_CID[:-1] + "b",  # non-canonical slack bits
    "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",  # sha2-256 dag-pb
]


@pytest.mark.parametrize(
    ("command", "texts"),
    [("show", INVALID_CIDS), ("verify", INVALID_CIDS[:2]), ("rm", INVALID_CIDS[:2])],
    ids=["show", "verify", "rm"],
)
def test_invalid_cid_exits_4(sovnet: Runner, command: str, texts: list[str]) -> None:
    for text in texts:
        result = sovnet(command, text)
        assert result.returncode == 4, (text, result.stdout, result.stderr)
        assert "CID" in result.stderr, text
        as_json = sovnet(command, text, "--json")
        assert as_json.returncode == 4, text
        assert json.loads(as_json.stdout)["error"]["code"] == "invalid-cid", text


@pytest.mark.parametrize("command", ["show", "verify", "rm"])
def test_unknown_cid_exits_3(sovnet_with_key: Runner, command: str) -> None:
    result = sovnet_with_key(command, UNKNOWN_CID)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert UNKNOWN_CID in result.stderr
    as_json = sovnet_with_key(command, UNKNOWN_CID, "--json")
    assert as_json.returncode == 3
    assert json.loads(as_json.stdout)["error"]["code"] == "not-found"


def test_show_raw_of_unknown_cid_exits_3(sovnet_with_key: Runner) -> None:
    result = sovnet_with_key("show", UNKNOWN_CID, "--raw")
    assert result.returncode == 3
    assert result.stdout == ""


def test_rm_unknown_cid_on_fresh_state_dir_exits_3(sovnet: Runner, state_dir: Path) -> None:
    result = sovnet("rm", UNKNOWN_CID)
    assert result.returncode == 3, result.stderr
    assert f"{state_dir} is not a sovnet node" in result.stderr
    assert not state_dir.exists()


def test_show_raw_and_json_together_exit_4(sovnet_with_key: Runner, tiny_gguf_dir: Path):
    cid = sovnet_with_key.publish(tiny_gguf_dir)
    result = sovnet_with_key("show", cid, "--raw", "--json")
    assert result.returncode == 4
    assert json.loads(result.stdout)["error"]["code"] == "invalid-input"


def test_key_gen_twice_exits_4_and_keeps_the_key(sovnet: Runner) -> None:
    first = sovnet.json("key", "gen")
    again = sovnet("key", "gen")
    assert again.returncode == 4
    assert "--force" in again.stderr
    shown = sovnet.json("key", "show")
    assert (shown["key_id"], shown["public_key"]) == (first["key_id"], first["public_key"])


def test_invalid_model_name_exits_4(sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir):
    result = sovnet_with_key("publish", tiny_gguf_dir, "--name", "no-slash")
    assert result.returncode == 4
    assert "no-slash" in result.stderr
    assert_store_empty(state_dir)


def test_usage_error_exits_2(sovnet: Runner, tiny_gguf_dir: Path) -> None:
    result = sovnet("publish", tiny_gguf_dir)  # --name is required
    assert result.returncode == 2
    assert "--name" in result.stderr
    assert sovnet("no-such-command").returncode == 2


def test_state_dir_option_overrides_environment(sovnet: Runner, tmp_path: Path) -> None:
    other = tmp_path / "other-state"
    key = json.loads(sovnet("--state-dir", other, "key", "gen", "--json", check=True).stdout)
    assert (other / "keys" / "publisher.pem").is_file()
    assert stat.S_IMODE((other / "keys" / "publisher.pem").stat().st_mode) == 0o600
    assert not sovnet.state_dir.exists()
    shown = sovnet("key", "show", state_dir=other, check=True).stdout
    assert key["key_id"] in shown


# -- 7. ls and rm ------------------------------------------------------------------


def test_ls_json_lists_models(sovnet: Runner, tiny_gguf_dir: Path) -> None:
    key = sovnet.json("key", "gen")
    assert _ls(sovnet) == []
    cid = sovnet.publish(tiny_gguf_dir, "acme/tiny", "--version", "1.0")
    size = sum(p.stat().st_size for p in tiny_gguf_dir.iterdir())
    assert _ls(sovnet) == [
        {
            "cid": cid,
            "name": "acme/tiny",
            "version": "1.0",
            "size": size,
            "files": 3,
            "trusted": True,
            "signers": [
                {
                    "key_id": key["key_id"],
                    "public_key": key["public_key"],
                    "valid": True,
                    "trusted_as": "this node",
                }
            ],
            "released_as": None,  # no pinned publisher root released it
            "pinned": False,  # garbage collection may remove it (`sovnet pin` keeps it)
        }
    ]
    table = sovnet("ls", check=True).stdout
    assert cid in table and "acme/tiny" in table and "this node" in table


def test_rm_removes_model_and_frees_its_blobs(
    sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path
) -> None:
    cid = sovnet_with_key.publish(tiny_gguf_dir)
    size = sum(p.stat().st_size for p in tiny_gguf_dir.iterdir())
    removed = sovnet_with_key.json("rm", cid)
    # Published by hard link (no --copy): the source files still hold the bytes, so
    # the disk gets none back, and rm says so instead of counting them as freed.
    assert removed == {"removed": cid, "freed_bytes": 0, "blobs_removed": 3, "held_bytes": size}
    assert _ls(sovnet_with_key) == []
    assert_store_empty(state_dir)
    assert sovnet_with_key("show", cid).returncode == 3
    assert sovnet_with_key("rm", cid).returncode == 3
    # the source files are untouched
    assert sorted(p.name for p in tiny_gguf_dir.iterdir()) == [
        "README.md",
        "config.json",
        "sovnet-tiny.gguf",
    ]


def test_rm_keeps_blob_shared_with_another_model(
    sovnet_with_key: Runner, tmp_path: Path, state_dir: Path
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    write_tiny_gguf(first, seed=1)
    write_tiny_gguf(second, seed=2)
    for model in (first, second):
        (model / "config.json").write_text('{"shared": true}\n')
    cid_a = sovnet_with_key.publish(first, "acme/first")
    cid_b = sovnet_with_key.publish(second, "acme/second")
    files_a = _files_by_path(sovnet_with_key, cid_a)
    files_b = _files_by_path(sovnet_with_key, cid_b)
    shared = files_a["config.json"]["blake3"]
    assert shared == files_b["config.json"]["blake3"]
    assert len(store_entries(state_dir)["blobs"]) == 3

    removed = sovnet_with_key.json("rm", cid_a)
    assert removed["blobs_removed"] == 1
    assert removed["held_bytes"] == files_a["sovnet-tiny.gguf"]["size"]  # first/ links it
    assert sorted(store_entries(state_dir)["blobs"]) == sorted(
        [shared, files_b["sovnet-tiny.gguf"]["blake3"]]
    )
    assert [row["cid"] for row in _ls(sovnet_with_key)] == [cid_b]
    assert sovnet_with_key("verify", cid_b).returncode == 0


# -- 8. deterministic CIDs; --copy vs hard links ------------------------------------


def test_publishing_twice_gives_the_same_cid(
    sovnet_with_key: Runner, tiny_gguf_dir: Path, state_dir: Path
) -> None:
    first = sovnet_with_key.publish(tiny_gguf_dir)
    before = store_entries(state_dir)
    second = sovnet_with_key.publish(tiny_gguf_dir)
    assert first == second
    assert store_entries(state_dir) == before
    assert len(_ls(sovnet_with_key)) == 1


def test_publish_copy_gives_same_cid_and_a_separate_inode(
    sovnet: Runner, tiny_gguf_dir: Path, tmp_path: Path
) -> None:
    source = tiny_gguf_dir / "sovnet-tiny.gguf"
    linked_state, copied_state = tmp_path / "linked", tmp_path / "copied"
    sovnet("key", "gen", state_dir=copied_state, check=True)
    sovnet("key", "gen", state_dir=linked_state, check=True)

    copied = sovnet("publish", tiny_gguf_dir, "--name", "acme/tiny", "--copy", "--json",
                    state_dir=copied_state, check=True)  # fmt: skip
    copied_info = json.loads(copied.stdout)
    assert (copied_info["linked"], copied_info["copied"]) == (0, 3)
    blob_hex = _files_by_path(Runner(copied_state), copied_info["cid"])["sovnet-tiny.gguf"][
        "blake3"
    ]
    copied_blob = copied_state / "blobs" / str(blob_hex)
    assert not os.path.samefile(copied_blob, source)
    assert copied_blob.read_bytes() == source.read_bytes()
    assert stat.S_IMODE(copied_blob.stat().st_mode) == 0o444
    assert stat.S_IMODE(source.stat().st_mode) != 0o444  # --copy leaves the source alone

    linked = sovnet("publish", tiny_gguf_dir, "--name", "acme/tiny", "--json",
                    state_dir=linked_state, check=True)  # fmt: skip
    linked_info = json.loads(linked.stdout)
    assert linked_info["cid"] == copied_info["cid"]
    assert (linked_info["linked"], linked_info["copied"]) == (3, 0)
    linked_blob = linked_state / "blobs" / str(blob_hex)
    assert os.path.samefile(linked_blob, source)
    assert (linked_state / "models" / linked_info["cid"] / "sovnet-tiny.gguf").samefile(source)


# -- 9. single GGUF files and split GGUFs -----------------------------------------


def test_single_gguf_file_publishes(sovnet_with_key: Runner, tmp_path: Path) -> None:
    (gguf_path,) = write_tiny_gguf(tmp_path / "out")
    cid = sovnet_with_key.publish(gguf_path, "acme/single")
    manifest = _manifest(sovnet_with_key, cid)
    (entry,) = manifest["files"]
    assert entry["path"] == "sovnet-tiny.gguf"
    assert entry["size"] == gguf_path.stat().st_size
    assert entry["format"] == "gguf"
    assert entry["facts"]["architecture"] == "llama"
    assert entry["facts"]["tensor_count"] == 21
    assert entry["facts"]["split_count"] is None
    assert sovnet_with_key("verify", cid).returncode == 0


def test_split_gguf_publishes_with_split_facts(sovnet_with_key: Runner, tmp_path: Path) -> None:
    model = tmp_path / "split"
    shards = write_tiny_gguf(model, split=2)
    assert [p.name for p in shards] == [
        "sovnet-tiny-00001-of-00002.gguf",
        "sovnet-tiny-00002-of-00002.gguf",
    ]
    cid = sovnet_with_key.publish(model, "acme/split")
    files = _files_by_path(sovnet_with_key, cid)
    assert set(files) == {p.name for p in shards}
    facts = [files[p.name]["facts"] for p in shards]
    assert [(f["split_no"], f["split_count"]) for f in facts] == [(0, 2), (1, 2)]
    assert sum(f["tensor_count"] for f in facts) == 21
    table = sovnet_with_key("show", cid, check=True).stdout
    assert "split 1/2" in table and "split 2/2" in table


# -- 10. help -------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["key"],
        ["key", "gen"],
        ["key", "show"],
        ["trust"],
        ["trust", "add"],
        ["trust", "ls"],
        ["trust", "rm"],
        ["publish"],
        ["ls"],
        ["show"],
        ["verify"],
        ["rm"],
        ["status"],
        ["fetch"],
        ["peers", "add"],
        ["peers", "ls"],
        ["peers", "rm"],
        ["network", "create"],
        ["network", "request"],
        ["network", "invite"],
        ["network", "join"],
        ["network", "show"],
    ],
    ids=lambda c: " ".join(c) or "sovnet",
)
def test_help_exits_0(sovnet: Runner, command: list[str], state_dir: Path) -> None:
    result = sovnet(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert not state_dir.exists()  # --help touches nothing


def test_sovnetd_help_lists_its_settings(sovnet: Runner, state_dir: Path) -> None:
    result = sovnet("--help", program=SOVNETD)
    assert result.returncode == 0, result.stderr
    for option in ("--config", "--state-dir", "--swarm-listen", "--control-listen", "--peer"):
        assert option in result.stdout
    assert not state_dir.exists()


# -- 11. a state directory that is not a node is an error naming it ------------------


# Every command that reads a node, with arguments that would otherwise be valid.
READING_COMMANDS = [
    ["ls"],
    ["show", UNKNOWN_CID],
    ["verify", UNKNOWN_CID],
    ["rm", UNKNOWN_CID],
    ["key", "show"],
    ["trust", "ls"],
    ["trust", "rm", "alice"],
    ["trust", "add", "ed25519:" + "03" * 32, "--name", "alice"],
    ["run", UNKNOWN_CID, "-p", "hi"],
    ["export", UNKNOWN_CID, "--hf-cache", "hf"],
    ["status"],
    ["fetch", UNKNOWN_CID],
    ["peers", "ls"],
    ["network", "show"],
]


@pytest.mark.parametrize("command", READING_COMMANDS, ids=" ".join)
def test_a_mistyped_state_dir_is_an_error_naming_it(
    sovnet_with_key: Runner, tmp_path: Path, command: list[str]
) -> None:
    typo = tmp_path / "stat"  # the node is tmp_path / "state"
    result = sovnet_with_key(*command, state_dir=typo)
    assert result.returncode == 3, (result.stdout, result.stderr)
    assert f"{typo} is not a sovnet node: it does not exist" in result.stderr
    assert "--state-dir" in result.stderr  # the hint: check it, or make a node
    assert "key gen" in result.stderr
    assert not typo.exists()
    if command[0] != "run":  # every other one has --json
        as_json = sovnet_with_key(*command, "--json", state_dir=typo)
        assert as_json.returncode == 3
        error = json.loads(as_json.stdout)["error"]
        assert error["code"] == "not-found" and str(typo) in error["message"]


def test_a_directory_that_is_not_a_node_is_refused_and_left_alone(
    sovnet: Runner, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "photos"
    elsewhere.mkdir()
    (elsewhere / "cat.jpg").write_bytes(b"\xff\xd8")
    for command in (["ls"], ["key", "show"], ["trust", "ls"]):
        result = sovnet(*command, state_dir=elsewhere)
        assert result.returncode == 3, result.stderr
        assert f"{elsewhere} is not a sovnet node" in result.stderr
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    result = sovnet("ls", state_dir=a_file)
    assert result.returncode == 3
    assert "it is not a directory" in result.stderr
    assert sorted(p.name for p in elsewhere.iterdir()) == ["cat.jpg"]


def test_sovnetd_on_a_mistyped_state_dir_exits_3_and_makes_nothing(tmp_path: Path) -> None:
    typo = tmp_path / "stat"
    result = Runner(typo)("--state-dir", typo, program=SOVNETD)
    assert result.returncode == 3, result.stderr
    assert f"{typo} is not a sovnet node: it does not exist" in result.stderr
    assert not typo.exists()


def test_an_empty_store_names_its_state_dir(sovnet_with_key: Runner, state_dir: Path) -> None:
    result = sovnet_with_key("ls", check=True)
    assert f"The store is empty (state dir {state_dir})." in result.stderr


@pytest.mark.parametrize(
    "command",
    [["key", "gen"], ["network", "create", "lab"], ["network", "request"]],
    ids=" ".join,
)
def test_the_commands_that_start_a_node_make_one(
    sovnet: Runner, state_dir: Path, command: list[str]
) -> None:
    sovnet(*command, check=True)
    assert (state_dir / "sovnet-node").read_bytes() == b'{"sovnet_node":1}\n'
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert sovnet("ls").returncode == 0


def test_key_gen_does_not_make_a_node_of_a_directory_holding_other_things(
    sovnet: Runner, tmp_path: Path
) -> None:
    documents = tmp_path / "Documents"
    documents.mkdir()
    (documents / "letter.txt").write_text("dear")
    for command in (["key", "gen"], ["network", "create", "lab"]):
        result = sovnet(*command, state_dir=documents)
        assert result.returncode == 4, result.stderr
        assert f"{documents} is not a sovnet node and is not empty" in result.stderr
    assert sorted(p.name for p in documents.iterdir()) == ["letter.txt"]
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)  # as systemd's StateDirectory= or `install -d` leaves it
    sovnet("key", "gen", state_dir=empty, check=True)


def test_network_join_makes_a_node_of_a_fresh_state_dir(sovnet: Runner, tmp_path: Path) -> None:
    owner = Runner(tmp_path / "owner")
    owner("network", "create", "lab", check=True)
    invite = tmp_path / "new.invite"
    owner("network", "invite", "--new-node", "new", "-o", invite, check=True)
    joined = sovnet.json("network", "join", invite)
    assert joined["node"] == "new" and joined["network"] == "lab"
    assert (sovnet.state_dir / "sovnet-node").is_file()
    assert sovnet.json("network", "show")["node"] == "new"


def test_a_node_made_before_the_marker_keeps_working(
    sovnet: Runner, tiny_gguf_dir: Path, state_dir: Path
) -> None:
    key = sovnet.json("key", "gen")
    cid = sovnet.publish(tiny_gguf_dir)
    (state_dir / "sovnet-node").unlink()  # as an earlier sovnet left it
    assert [row["cid"] for row in _ls(sovnet)] == [cid]
    assert sovnet.json("key", "show")["key_id"] == key["key_id"]
    assert sovnet("verify", cid).returncode == 0
    assert not (state_dir / "sovnet-node").exists()  # reading it changed nothing


def test_a_node_of_a_newer_format_is_refused(sovnet_with_key: Runner, state_dir: Path) -> None:
    (state_dir / "sovnet-node").write_text('{"sovnet_node":2}\n')
    result = sovnet_with_key("ls")
    assert result.returncode == 7, result.stderr
    assert "format 2" in result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as a full disk needs root")
def test_publish_copy_onto_a_full_disk_says_so_and_publishes_nothing(
    sovnet: Runner, tmp_path: Path
) -> None:
    from tests.e2e.conftest import make_model
    from tests.e2e.test_disk_full import small_disk

    model = make_model(tmp_path / "big", megabytes=16)
    with small_disk(tmp_path / "small", 8) as small:
        state = small / "state"
        sovnet("key", "gen", state_dir=state, check=True)
        done = sovnet("publish", model, "--name", "acme/big", "--copy", state_dir=state)
        assert done.returncode == 7, done.stderr
        [line] = [line for line in done.stderr.splitlines() if line.startswith("sovnet: error:")]
        assert "full" in line and "MiB" in line, done.stderr
        assert "nothing was published" in done.stderr
        assert "Traceback" not in done.stderr
        assert_store_empty(state)
