"""Publisher roots: k of n keys sign a TUF root, by passing one file around; a
rotation replaces a stolen key. No sockets, no clock: ``now`` is given."""

from __future__ import annotations

import datetime
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root

from sovnet.core.signing import PrivateKey
from sovnet.errors import InvalidInputError, InvalidKeyError, ManifestFormatError, TrustError
from sovnet.trust import publisher_root as pr

NOW = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)


def _pem(private: object) -> bytes:
    return private.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _public_pem(private: object) -> bytes:
    return private.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# Three holders in three institutions: two Ed25519 keys and a hardware-style P-256 one.
HOLDERS = [
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1]) * 32),
    ed25519.Ed25519PrivateKey.from_private_bytes(bytes([2]) * 32),
    ec.derive_private_key(3, ec.SECP256R1()),
]
SIGNERS = [pr.signer(_pem(h)) for h in HOLDERS]
KEYS = [pr.public_key(_public_pem(h)) for h in HOLDERS]


def _two_of_three() -> bytes:
    return pr.new_root("acme", KEYS, 2, now=NOW)


def test_a_2_of_3_root_is_complete_with_two_signatures_and_not_with_one() -> None:
    draft = _two_of_three()
    unsigned = pr.check(draft)
    assert (unsigned.publisher, unsigned.version, unsigned.threshold) == ("acme", 1, 2)
    assert unsigned.signed_by == () and not unsigned.complete

    one = pr.sign(draft, SIGNERS[0])
    assert pr.check(one).signed_by == (SIGNERS[0].public_key.keyid,)
    assert not pr.check(one).complete
    two = pr.sign(one, SIGNERS[2])  # the ECDSA P-256 holder
    assert pr.check(two).complete
    assert set(pr.check(two).signed_by) == {SIGNERS[0].public_key.keyid, KEYS[2].keyid}
    # What a stock TUF client checks of a trusted root:
    metadata = Metadata[Root].from_bytes(two)
    metadata.signed.verify_delegate("root", metadata.signed_bytes, metadata.signatures)
    with pytest.raises(UnsignedMetadataError):
        first = Metadata[Root].from_bytes(one)
        first.signed.verify_delegate("root", first.signed_bytes, first.signatures)


def test_signing_twice_with_one_key_counts_once() -> None:
    twice = pr.sign(pr.sign(_two_of_three(), SIGNERS[1]), SIGNERS[1])
    assert len(json.loads(twice)["signatures"]) == 1
    assert not pr.check(twice).complete


def test_a_key_that_is_not_the_root_s_cannot_sign_it() -> None:
    stranger = pr.signer(_pem(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32)))
    with pytest.raises(TrustError, match="not one of this root's keys"):
        pr.sign(_two_of_three(), stranger)


def test_a_root_edited_after_it_was_signed_is_signed_by_nobody() -> None:
    signed = pr.sign(pr.sign(_two_of_three(), SIGNERS[0]), SIGNERS[1])
    value = json.loads(signed)
    value["signed"]["roles"]["root"]["threshold"] = 1
    edited = json.dumps(value).encode()
    assert pr.check(edited).signed_by == () and not pr.check(edited).complete


@pytest.mark.parametrize(
    ("keys", "threshold", "message"),
    [
        (KEYS, 4, "cannot be met by 3"),
        (KEYS, 0, "cannot be met"),
        ([KEYS[0], KEYS[0]], 1, "the same key is given twice"),
        ([], 1, "1 to 64 keys"),
    ],
)
def test_a_root_that_cannot_work_is_refused(
    keys: list[object], threshold: int, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        pr.new_root("acme", keys, threshold, now=NOW)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "a/b", "-acme", "x" * 65, "ac me"])
def test_a_publisher_name_is_the_org_of_org_model(name: str) -> None:
    with pytest.raises(InvalidInputError, match="not a publisher name"):
        pr.new_root(name, KEYS, 2, now=NOW)


