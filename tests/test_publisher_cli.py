"""The publisher-root ceremony through the CLI, as three people on three machines do it:
three state directories, one file passed from hand to hand."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path

from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata
from tuf.ngclient import FetcherInterface, Updater

from tests.conftest import Runner, write_tiny_gguf


def _holders(tmp_path: Path) -> list[tuple[Runner, Path]]:
    """Three nodes with a publisher key each, and the public key each sends out."""
    holders = []
    for name in ("uni", "lab", "cert"):
        sovnet = Runner(tmp_path / name)
        sovnet("key", "gen", check=True)
        public = tmp_path / f"{name}.pub"
        public.write_text(sovnet("key", "show", "--public", check=True).stdout)
        holders.append((sovnet, public))
    return holders


def test_three_holders_make_a_2_of_3_root_by_passing_one_file(tmp_path: Path) -> None:
    (uni, uni_pub), (lab, lab_pub), (cert, cert_pub) = _holders(tmp_path)
    root = tmp_path / "root.json"
    made = uni(
        "publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub, "--key", cert_pub,
        "--threshold", "2", "-o", root,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "version 1" in made.stderr and "0 of 3 keys (needs 2)" in made.stderr

    early = uni("publisher", "finish", root)
    assert early.returncode == 6 and "not enough" in early.stderr

    uni("publisher", "sign", root, check=True)  # with uni's own node key
    one = uni("publisher", "finish", root)
    assert one.returncode == 6 and "1 of 3 keys" in one.stderr
    signed = cert("publisher", "sign", root, "--json", check=True)
    assert json.loads(signed.stdout)["complete"] is True

    done = lab.json("publisher", "finish", root)
    assert done["publisher"] == "acme" and len(done["signed_by"]) == 2


def test_a_stolen_key_is_rotated_out_by_the_other_two(tmp_path: Path) -> None:
    (uni, uni_pub), (lab, lab_pub), (cert, cert_pub) = _holders(tmp_path)
    root = tmp_path / "root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub, "--key", cert_pub,
        "--threshold", "2", "-o", root, check=True)  # fmt: skip
    uni("publisher", "sign", root, check=True)
    lab("publisher", "sign", root, check=True)
    stolen = next(
        k for k in uni.json("publisher", "status", root)["keys"]
        if k not in lab.json("publisher", "status", root)["signed_by"]
    )  # fmt: skip
    new = Runner(tmp_path / "newcert")
    new("key", "gen", check=True)
    new_pub = tmp_path / "new.pub"
    new_pub.write_text(new.json("key", "show")["public_key"])

    v2 = tmp_path / "2.root.json"
    rotated = uni("publisher", "rotate", root, "--remove", stolen[:10], "--add", new_pub, "-o", v2)
    assert rotated.returncode == 0, rotated.stderr
    # The thief cannot sign the new version as one of its keys.
    thief = cert("publisher", "sign", v2)
    assert thief.returncode == 6 and "not one of this root's keys" in thief.stderr
    for holder in (uni, new):
        holder("publisher", "sign", v2, "--previous", root, check=True)
    half = uni("publisher", "finish", v2, "--previous", root)
    assert half.returncode == 6, half.stderr  # one old key: not the old threshold
    lab("publisher", "sign", v2, "--previous", root, check=True)
    assert uni.json("publisher", "finish", v2, "--previous", root)["complete"] is True


def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    (uni, uni_pub), _, _ = _holders(tmp_path)
    root = tmp_path / "root.json"
    too_many = uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "2", "-o", root)
    assert too_many.returncode == 4 and "cannot be met by 1" in too_many.stderr
    assert not root.exists()
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello\n")
    refused = uni("publisher", "init", "acme", "--key", garbage, "--threshold", "1", "-o", root)
    assert refused.returncode == 4 and "not a public key" in refused.stderr
    uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "1", "-o", root, check=True)
    again = uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "1", "-o", root)
    assert again.returncode == 4 and "exists" in again.stderr
    before = root.read_bytes()
    not_a_root = uni("publisher", "sign", garbage)
    assert not_a_root.returncode == 4 and "Traceback" not in not_a_root.stderr
    assert root.read_bytes() == before


def test_a_node_pins_a_complete_root_and_says_its_fingerprint(tmp_path: Path) -> None:
    (uni, uni_pub), (lab, lab_pub), _ = _holders(tmp_path)
    root = tmp_path / "root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub,
        "--threshold", "2", "-o", root, check=True)  # fmt: skip
    uni("publisher", "sign", root, check=True)
    node = Runner(tmp_path / "node")
    node("key", "gen", check=True)

    half = node("trust", "add", root)
    assert half.returncode == 6 and "needs 2" in half.stderr
    assert node.json("trust", "roots") == []

    lab("publisher", "sign", root, check=True)
    pinned = node("trust", "add", root)
    assert pinned.returncode == 0, pinned.stderr
    [listed] = node.json("trust", "roots")
    assert listed["publisher"] == "acme" and listed["version"] == 1
    assert listed["fingerprint"] in pinned.stderr  # to compare out loud
    assert node("trust", "add", root).returncode == 0  # the same root again: nothing changes

    other = tmp_path / "other.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "1", "-o", other,
        check=True)  # fmt: skip
    uni("publisher", "sign", other, check=True)
    refused = node("trust", "add", other)
    assert refused.returncode == 4 and "version 1 of acme's root is pinned" in refused.stderr
    assert node.json("trust", "roots")[0]["fingerprint"] == listed["fingerprint"]
    node("trust", "add", other, "--replace", check=True)
    assert node.json("trust", "roots")[0]["threshold"] == 1

    # A publisher whose name differs from a pinned one's only in case is refused: on a
    # case-insensitive file system they would be one directory, to a person one name.
    upper = tmp_path / "upper.json"
    uni("publisher", "init", "ACME", "--key", uni_pub, "--threshold", "1", "-o", upper,
        check=True)  # fmt: skip
    uni("publisher", "sign", upper, check=True)
    lookalike = node("trust", "add", upper)
    assert lookalike.returncode == 4 and "only in case" in lookalike.stderr
    assert [r["publisher"] for r in node.json("trust", "roots")] == ["acme"]
    # Unpinned by its name, then ACME can be pinned.
    assert node("trust", "rm", "acme").returncode == 0
    assert node.json("trust", "roots") == []
    node("trust", "add", upper, check=True)
    assert [r["publisher"] for r in node.json("trust", "roots")] == ["ACME"]

    no_name = node("trust", "add", uni("key", "show", "--public", check=True).stdout.strip())
    assert no_name.returncode == 4 and "--name is required" in no_name.stderr


def test_a_publisher_node_releases_what_holders_signed_and_a_tuf_client_verifies_it(
    tmp_path: Path,
) -> None:
    (uni, uni_pub), (lab, lab_pub), (_, cert_pub) = _holders(tmp_path)
    node = uni  # uni's node publishes for acme: its key is the online key
    root = tmp_path / "root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub, "--key", cert_pub,
        "--threshold", "2", "--online-key", uni_pub, "-o", root, check=True)  # fmt: skip
    for holder in (uni, lab):
        holder("publisher", "sign", root, check=True)
    installed = node("publisher", "install", root, check=True).stderr
    from sovnet.store.rootfiles import fingerprint

    assert f"fingerprint {fingerprint(root.read_bytes())}" in installed  # to read out loud

    model = tmp_path / "model"
    write_tiny_gguf(model)
    cid = node.publish(model, "acme/tiny", "--version", "1.0")
    release = tmp_path / "release.json"
    node("publisher", "release", "acme/tiny@1.0", "-o", release, check=True)
    early = node("publisher", "install", release)
    assert early.returncode == 6 and "needs 2" in early.stderr
    signed = uni("publisher", "sign", release, check=True).stderr
    # A holder sees what they sign: the release, its CID, the channel moved.
    assert f"release acme/tiny@1.0 = {cid}" in signed, signed
    assert "expires 20" in signed and "holders sign the next releases" in signed
    assert "channel acme/tiny:latest -> 1.0" in signed
    assert lab.json("publisher", "status", release, "--root", root)["says"] == [
        f"release acme/tiny@1.0 = {cid}",
        "channel acme/tiny:latest -> 1.0",
    ]
    lab("publisher", "sign", release, "--root", root, check=True)  # lab is not the publisher
    assert lab.json("publisher", "finish", release, "--root", root)["complete"] is True
    node("publisher", "install", release, check=True)

    repository = node.state_dir / "publishers" / "acme"
    assert sorted(p.name for p in repository.iterdir()) == [
        "1.root.json", "1.snapshot.json", "1.targets.json", "timestamp.json"
    ]  # fmt: skip

    class Files(FetcherInterface):
        def _fetch(self, url: str) -> Iterator[bytes]:
            path = repository / url.rsplit("/", 1)[1]
            if not path.is_file():
                raise DownloadHTTPError(f"{path.name} not found", 404)
            return iter([path.read_bytes()])

    pinned = tmp_path / "client"
    pinned.mkdir()
    client = Updater(str(pinned), "sovnet://acme/", fetcher=Files(), bootstrap=root.read_bytes())
    client.refresh()
    info = client.get_targetinfo("acme/tiny:latest")
    assert info is not None and info.custom["cid"] == cid
    # And with tuf's Metadata API alone: each file parses, and the root vouches for it.
    trusted = Metadata.from_bytes((repository / "1.root.json").read_bytes())
    trusted.verify_delegate("root", trusted)
    for role, name in [("targets", "1.targets.json"), ("snapshot", "1.snapshot.json"),
                       ("timestamp", "timestamp.json")]:  # fmt: skip
        trusted.verify_delegate(role, Metadata.from_bytes((repository / name).read_bytes()))


def test_finish_of_a_rotated_root_needs_the_previous_version(tmp_path: Path) -> None:
    (uni, uni_pub), (lab, lab_pub), _ = _holders(tmp_path)
    root, v2 = tmp_path / "root.json", tmp_path / "2.root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub,
        "--threshold", "2", "-o", root, check=True)  # fmt: skip
    for holder in (uni, lab):
        holder("publisher", "sign", root, check=True)
    uni("publisher", "rotate", root, "--threshold", "1", "-o", v2, check=True)
    uni("publisher", "sign", v2, "--previous", root, check=True)  # 1 of the old 2
    said = uni("publisher", "status", v2).stderr  # not "complete": the old were not checked
    assert "version 1's holders must sign too (--previous ROOT checks them)" in said, said
    assert uni.json("publisher", "status", v2)["previous_unchecked"] is True
    alone = uni("publisher", "finish", v2)  # complete by its own keys, 1 of 1 ...
    assert alone.returncode == 6 and "--previous" in alone.stderr, alone.stderr
    chained = uni("publisher", "finish", v2, "--previous", root)  # ... not by the old
    assert chained.returncode == 6, chained.stderr


def test_a_fifo_given_as_a_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    import os

    (uni, _), _, _ = _holders(tmp_path)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for args in (
        ["status", fifo],
        ["sign", fifo],
        ["init", "acme", "--key", fifo, "--threshold", "1", "-o", tmp_path / "x"],
    ):
        refused = uni("publisher", *args)
        assert refused.returncode == 4 and "not a regular file" in refused.stderr, args


def test_trust_add_takes_the_next_root_version_only_if_the_pinned_one_s_keys_signed_it(
    tmp_path: Path,
) -> None:
    (uni, uni_pub), (lab, lab_pub), _ = _holders(tmp_path)
    root, forged, v2 = tmp_path / "root.json", tmp_path / "forged.json", tmp_path / "2.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub,
        "--threshold", "2", "-o", root, check=True)  # fmt: skip
    for holder in (uni, lab):
        holder("publisher", "sign", root, check=True)
    node = Runner(tmp_path / "node")
    node("key", "gen", check=True)
    node("trust", "add", root, check=True)
    # One holder alone makes version 2, 1 of 1 of its own keys: complete by itself.
    uni("publisher", "rotate", root, "--threshold", "1", "-o", forged, check=True)
    uni("publisher", "sign", forged, "--previous", root, check=True)
    refused = node("trust", "add", forged)
    assert refused.returncode == 6 and "may be forged" in refused.stderr, refused.stderr
    assert "--replace" not in refused.stderr.split("hint:")[-1].replace("do not --replace", "")
    assert node.json("trust", "roots")[0]["version"] == 1
    # Signed by both old holders too: a rotation, taken without --replace.
    uni("publisher", "rotate", root, "--threshold", "1", "-o", v2, check=True)
    for holder in (uni, lab):
        holder("publisher", "sign", v2, "--previous", root, check=True)
    node("trust", "add", v2, check=True)
    assert node.json("trust", "roots")[0]["version"] == 2


def test_holders_signing_one_file_at_once_lose_no_signature(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import SOVNET, cli_env

    holders = _holders(tmp_path)
    root = tmp_path / "root.json"
    keys = [arg for _, pub in holders for arg in ("--key", str(pub))]
    holders[0][0]("publisher", "init", "acme", *keys, "--threshold", "3", "-o", root, check=True)
    signing = [
        subprocess.Popen(
            [str(SOVNET), "publisher", "sign", str(root)],
            env=cli_env(sovnet.state_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for sovnet, _ in holders
    ]
    assert [p.wait(timeout=60) for p in signing] == [0, 0, 0]
    assert len(holders[0][0].json("publisher", "status", root)["signed_by"]) == 3


def test_rotate_names_a_new_online_key_and_says_when_it_changes(tmp_path: Path) -> None:
    (uni, uni_pub), (_, lab_pub), (_, cert_pub) = _holders(tmp_path)
    root, v2 = tmp_path / "root.json", tmp_path / "2.root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub, "--key", cert_pub,
        "--threshold", "2", "--online-key", uni_pub, "-o", root, check=True)  # fmt: skip
    uni_id = json.loads(root.read_text())["signed"]["roles"]["timestamp"]["keyids"][0]
    rotated = uni("publisher", "rotate", root, "--remove", uni_id[:12],
                  "--online-key", cert_pub, "-o", v2)  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    roles = json.loads(v2.read_text())["signed"]["roles"]
    said = f"snapshot and timestamp are signed by key {roles['timestamp']['keyids'][0][:16]} now"
    assert said in rotated.stderr
    cert_id = json.loads(root.read_text())["signed"]["roles"]["root"]["keyids"]
    assert roles["timestamp"]["keyids"] == roles["snapshot"]["keyids"]
    assert roles["timestamp"]["keyids"][0] in cert_id and roles["timestamp"]["threshold"] == 1
    assert roles["timestamp"]["keyids"][0] != uni_id


def test_sign_never_edits_a_file_of_the_node_s_own(tmp_path: Path) -> None:
    (uni, uni_pub), _, _ = _holders(tmp_path)
    inside = uni.state_dir / "root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "1",
        "-o", tmp_path / "r.json", check=True)  # fmt: skip
    inside.write_bytes((tmp_path / "r.json").read_bytes())
    refused = uni("publisher", "sign", inside)
    assert refused.returncode == 4 and "state directory" in refused.stderr, refused.stderr


def test_a_root_that_breaks_tuf_s_rules_says_which(tmp_path: Path) -> None:
    (uni, uni_pub), _, _ = _holders(tmp_path)
    root = tmp_path / "root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "1", "-o", root,
        check=True)  # fmt: skip
    value = json.loads(root.read_text())
    value["signed"]["roles"]["root"]["threshold"] = 0
    root.write_text(json.dumps(value))
    said = uni("publisher", "status", root)
    assert said.returncode == 4 and "threshold" in said.stderr, said.stderr


def test_a_root_that_can_never_work_is_refused_and_an_expired_one_warned_of(
    tmp_path: Path,
) -> None:
    from sovnet.trust import publisher_root as pr

    (uni, uni_pub), _, _ = _holders(tmp_path)
    node = Runner(tmp_path / "node")
    node("key", "gen", check=True)
    for edit, code, said in [
        (("consistent_snapshot", False), 4, "can never work: consistent_snapshot is false"),
        (("expires", "2020-01-01T00:00:00Z"), 0, "warning: this root of acme expired on 2020"),
    ]:
        root = tmp_path / f"{edit[0]}.json"
        uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "1", "-o", root,
            check=True)  # fmt: skip
        value = json.loads(root.read_text())
        value["signed"][edit[0]] = edit[1]
        root.write_text(json.dumps(value))
        if code == 0:
            uni("publisher", "sign", root, check=True)
        else:  # a holder is refused to sign it; signed by hand, a node refuses to pin it
            refused = uni("publisher", "sign", root)
            assert refused.returncode == 6 and "signing it is refused" in refused.stderr
            key = (uni.state_dir / "keys" / "publisher.pem").read_bytes()
            root.write_bytes(pr.sign(root.read_bytes(), pr.signer(key)))
        pinned = node("trust", "add", root)
        assert pinned.returncode == code and said in pinned.stderr, pinned.stderr
    installed = uni("publisher", "install", tmp_path / "expires.json")
    assert installed.returncode == 4 and "cannot work: it expired" in installed.stderr
    assert "expired on 2020" in node("trust", "roots").stderr


def test_a_damaged_pinned_root_is_named_and_can_be_unpinned(tmp_path: Path) -> None:
    (uni, uni_pub), _, _ = _holders(tmp_path)
    root = tmp_path / "root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--threshold", "1", "-o", root,
        check=True)  # fmt: skip
    uni("publisher", "sign", root, check=True)
    node = Runner(tmp_path / "node")
    node("key", "gen", check=True)
    node("trust", "add", root, check=True)
    (node.state_dir / "roots" / "dupa").mkdir()
    (node.state_dir / "roots" / "dupa" / "root.json").write_text("garbage")
    huge = node.state_dir / "roots" / "huge"
    huge.mkdir()
    with open(huge / "root.json", "wb") as sparse:  # read with a bound, not whole
        sparse.truncate(4 << 30)
    listed = node("trust", "roots")
    assert listed.returncode == 0 and "acme" in listed.stdout
    assert "the pinned root of dupa" in listed.stderr and "damaged" in listed.stderr
    assert "the pinned root of huge" in listed.stderr and "over" in listed.stderr
    assert node("trust", "rm", "huge").returncode == 0
    assert node("trust", "rm", "dupa").returncode == 0
    assert "dupa" not in node("trust", "roots").stderr
    # A name that is both a key's and a root's is not guessed at.
    node("trust", "add", uni_pub.read_text().strip(), "--name", "acme", check=True)
    both = node("trust", "rm", "acme")
    assert both.returncode == 4 and "both a trusted key and a pinned" in both.stderr
    assert node("trust", "rm", "--root", "acme").returncode == 0
    assert node.json("trust", "roots") == []
    assert "acme" in [k["name"] for k in node.json("trust", "ls")]
    missing = node("trust", "rm", "nobody")
    assert missing.returncode == 3 and "no root of that publisher is pinned" in missing.stderr


def test_a_release_file_of_the_wrong_shape_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (uni, _), _, _ = _holders(tmp_path)
    for targets in (7, None, ["acme/x/1"]):
        crafted = tmp_path / "crafted.json"
        crafted.write_text(json.dumps({"signed": {"_type": "targets", "targets": targets}}))
        for command in ("status", "sign", "install"):
            said = uni("publisher", command, crafted)
            assert said.returncode == 4, said.stderr
            assert "Traceback" not in said.stderr and "not a mapping" in said.stderr


def test_a_holder_is_named_by_the_key_id_key_show_prints(tmp_path: Path) -> None:
    """`key show` and `publisher status` name a key by both of its ids, and `rotate
    --remove` takes either (or the public key): a holder reads theirs off their node."""
    (uni, uni_pub), (_, lab_pub), (cert, cert_pub) = _holders(tmp_path)
    root = tmp_path / "root.json"
    uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub, "--key", cert_pub,
        "--threshold", "2", "--online-key", uni_pub, "-o", root, check=True)  # fmt: skip
    cert("publisher", "sign", root, check=True)
    shown = cert.json("key", "show")
    assert cert("key", "show", check=True).stdout.endswith(f"TUF key id: {shown['tuf_key_id']}\n")
    status = uni("publisher", "status", root, check=True).stderr
    assert f"signed   {shown['tuf_key_id'][:16]}  {shown['key_id']}" in status, status
    holders = uni.json("publisher", "status", root)["holders"]
    assert {"key": shown["tuf_key_id"], "key_id": shown["key_id"], "signed": True} in holders
    assert sum(not h["signed"] for h in holders) == 2

    for reference in (shown["key_id"], shown["public_key"], shown["tuf_key_id"][:8]):
        v2 = tmp_path / "2.root.json"
        uni("publisher", "rotate", root, "--remove", reference, "-o", v2, "--force", check=True)
        keys = uni.json("publisher", "status", v2)["keys"]
        assert len(keys) == 2 and shown["tuf_key_id"] not in keys, reference
    other = Runner(tmp_path / "other")
    stranger = other.json("key", "gen")["key_id"]
    refused = uni("publisher", "rotate", root, "--remove", stranger, "-o", tmp_path / "x.json")
    assert refused.returncode == 4 and "names no key of this root" in refused.stderr
    typo = uni("publisher", "rotate", root, "--remove", shown["key_id"][:-1] + "Q", "-o",
               tmp_path / "x.json")  # fmt: skip
    assert typo.returncode == 4 and "check group does not match" in typo.stderr
    assert not (tmp_path / "x.json").exists()


def test_the_node_that_makes_the_root_publishes_unless_another_is_named(tmp_path: Path) -> None:
    """`init` without --online-key makes this node the publisher's node (it signs
    snapshot and timestamp alone). A node whose key cannot is refused when it installs
    the root, before anything is written: it was only warned, and a newcomer who then
    made a corrected version 1 could not install it over the first."""
    from sovnet.trust import publisher_root as pr

    (uni, uni_pub), (lab, lab_pub), _ = _holders(tmp_path)
    root = tmp_path / "root.json"
    made = uni("publisher", "init", "acme", "--key", uni_pub, "--key", lab_pub,
               "--threshold", "2", "-o", root, check=True)  # fmt: skip
    uni_id = uni.json("key", "show")["tuf_key_id"]
    assert f"The publisher's node is this one (key {uni_id[:16]})" in made.stderr
    assert pr.signs_online_alone(root.read_bytes(), uni_id)
    for holder in (uni, lab):
        holder("publisher", "sign", root, check=True)
    lab_id = lab.json("key", "show")["key_id"]
    refused = lab("publisher", "install", root)  # lab's node is not the publisher's
    assert refused.returncode == 6, refused.stderr
    assert f"this node's key ({lab_id}) cannot sign acme's snapshot and timestamp" in (
        refused.stderr
    )
    assert uni.json("key", "show")["key_id"] in refused.stderr  # the node that can
    assert not (lab.state_dir / "publishers" / "acme").exists()  # nothing to undo
    assert "warning" not in uni("publisher", "install", root, check=True).stderr

    # A root whose snapshot and timestamp need two keys (uni's among them): no node
    # can sign them alone, so none installs it (and releases could not be signed).
    shared = tmp_path / "shared.json"
    keys = [pr.public_key(p.read_bytes()) for p in (uni_pub, lab_pub)]
    shared.write_bytes(pr.new_root("beta", keys, 2, now=datetime.datetime.now(datetime.UTC)))
    assert json.loads(shared.read_text())["signed"]["roles"]["timestamp"]["threshold"] == 2
    refused = uni("publisher", "sign", shared)  # no holder signs what can never work
    assert refused.returncode == 6 and "one alone" in refused.stderr, refused.stderr
    for holder in (uni, lab):  # signed all the same, by hand
        key = (holder.state_dir / "keys" / "publisher.pem").read_bytes()
        shared.write_bytes(pr.sign(shared.read_bytes(), pr.signer(key)))
    said = uni("publisher", "install", shared)
    assert said.returncode == 6 and "cannot sign beta's snapshot and timestamp alone" in (
        said.stderr
    ), said.stderr
    assert not (uni.state_dir / "publishers" / "beta").exists()
