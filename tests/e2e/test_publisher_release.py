"""End to end: a publisher root's release fetched by name, through a peer that is not
the publisher, by a node that trusts no key of the publisher's, only its root."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Runner
from tests.e2e.conftest import Cluster, make_model


def test_a_node_fetches_org_model_latest_through_a_peer_that_is_not_the_publisher(
    cluster: Cluster, tmp_path: Path
) -> None:
    a = cluster.node("a")
    c = cluster.node("c", trust_first=False)
    b = cluster.node("b", trust_first=False)
    holder = Runner(tmp_path / "holder")
    holder("key", "gen", check=True)
    keys = []
    for who, sovnet in (("a", a.sovnet), ("holder", holder)):
        path = tmp_path / f"{who}.pub"
        path.write_text(sovnet("key", "show", "--public", check=True).stdout)
        keys += ["--key", str(path)]
    root = tmp_path / "root.json"
    a.sovnet("publisher", "init", "acme", *keys, "--threshold", "2",
             "--online-key", tmp_path / "a.pub", "-o", root, check=True)  # fmt: skip
    a.sovnet("publisher", "sign", root, check=True)
    holder("publisher", "sign", root, check=True)
    a.sovnet("publisher", "install", root, check=True)
    a.start()
    cid = a.sovnet.json("publish", make_model(tmp_path / "m", 2), "--name", "acme/tiny",
                        "--version", "1.0")["cid"]  # fmt: skip
    release = tmp_path / "release.json"
    a.sovnet("publisher", "release", "acme/tiny@1.0", "-o", release, check=True)
    a.sovnet("publisher", "sign", release, check=True)
    holder("publisher", "sign", release, "--root", root, check=True)
    a.sovnet("publisher", "install", release, check=True)

    c.sovnet("trust", "add", root, check=True)
    c.start()
    c.sovnet("peers", "add", a.control, check=True)
    [listed] = c.sovnet.json("ls", "--remote")["releases"]
    assert (listed["name"], listed["version"], listed["cid"]) == ("acme/tiny", "1.0", cid)
    assert listed["channels"] == ["latest"] and not listed["here"]
    assert listed["holders"] == [a.control]
    c.sovnet("fetch", "acme/tiny:latest", check=True)
    a.stop()  # from now on only c has the release and its metadata

    b.sovnet("trust", "add", root, check=True)
    b.start()
    b.sovnet("peers", "add", c.control, check=True)
    row_released = "acme/tiny@1.0, released by acme's root"
    fetched = b.sovnet("fetch", "acme/tiny:latest", "--json")
    assert fetched.returncode == 0, fetched.stderr + b.log_text()[-3000:]
    assert json.loads(fetched.stdout.splitlines()[-1])["cid"] == cid
    verified = b.sovnet("verify", cid, check=True)  # trusted: a release of the root
    assert "Intact: acme/tiny@1.0, released by acme's root." in verified.stderr + verified.stdout
    assert "FAIL" not in verified.stdout and "not trusted)" not in verified.stdout
    shown = b.sovnet("show", cid, check=True).stdout
    assert "trusted:    yes" in shown and "release:    acme/tiny@1.0" in shown
    assert "(not trusted)" not in shown and "the release vouches" in shown
    assert b.sovnet.json("verify", cid)["released_as"] == row_released
    [row] = b.sovnet.json("ls")
    assert row["trusted"] and row["released_as"] == row_released
    assert "released by acme's root" in b.sovnet("ls", check=True).stdout
    # Names work offline too, as the metadata was last trusted here.
    assert b.sovnet.json("show", "acme/tiny:latest")["cid"] == cid
    assert b.sovnet("verify", "acme/tiny").returncode == 0  # bare: :latest
    empty = b.sovnet("show", "acme/tiny:")  # no channel named: not :latest
    assert empty.returncode == 3, empty.stderr
    stable = b.sovnet("show", "acme/tiny:stable")
    assert stable.returncode == 3 and "no release" in stable.stderr, stable.stderr
    assert b.sovnet("rm", "acme/tiny@1.0").returncode == 0
    assert not b.has(cid)