def test_keys_come_as_pem_or_as_sovnet_s_own_public_key_text() -> None:
    node_key = PrivateKey.from_seed(bytes(range(32))).public_key
    from_text = pr.public_key(f"  {node_key}\n".encode())
    from_pem = pr.public_key(
        _public_pem(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
    )
    assert from_text.keyid == from_pem.keyid
    assert KEYS[2].scheme == "ecdsa-sha2-nistp256"


@pytest.mark.parametrize(
    "private",
    [rsa.generate_private_key(65537, 2048), ec.generate_private_key(ec.SECP384R1())],
    ids=["rsa", "p384"],
)
def test_other_algorithms_are_refused_naming_what_is_accepted(private: object) -> None:
    with pytest.raises(InvalidKeyError, match="Ed25519 or ECDSA P-256"):
        pr.public_key(_public_pem(private))
    with pytest.raises(InvalidKeyError, match="Ed25519 or ECDSA P-256"):
        pr.signer(_pem(private))


@pytest.mark.parametrize("data", [b"", b"hello", b"-----BEGIN PUBLIC KEY-----\nAAAA\n"])
def test_what_is_not_a_key_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        pr.public_key(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b"[" * 100_000 + b"]" * 100_000,
        b" " * (pr.MAX_ROOT_BYTES + 1),
        b'{"signatures": [], "signed": {"_type": "targets"}}',
    ],
    ids=["empty", "no-fields", "deep", "too-large", "not-a-root"],
)
def test_a_file_that_is_not_a_root_is_refused(data: bytes) -> None:
    with pytest.raises(ManifestFormatError):
        pr.check(data)


def test_a_root_without_its_publisher_s_name_is_refused() -> None:
    value = json.loads(_two_of_three())
    del value["signed"][pr.PUBLISHER_FIELD]
    with pytest.raises(ManifestFormatError, match="does not name its publisher"):
        pr.check(json.dumps(value).encode())


# -- rotation: a stolen key is replaced ------------------------------------------------------


def _signed(data: bytes, *holders: int, previous: bytes | None = None) -> bytes:
    for k in holders:
        data = pr.sign(data, SIGNERS[k], previous=previous)
    return data


def test_a_rotation_needs_the_old_threshold_and_the_new() -> None:
    v1 = _signed(_two_of_three(), 0, 1)
    new_holder = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([4]) * 32)
    new_signer = pr.signer(_pem(new_holder))
    # Key 2 was stolen: it goes, a new key comes, the threshold stays 2 of 3.
    v2 = pr.rotate(v1, remove=[KEYS[2].keyid[:12]], add=[new_signer.public_key], now=NOW)
    assert pr.check(v2, previous=v1).version == 2
    assert KEYS[2].keyid not in pr.check(v2, previous=v1).keys

    only_new = pr.sign(pr.sign(v2, SIGNERS[0]), new_signer)
    checked = pr.check(only_new, previous=v1)
    assert len(checked.signed_by) == 2 and len(checked.previous_signed_by) == 1
    assert not checked.complete  # one old key only: the thief cannot rotate alone either

    both = pr.sign(only_new, SIGNERS[1], previous=v1)
    assert pr.check(both, previous=v1).complete


def test_a_removed_key_s_signature_counts_for_the_old_root_only() -> None:
    v1 = _signed(_two_of_three(), 0, 1)
    v2 = pr.rotate(v1, remove=[KEYS[2].keyid], threshold=1, now=NOW)
    by_the_thief = pr.sign(v2, SIGNERS[2], previous=v1)
    checked = pr.check(by_the_thief, previous=v1)
    assert checked.signed_by == () and checked.previous_signed_by == (KEYS[2].keyid,)
    with pytest.raises(TrustError, match="not one of this root's keys"):
        pr.sign(v2, SIGNERS[2])  # without the previous root, it is nobody's key


def test_a_rotation_that_skips_a_version_or_changes_publisher_is_refused() -> None:
    v1 = _signed(_two_of_three(), 0, 1)
    v3 = pr.rotate(pr.rotate(v1, threshold=1, now=NOW), threshold=2, now=NOW)
    with pytest.raises(TrustError, match="does not follow version 1"):
        pr.check(v3, previous=v1)
    other = pr.new_root("other", KEYS, 2, now=NOW)
    value = json.loads(other)
    value["signed"]["version"] = 2
    with pytest.raises(TrustError, match="different publishers"):
        pr.check(json.dumps(value).encode(), previous=v1)


@pytest.mark.parametrize("prefix", ["", "abc", "0" * 8])
def test_removing_an_unknown_or_ambiguous_key_is_refused(prefix: str) -> None:
    with pytest.raises(InvalidInputError, match="names no"):
        pr.rotate(_two_of_three(), remove=[prefix], now=NOW)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3).flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n))), st.data())
def test_a_root_is_complete_exactly_when_threshold_holders_signed(
    n_and_k: tuple[int, int], data: st.DataObject
) -> None:
    n, k = n_and_k
    draft = pr.new_root("acme", KEYS[:n], k, now=NOW)
    holders = data.draw(st.lists(st.integers(0, n - 1), unique=True))
    assert pr.check(_signed(draft, *holders)).complete == (len(holders) >= k)


