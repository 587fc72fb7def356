"""End to end: what a publisher root's holders can still do once a release is out, as
nodes that pinned the root see it. Real sovnetd daemons on 127.0.0.1, the real CLI,
a tiny real GGUF model that llama.cpp runs.

1. A revocation reaches a node through its peers, and every use of the release there
   is refused (run, export) until its operator allows it (--allow-revoked, or
   revoked = "allow" in sovnetd.toml); the bytes stay. Other advisories only warn.
2. A freeze: when only an expired timestamp can be had (the publisher's node is off
   and a peer hands on the last one it signed), no new release is fetched, and the
   releases already here still run.
3. A stolen key, rotated out of the root: every node that pinned the root follows the
   rotation through its peers, and then refuses releases the thief signs, served by
   the thief's own node, though the old root would have taken them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from sovnet.trust import publisher_root
from tests.conftest import Runner, write_tiny_gguf
from tests.e2e.conftest import Cluster, Node, expire_timestamp

REASON = "its tokenizer leaks the system prompt: stop using it"
PROMPT = ("-p", "Once upon a time", "-n", "8", "--seed", "1")  # prints a few tokens


@pytest.fixture(autouse=True)
def no_operator_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI reads the operator's sovnetd.toml for its revoked policy: none here but
    the ones a test writes (not the developer's ~/.config/sovnet/sovnetd.toml)."""
    for name in ("SOVNET_CONFIG", "SOVNET_REVOKED", "CONFIGURATION_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))


# -- the publisher's side, as its holders and its node do it ------------------------------


def _holder(tmp_path: Path, name: str) -> Runner:
    """A holder of a root key: a machine with a key and no daemon."""
    holder = Runner(tmp_path / name)
    holder("key", "gen", check=True)
    return holder


def _public_key(tmp_path: Path, name: str, sovnet: Runner) -> Path:
    path = tmp_path / f"{name}.pub"
    path.write_text(sovnet("key", "show", "--public", check=True).stdout)
    return path


def _key_id(public: Path) -> str:
    """The TUF key id of a public key file, as the root and advisories name it."""
    return str(publisher_root.public_key(public.read_bytes()).keyid)


def _make_root(tmp_path: Path, a: Node, holders: dict[str, Runner], threshold: int) -> Path:
    """acme's root: A's key and the holders', ``threshold`` of them; A's key is the
    online key (A is the publisher's node). Every holder signs; A installs it."""
    keys: list[str | Path] = ["--key", _public_key(tmp_path, "a", a.sovnet)]
    for name, holder in holders.items():
        keys += ["--key", _public_key(tmp_path, name, holder)]
    root = tmp_path / "root.json"
    a.sovnet("publisher", "init", "acme", *keys, "--threshold", str(threshold),
             "--online-key", tmp_path / "a.pub", "-o", root, check=True)  # fmt: skip
    a.sovnet("publisher", "sign", root, check=True)
    for holder in holders.values():
        holder("publisher", "sign", root, check=True)
    a.sovnet("publisher", "install", root, check=True)
    return root


def _model(directory: Path, seed: int) -> Path:
    write_tiny_gguf(directory, seed=seed)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama", "seed": seed}))
    return directory


def _publish(node: Node, tmp_path: Path, version: str, seed: int) -> str:
    model = _model(tmp_path / f"model-{version}", seed)
    published = node.sovnet.json("publish", model, "--name", "acme/tiny", "--version", version)
    return str(published["cid"])


def _newest(a: Node, role: str) -> Path:
    """The newest N.ROLE.json of acme's repository on A."""
    found = (a.state / "publishers" / "acme").glob(f"*.{role}.json")
    return max(found, key=lambda p: int(p.name.split(".")[0]))


def _release(tmp_path: Path, a: Node, holder: Runner, ref: str, *channels: str) -> None:
    """A writes the next releases file, A and ``holder`` sign it, A installs it."""
    path = tmp_path / f"release-{len(list(tmp_path.glob('release-*')))}.json"
    moved = [f"--channel={channel}" for channel in channels]
    a.sovnet("publisher", "release", ref, *moved, "-o", path, check=True)
    a.sovnet("publisher", "sign", path, check=True)
    holder("publisher", "sign", path, "--root", _newest(a, "root"), check=True)
    a.sovnet("publisher", "install", path, check=True)


def _advise(tmp_path: Path, a: Node, holder: Runner, ref: str, *advice: str) -> None:
    """An advisory on ``ref``, signed by A and by ``holder`` (who has no releases
    installed: it signs against A's newest releases file), installed on A."""
    path = tmp_path / f"advisory-{advice[0]}.json"
    a.sovnet("publisher", "advise", ref, *advice, "-o", path, check=True)
    a.sovnet("publisher", "sign", path, check=True)
    holder("publisher", "sign", path, "--targets", _newest(a, "targets"), check=True)
    a.sovnet("publisher", "install", path, check=True)


# -- a node's side -------------------------------------------------------------------------


def _pinning(node: Node, root: Path, *peers: Node) -> Node:
    node.sovnet("trust", "add", root, check=True)
    node.start()
    for peer in peers:
        node.sovnet("peers", "add", peer.control, check=True)
    return node


def _remote(node: Node) -> dict[str, Any]:
    """`sovnet ls --remote --json`: the pinned publishers refreshed through the peers."""
    listed: dict[str, Any] = node.sovnet.json("ls", "--remote")
    return listed


def _versions(listed: dict[str, Any]) -> list[str]:
    return [row["version"] for row in listed["releases"] if row["name"] == "acme/tiny"]


def _said(result: Any, node: Node) -> str:
    return (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
        + (node.log_text()[-3000:])
    )


# -- 1. revocation -------------------------------------------------------------------------


def test_a_revoked_release_is_refused_on_every_use_until_the_operator_allows_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    b = cluster.node("b", trust_first=False)
    holder = _holder(tmp_path, "holder")
    root = _make_root(tmp_path, a, {"holder": holder}, threshold=2)
    a.start()
    cid = _publish(a, tmp_path, "1.0", seed=1)
    _release(tmp_path, a, holder, "acme/tiny@1.0")

    _pinning(b, root, a)
    b.sovnet("fetch", "acme/tiny:latest", check=True)
    ran = b.sovnet("run", "acme/tiny", *PROMPT)
    assert ran.returncode == 0 and ran.stdout.strip(), _said(ran, b)

    # The publisher revokes 1.0: A and the holder sign the advisory, A serves it.
    _advise(tmp_path, a, holder, "acme/tiny@1.0", "revoked", "--reason", REASON)
    heard = _remote(b)  # b hears it through its peer
    [row] = heard["releases"]
    assert (row["version"], row["cid"], row.get("advisory")) == ("1.0", cid, "revoked"), heard
    assert REASON in row["advisory_text"]

    signers = [_key_id(tmp_path / "a.pub")[:16], _key_id(tmp_path / "holder.pub")[:16]]
    refused = b.sovnet("run", "acme/tiny@1.0", *PROMPT)
    assert refused.returncode == 6, _said(refused, b)
    assert "refusing to run" in refused.stderr and "acme/tiny@1.0 is revoked" in refused.stderr
    assert REASON in refused.stderr
    assert all(signer in refused.stderr for signer in signers), refused.stderr
    assert "--allow-revoked" in refused.stderr  # the hint says how to run it anyway
    assert not refused.stdout.strip()
    by_channel = b.sovnet("run", "acme/tiny:latest", *PROMPT)  # the same bytes, another name
    assert by_channel.returncode == 6 and REASON in by_channel.stderr, _said(by_channel, b)

    allowed = b.sovnet("run", "acme/tiny@1.0", *PROMPT, "--allow-revoked")
    assert allowed.returncode == 0 and allowed.stdout.strip(), _said(allowed, b)
    assert "warning:" in allowed.stderr and "revoked" in allowed.stderr
    assert REASON in allowed.stderr

    hf_cache = tmp_path / "hf-cache"
    exported = b.sovnet("export", "acme/tiny@1.0", "--hf-cache", hf_cache)
    assert exported.returncode == 6, _said(exported, b)
    assert "refusing to export" in exported.stderr and "acme/tiny@1.0 is revoked" in exported.stderr
    assert REASON in exported.stderr
    assert "exports it anyway" in exported.stderr  # the hint names what was refused
    shown = b.sovnet("show", "acme/tiny@1.0", check=True).stdout  # show says it too
    assert "ADVISORY:" in shown and REASON in shown, shown
    verified = b.sovnet("verify", "acme/tiny@1.0", check=True).stdout  # intact, and noted
    assert "NOTE  acme/tiny@1.0 is revoked" in verified, verified
    assert not list(hf_cache.glob("models--*"))

    # Nothing was deleted: the bytes are here, and verify.
    assert b.has(cid)
    verified = b.sovnet("verify", cid)
    assert verified.returncode == 0, _said(verified, b)

    # The operator's standing decision: revoked = "allow" in b's sovnetd.toml.
    config_home = tmp_path / "b-config"
    (config_home / "sovnet").mkdir(parents=True)
    (config_home / "sovnet" / "sovnetd.toml").write_text('revoked = "allow"\n')
    by_policy = b.sovnet("run", "acme/tiny@1.0", *PROMPT, env={"XDG_CONFIG_HOME": str(config_home)})
    assert by_policy.returncode == 0 and by_policy.stdout.strip(), _said(by_policy, b)
    assert "warning:" in by_policy.stderr and REASON in by_policy.stderr
    named = tmp_path / "named.toml"
    named.write_text('revoked = "allow"\n')
    by_file = b.sovnet("run", "acme/tiny@1.0", *PROMPT, env={"SOVNET_CONFIG": str(named)})
    assert by_file.returncode == 0 and by_file.stdout.strip(), _said(by_file, b)

    # The publisher thinks again: 1.0 is superseded by 2.0, which only warns.
    _publish(a, tmp_path, "2.0", seed=2)
    _release(tmp_path, a, holder, "acme/tiny@2.0")
    successor = ("--superseded-by", "acme/tiny@2.0", "--reason", "2.0 fixes the tokenizer")
    _advise(tmp_path, a, holder, "acme/tiny@1.0", "superseded", *successor)
    rows = {row["version"]: row for row in _remote(b)["releases"]}
    assert rows["1.0"].get("advisory") == "superseded" and "advisory" not in rows["2.0"], rows
    warned = b.sovnet("run", "acme/tiny@1.0", *PROMPT)
    assert warned.returncode == 0 and warned.stdout.strip(), _said(warned, b)
    assert "warning:" in warned.stderr and "superseded" in warned.stderr
    assert "use acme/tiny@2.0" in warned.stderr and "2.0 fixes the tokenizer" in warned.stderr


# -- 2. freeze -----------------------------------------------------------------------------


def test_a_frozen_publisher_stops_new_releases_and_not_the_ones_here(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    b = cluster.node("b", trust_first=False)
    c = cluster.node("c", trust_first=False)  # a mirror: pinned the root, hands it on
    holder = _holder(tmp_path, "holder")
    root = _make_root(tmp_path, a, {"holder": holder}, threshold=2)
    a.start()
    cid1 = _publish(a, tmp_path, "1.0", seed=1)
    _release(tmp_path, a, holder, "acme/tiny@1.0")
    _pinning(b, root, a)
    b.sovnet("fetch", "acme/tiny@1.0", check=True)
    b.stop()  # off while 2.0 is released: A's hint would bring b the fresh timestamp

    cid2 = _publish(a, tmp_path, "2.0", seed=2)
    _release(tmp_path, a, holder, "acme/tiny@2.0")
    _pinning(c, root, a)
    assert _versions(_remote(c)) == ["1.0", "2.0"]  # c trusts A's newest timestamp

    # The publisher's node goes off and stays off; a day and more go by. The timestamp
    # c hands on is the one A signed when it released 2.0: expired now. (Made here as
    # A would have signed it two days ago: the same version, with A's key.)
    a.stop()
    c.stop()
    expire_timestamp(c, a)
    c.start()
    b.start()
    b.sovnet("peers", "add", c.control, check=True)

    fetched = b.sovnet("fetch", "acme/tiny@2.0")
    assert fetched.returncode == 6, _said(fetched, b)
    assert "publisher acme's metadata has expired" in fetched.stderr
    assert "freeze" in fetched.stderr and "no new release is fetched" in fetched.stderr
    assert not b.has(cid2)
    listed = _remote(b)  # the releases trusted before, and why nothing newer
    assert _versions(listed) == ["1.0"]
    assert any("expired" in problem for problem in listed["problems"]), listed

    ran = b.sovnet("run", "acme/tiny@1.0", *PROMPT)
    assert ran.returncode == 0 and ran.stdout.strip(), _said(ran, b)
    assert b.sovnet.json("show", "acme/tiny:latest")["cid"] == cid1


# -- 3. a stolen key -----------------------------------------------------------------------


class _Repository:
    """acme's repository directory on a node, filled by hand: a node serves what is
    there as it is (the thief's node cannot renew it: its key is not the online key)."""

    def __init__(self, node: Node) -> None:
        self.directory = node.state / "publishers" / "acme"
        self.directory.mkdir(parents=True, exist_ok=True)

    def copy(self, source: Path, name: str | None = None) -> None:
        shutil.copyfile(source, self.directory / (name or source.name))


def test_a_key_rotated_out_signs_nothing_on_any_node(cluster: Cluster, tmp_path: Path) -> None:
    a = cluster.node("a")
    b = cluster.node("b", trust_first=False)
    c = cluster.node("c", trust_first=False)
    d = cluster.node("d", trust_first=False)  # the thief's node
    h1, h2 = _holder(tmp_path, "h1"), _holder(tmp_path, "h2")
    root = _make_root(tmp_path, a, {"h1": h1, "h2": h2}, threshold=2)
    a.start()
    cid1 = _publish(a, tmp_path, "1.0", seed=1)
    _release(tmp_path, a, h1, "acme/tiny@1.0")
    for node in (b, c):
        _pinning(node, root, a)
        node.sovnet("fetch", "acme/tiny:latest", check=True)

    # h2's key is stolen: the holders write root version 2 without it, signed by the
    # old threshold of old keys and the new one of new keys; A installs it.
    root2 = tmp_path / "2.root.json"
    stolen = _key_id(tmp_path / "h2.pub")
    h1("publisher", "rotate", root, "--remove", stolen[:12], "-o", root2, check=True)
    a.sovnet("publisher", "sign", root2, "--previous", root, check=True)
    h1("publisher", "sign", root2, "--previous", root, check=True)
    h1("publisher", "finish", root2, "--previous", root, check=True)
    a.sovnet("publisher", "install", root2, check=True)
    for node in (b, c):  # each follows it through its peer, on its next refresh
        assert _versions(_remote(node)) == ["1.0"]
        [pinned] = node.sovnet.json("trust", "roots")
        assert pinned["version"] == 2 and stolen not in pinned["keys"], pinned
    # A's next release (1.0 on the channel stable too), signed under root 2; then A
    # goes off: the thief's node is the only one with anything newer.
    _release(tmp_path, a, h1, "acme/tiny@1.0", "stable")
    a.stop()

    # The thief makes its own 2.0, from acme's releases (public: any node hands them on).
    thief = _Repository(d)
    thief.copy(root, "1.root.json")
    thief.copy(a.state / "publishers" / "acme" / "1.targets.json")
    cid2 = _publish(d, tmp_path, "2.0", seed=3)
    forged = tmp_path / "forged.json"
    d.sovnet("publisher", "release", "acme/tiny@2.0", "--root", root, "-o", forged, check=True)
    h2_key = tmp_path / "h2" / "keys" / "publisher.pem"
    d.sovnet("publisher", "sign", forged, "--key", h2_key, "--root", root, check=True)
    alone = a.sovnet("publisher", "install", forged)  # the publisher's node refuses it
    assert alone.returncode == 6, _said(alone, a)
    assert "signed by 0 of the keys; it needs 2" in alone.stderr
    # Worst case: the thief holds the publisher node's key too (here the online key and
    # one of the root's). Under root 1 its release would be complete; under root 2, not.
    a_key = a.state / "keys" / "publisher.pem"
    d.sovnet("publisher", "sign", forged, "--key", a_key, "--root", root, check=True)
    under_old = d.sovnet.json("publisher", "status", forged, "--root", root)
    assert under_old["complete"], under_old
    under_new = d.sovnet.json("publisher", "status", forged, "--root", root2)
    assert (len(under_new["signed_by"]), under_new["complete"]) == (1, False), under_new
    refused = a.sovnet("publisher", "install", forged)
    assert refused.returncode == 6, _said(refused, a)
    assert "signed by 1 of the keys; it needs 2" in refused.stderr

    # The thief's node serves it as releases version 2, beside A's own snapshot and
    # timestamp of version 2 (copied: they only say "releases version 2 is the newest",
    # so the thief needs no online signature of its own), and root version 1 only.
    thief.copy(forged, "2.targets.json")
    thief.copy(_newest(a, "snapshot"))
    thief.copy(a.state / "publishers" / "acme" / "timestamp.json")
    d.start()
    for node in (b, c):
        node.sovnet("peers", "add", d.control, check=True)
        listed = _remote(node)
        assert _versions(listed) == ["1.0"], listed  # 2.0 is not listed
        assert any("refused" in problem for problem in listed["problems"]), listed
        fetched = node.sovnet("fetch", "acme/tiny@2.0")
        assert fetched.returncode == 6, _said(fetched, node)
        assert "publisher acme's metadata from peers was refused" in fetched.stderr
        assert "targets was signed by 1/2 keys" in fetched.stderr
        assert d.control in fetched.stderr  # who sent it
        assert not node.has(cid2)
        assert node.sovnet.json("show", "acme/tiny@1.0")["cid"] == cid1  # 1.0 still resolves
        assert node.sovnet.json("show", "acme/tiny:latest")["cid"] == cid1
        [pinned] = node.sovnet.json("trust", "roots")
        assert pinned["version"] == 2
