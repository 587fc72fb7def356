"""The ``sovnet`` command line's files of the network flow, key ids and --state-dir,
as a hostile tester used them (#12): run as real subprocesses, as a user would."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from sovnet.core.network import MAX_INVITE_BYTES, Invite
from tests.conftest import SOVNET, Runner, cli_env


@pytest.fixture
def owner(tmp_path: Path) -> Runner:
    """A node that owns a network and has a publisher key."""
    runner = Runner(tmp_path / "owner")
    runner("key", "gen", check=True)
    runner("network", "create", "lab", check=True)
    return runner


def _request(tmp_path: Path) -> Path:
    request = tmp_path / "b.req"
    Runner(tmp_path / "b")("network", "request", "-o", request, check=True)
    return request


def _snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), stat.S_IMODE(p.stat().st_mode))
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


# -- 1. -o never overwrites without --force, and never a file of the node ---------


def test_invite_and_request_refuse_an_existing_output_file(owner: Runner, tmp_path: Path) -> None:
    request = _request(tmp_path)
    existing = tmp_path / "notes.txt"
    existing.write_bytes(b"keep me")
    for command in (
        ["network", "invite", request, "-o", existing],
        ["network", "invite", "--new-node", "c", "-o", existing],
    ):
        result = owner(*command)
        assert result.returncode == 4, result.stderr
        assert f"{existing} exists" in result.stderr and "--force" in result.stderr
    result = Runner(tmp_path / "b")("network", "request", "-o", existing)
    assert result.returncode == 4, result.stderr
    assert f"{existing} exists" in result.stderr and "--force" in result.stderr
    assert existing.read_bytes() == b"keep me"
    Runner(tmp_path / "b")("network", "request", "-o", existing, "--force", check=True)
    assert existing.read_bytes().startswith(b"-----BEGIN CERTIFICATE REQUEST-----")


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["", "force"])
def test_invite_and_request_never_write_into_the_state_dir(
    owner: Runner, tmp_path: Path, force: list[str]
) -> None:
    request = _request(tmp_path)
    state = owner.state_dir
    before = _snapshot(state)
    for target in (
        state / "keys" / "publisher.pem",
        state / "network" / "ca.key",
        state / "network" / "node.pem",
        state / "new.invite",
        state / "network" / ".." / "keys" / "other.pem",
    ):
        for command in (
            ["network", "invite", request, "-o", target, *force],
            ["network", "invite", "--new-node", "zz", "-o", target, *force],
            ["network", "request", "-o", target, *force],
        ):
            result = owner(*command)
            assert result.returncode == 4, (command, result.stderr)
            assert "inside this node's state directory" in result.stderr, result.stderr
    # A link elsewhere that points into the node is refused as well.
    link = tmp_path / "innocent.invite"
    link.symlink_to(state / "network" / "ca.key")
    result = owner("network", "invite", "--new-node", "zz", "-o", link, "--force")
    assert result.returncode == 4, result.stderr
    assert _snapshot(state) == before
    assert owner("network", "show").returncode == 0


def test_an_invite_holding_a_key_is_0600_even_over_a_0644_file(
    owner: Runner, tmp_path: Path
) -> None:
    old = tmp_path / "old.invite"
    old.write_bytes(b"an old invite")
    old.chmod(0o644)
    owner("network", "invite", "--new-node", "c", "-o", old, "--force", check=True)
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    assert Invite.from_bytes(old.read_bytes()).key_pem is not None
    new = tmp_path / "new.invite"
    previous = os.umask(0)  # a permissive umask does not widen it either
    try:
        owner("network", "invite", "--new-node", "d", "-o", new, check=True)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(new.stat().st_mode) == 0o600


# -- 2. input files are read with a bound, and must be regular files ---------------


def _run_bounded(state: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """Like Runner, but a hang is a failure within 30 s, not the suite's timeout."""
    return subprocess.run(
        [str(SOVNET), *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(state),
        stdin=subprocess.DEVNULL,
        timeout=30,
    )


def test_join_and_invite_refuse_what_is_not_a_regular_file(owner: Runner, tmp_path: Path) -> None:
    fifo = tmp_path / "invite.fifo"
    os.mkfifo(fifo)
    newcomer = tmp_path / "newcomer"
    for source in (fifo, Path("/dev/zero")):
        result = _run_bounded(newcomer, "network", "join", source)
        assert result.returncode == 4, result.stderr
        assert f"{source} is not a regular file" in result.stderr
        result = _run_bounded(owner.state_dir, "network", "invite", source, "-o", tmp_path / "x")
        assert result.returncode == 4, result.stderr
        assert f"{source} is not a regular file" in result.stderr
    assert not (tmp_path / "x").exists()


def test_join_and_invite_refuse_a_file_over_their_limit(owner: Runner, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"-" * (MAX_INVITE_BYTES + 1))
    result = _run_bounded(tmp_path / "newcomer", "network", "join", big)
    assert result.returncode == 4, result.stderr
    assert f"{big} is over {MAX_INVITE_BYTES} bytes" in result.stderr
    result = _run_bounded(owner.state_dir, "network", "invite", big, "-o", tmp_path / "x")
    assert result.returncode == 4, result.stderr
    assert f"{big} is over" in result.stderr


# -- 3. trust add of a trusted key under another name says it renames it -----------


def test_trust_add_of_a_trusted_key_says_it_renames_it(owner: Runner, tmp_path: Path) -> None:
    other = Runner(tmp_path / "other").json("key", "gen")
    first = owner("trust", "add", other["key_id"], "--name", "alice", check=True)
    assert "renamed" not in first.stderr
    again = owner("trust", "add", other["key_id"], "--name", "bob", check=True)
    assert 'renamed from "alice" to "bob"' in again.stderr
    as_json = owner.json("trust", "add", other["key_id"], "--name", "carol")
    assert as_json["renamed_from"] == "bob"
    names = {k["key_id"]: k["name"] for k in owner.json("trust", "ls")}
    assert names[other["key_id"]] == "carol"


# -- 4. a key id typed with digits base32 lacks, or far too long --------------------


def test_trust_add_of_a_key_id_with_a_zero_hints_at_o(owner: Runner, tmp_path: Path) -> None:
    other = Runner(tmp_path / "other").json("key", "gen")
    result = owner("trust", "add", "0" + other["key_id"][1:], "--name", "alice")
    assert result.returncode == 4
    assert "base32 has no 0, 1, 8 or 9" in result.stderr and "O for 0" in result.stderr
    result = owner("trust", "add", "A" * 5000, "--name", "alice")
    assert result.returncode == 4
    assert len(result.stderr) < 600, result.stderr


# -- 5. an empty --state-dir is an error, not the default ---------------------------


def test_an_empty_state_dir_option_is_an_error_naming_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {**cli_env(tmp_path / "unused"), "HOME": str(home)}
    del env["SOVNET_STATE_DIR"]
    for command in (["key", "gen"], ["ls"], ["network", "create", "lab"]):
        result = subprocess.run(
            [str(SOVNET), "--state-dir", "", *command],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=60,
        )
        assert result.returncode == 2, (command, result.stderr)
        assert "--state-dir" in result.stderr and "empty" in result.stderr
    assert list(home.iterdir()) == []