def test_a_root_that_can_never_work_on_a_node_says_why() -> None:
    """Well formed and signed, yet of no use: nodes serve snapshot and targets by
    version only, a threshold above its keys is never met, an expired root refreshes
    nothing."""
    root = pr.load_root(pr.new_root("acme", KEYS, 2, now=NOW, online=KEYS[0]))
    assert pr.problems(pr.to_bytes(root), now=NOW) == []
    root.signed.consistent_snapshot = False
    root.signed.roles["timestamp"].threshold = 4
    found = pr.problems(pr.to_bytes(root), now=NOW + datetime.timedelta(days=400))
    assert found == [
        "snapshot and timestamp are not signed by the same online key(s), one alone",
        "role timestamp has 1 key(s) for a threshold of 4",
        "consistent_snapshot is false: nodes serve N.snapshot.json and N.targets.json",
        f"it expired on {root.signed.expires:%Y-%m-%d}",
    ]
    # Without an online key, snapshot and timestamp need 2 of the holders: no node
    # can renew them alone.
    shared = pr.new_root("acme", KEYS, 2, now=NOW)
    assert pr.problems(shared, now=NOW) == [
        "snapshot and timestamp are not signed by the same online key(s), one alone"
    ]


def test_a_root_whose_roles_are_not_what_status_shows_can_never_work() -> None:
    """Hostile tester's H2 and H3: releases signed by one key of a "2 of 3" root; one
    holder's key filed under another holder's id, or one key under two ids."""
    from securesystemslib.signer import SSlibKey

    weak = pr.load_root(pr.new_root("acme", KEYS, 2, now=NOW, online=KEYS[0]))
    weak.signed.roles["targets"].keyids = [KEYS[0].keyid]
    weak.signed.roles["targets"].threshold = 1
    assert pr.problems(pr.to_bytes(weak), now=NOW) == [
        "its releases (targets) are signed by 1 of 1 keys, not by the root's 2 of 3"
    ]
    posing = pr.load_root(pr.new_root("acme", KEYS, 2, now=NOW, online=KEYS[0]))
    impostor = posing.signed.keys.pop(KEYS[1].keyid)
    posing.signed.keys[KEYS[1].keyid] = SSlibKey(
        KEYS[1].keyid, impostor.keytype, impostor.scheme, dict(KEYS[0].keyval)
    )
    found = pr.problems(pr.to_bytes(posing), now=NOW)
    assert f"key id {KEYS[1].keyid[:16]} is not its key's own id" in found
    assert any("are one key twice" in line for line in found), found
    escaped = pr.load_root(pr.new_root("acme", KEYS, 2, now=NOW, online=KEYS[0]))
    key = escaped.signed.keys.pop(KEYS[2].keyid)
    bad_id = "\x1b[2J" + "0" * 10
    escaped.signed.keys[bad_id] = SSlibKey(bad_id, key.keytype, key.scheme, key.keyval)
    for role in ("root", "targets"):
        ids = escaped.signed.roles[role].keyids
        ids[ids.index(KEYS[2].keyid)] = bad_id
    found = pr.problems(pr.to_bytes(escaped), now=NOW)
    assert f"key id {bad_id!a} is not its key's own id" in found
    assert not any("\x1b" in line for line in found)  # escaped, never raw


def test_a_root_beyond_what_nodes_serve_or_verify_can_never_work() -> None:
    """Found by the hostile tester: roots of 800 keys, RSA keys, version 10^30."""
    from securesystemslib.signer import SSlibKey

    root = pr.load_root(pr.new_root("acme", KEYS, 2, now=NOW))
    rsa_key = SSlibKey.from_crypto(rsa.generate_private_key(65537, 2048).public_key())
    root.signed.add_key(rsa_key, "root")
    root.signed.version = 10**30
    found = pr.problems(pr.to_bytes(root), now=NOW)
    assert (
        f"key {rsa_key.keyid[:16]} is rsa/rsassa-pss-sha256: Ed25519 or ECDSA P-256 only" in found
    )
    assert f"version {10**30} is above 999999999, the highest nodes serve" in found
    many = pr.load_root(pr.new_root("acme", KEYS, 2, now=NOW))
    for k in range(65):
        extra = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([k + 100]) * 32)
        many.signed.add_key(SSlibKey.from_crypto(extra.public_key()), "targets")
    assert "it names 68 keys; a root has at most 64" in pr.problems(pr.to_bytes(many), now=NOW)
