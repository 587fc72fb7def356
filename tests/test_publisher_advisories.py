"""Advisories on a publisher's releases (revoked, deprecated, superseded), signed by
the advisories role its targets delegate to, heard by a node through its TUF client
and applied by the node's own policy at the run gate.

Repository-simulator style: the publisher is sovnet's own repository code
(PublisherFiles) in a state directory; the node is sovnet's TUF client
(PublisherMetadata) whose "peers" hand out the publisher's files from memory. No
sockets: the same client over the real control plane is in test_publisher_metadata.py
and tests/e2e/test_publisher_release.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st
from tuf.api.metadata import Metadata

from sovnet.core.address import PeerAddress
from sovnet.daemon.publisher_metadata import PublisherMetadata
from sovnet.errors import InvalidInputError, RevokedError, SovnetError, TrustError
from sovnet.net.control import METADATA_NAME, PeerRequestError
from sovnet.run.admission import admit
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.publisherfiles import PublisherFiles
from sovnet.store.rootfiles import RootFiles
from sovnet.store.store import Store
from sovnet.trust import publisher_advisories as pa
from sovnet.trust import publisher_root as pr
from sovnet.trust import publisher_targets as pt
from tests.test_node import publish_model

NOW = datetime.datetime.now(datetime.UTC)
HOLDERS = [
    pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([k]) * 32))
    for k in (1, 2, 3)
]
ONLINE = pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
CERT = [
    pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([k]) * 32))
    for k in (21, 22, 23)
]
PEER = PeerAddress.parse("127.0.0.1:9")


class Peers:
    """The node's peers, as far as its TUF client sees them: files of the publisher's
    repository by name, from whichever state directory ``serving`` names (and, for
    more peers than one, ``others``: address -> state directory)."""

    def __init__(self, serving: Path) -> None:
        self.serving = serving
        self.others: dict[PeerAddress, Path] = {}
        self.asked: list[str] = []

    def addresses(self) -> list[PeerAddress]:
        return [*self.others, PEER]

    async def publisher_file(self, peer: PeerAddress, publisher: str, name: str) -> bytes | None:
        self.asked.append(name)
        if not METADATA_NAME.fullmatch(name):  # what the control plane's route serves
            raise PeerRequestError(f"{peer} answered HTTP 400 for {name}")
        return PublisherFiles(self.others.get(peer, self.serving), publisher).file(name)


class World:
    """A publisher acme (2-of-3 root, releases acme/model@1 and @2) on its node's
    state directory, and a node that pinned acme's root and holds both models."""

    def __init__(self, tmp_path: Path) -> None:
        self.publisher = tmp_path / "publisher"
        self.node = tmp_path / "node"
        self.publisher.mkdir()
        draft = pr.new_root(
            "acme", [h.public_key for h in HOLDERS], 2, now=NOW, online=ONLINE.public_key
        )
        self.root = pr.sign(pr.sign(draft, HOLDERS[0]), HOLDERS[1])
        self.files = PublisherFiles(self.publisher, "acme")
        self.files.install_root(self.root)
        NodeFiles(self.node).generate_key()
        self.cids = {v: publish_model(self.node, tmp_path / f"m{v}", 4096, v) for v in "12"}
        for version, cid in self.cids.items():
            self.install(self.release(version, Store(self.node).manifest_bytes(cid)))
        RootFiles(self.node).pin(self.root)
        self.peers = Peers(self.publisher)

    def release(self, version: str, manifest: bytes) -> bytes:
        current = self.files.latest("targets")
        return pt.release(
            current[1] if current else None, root=self.root, name="acme/model",
            version=version, manifest=manifest, now=NOW,
        )  # fmt: skip

    def install(self, targets: bytes, *signers: pr.CryptoSigner) -> None:
        for holder in signers or HOLDERS[:2]:
            targets = pt.sign(targets, holder, root=self.root)
        self.files.install_targets(targets, ONLINE, NOW)

    def advise(self, ref: str, kind: str | None, reason: str = "", **more: str) -> bytes:
        current = self.files.latest("advisories")
        return pa.advise(
            current[1] if current else None,
            targets=self.targets(),
            root=self.root,
            ref=ref,
            kind=kind,
            reason=reason,
            now=NOW,
            **more,
        )

    def sign(self, advisories: bytes, *signers: pr.CryptoSigner) -> bytes:
        for holder in signers:
            advisories = pa.sign(advisories, holder, targets=self.targets())
        return advisories

    def targets(self) -> bytes:
        latest = self.files.latest("targets")
        assert latest is not None
        return latest[1]

    def metadata(self) -> PublisherMetadata:
        return PublisherMetadata(self.node, self.peers, self.peers.addresses, 5.0)  # type: ignore[arg-type]

    def refresh(self) -> None:
        asyncio.run(self.metadata().refresh("acme"))

    def equivocating_targets(self) -> bytes:
        """The next version of the releases, signed by two holders, in which
        acme/model@1 is model 2's manifest: what a publisher that equivocates signs."""
        from tuf.api.metadata import Targets

        changed = Metadata[Targets].from_bytes(self.targets())
        changed.signed.version += 1
        changed.signed.targets["acme/model/1"] = changed.signed.targets["acme/model/2"]
        changed.signatures.clear()
        for holder in HOLDERS[:2]:
            changed.sign(holder, append=True)
        return pr.to_bytes(changed)

    def hostile(
        self, targets: bytes, advisories: bytes | None = None, listed: int | None = None
    ) -> Path:
        """A peer's state directory serving ``targets`` (and ``advisories``) as the
        publisher's newest, with a snapshot and timestamp the online key signed: what a
        thief of the online key, or of enough holders' keys, can serve."""
        hostile = self.publisher.parent / f"hostile-{len(list(self.publisher.parent.iterdir()))}"
        hostile.mkdir()
        served = PublisherFiles(hostile, "acme")
        latest = self.files.latest("snapshot")
        version = (latest[0] if latest else 0) + 1
        timestamp = self.files.file("timestamp.json")
        stamp = Metadata.from_bytes(timestamp).signed.version + 1 if timestamp else version
        advised = pa.check(advisories, targets=targets).version if advisories else listed
        snapshot, timestamp = pt.online_metadata(
            targets, snapshot_version=version, timestamp_version=stamp, online=ONLINE, now=NOW,
            advisories_version=advised,
        )  # fmt: skip
        files = {
            "1.root.json": self.root,
            f"{pt.version_of(targets)}.targets.json": targets,
            f"{version}.snapshot.json": snapshot,
            "timestamp.json": timestamp,
        }
        if advisories is not None:
            files[f"{advised}.advisories.json"] = advisories  # (listed and not served: none)
        served.directory.mkdir(parents=True)
        for name, data in files.items():
            (served.directory / name).write_bytes(data)
        return hostile

    def heard(self) -> dict[str, str]:
        return {
            f"{a.release.name}@{a.release.version}": a.kind
            for a in RootFiles(self.node).advisories()
        }

    def admit(self, ref: str, **options: bool) -> object:
        store = Store(self.node)
        return admit(store, NodeFiles(self.node).load_trust(), ref, runnable=False, **options)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_revoked_release_is_refused_naming_the_advisory_and_runs_when_allowed(
    world: World,
) -> None:
    revoked = world.advise("acme/model@1", "revoked", "the tokenizer leaks prompts")
    world.files.install_advisories(world.sign(revoked, *HOLDERS[1:]), ONLINE, NOW)
    assert world.heard() == {}  # nothing is heard before a refresh
    world.admit("acme/model@1")
    world.refresh()
    assert world.heard() == {"acme/model@1": "revoked"}
    with pytest.raises(RevokedError) as refused:
        world.admit("acme/model@1")
    said = refused.value.message
    assert "revoked" in said and "the tokenizer leaks prompts" in said
    assert HOLDERS[1].public_key.keyid[:16] in said and HOLDERS[2].public_key.keyid[:16] in said
    assert "--allow-revoked" in (refused.value.hint or "")
    with pytest.raises(RevokedError):  # by CID too: the advisory names the bytes
        world.admit(str(world.cids["1"]))
    allowed = world.admit("acme/model@1", allow_revoked=True)
    assert "revoked" in allowed.advisories[0]  # type: ignore[attr-defined]
    assert Store(world.node).has(world.cids["1"])  # nothing is deleted
    assert world.admit("acme/model@2").advisories == ()  # type: ignore[attr-defined]


def test_deprecated_and_superseded_warn_and_a_withdrawn_advisory_is_gone(world: World) -> None:
    advised = world.advise("acme/model@1", "superseded", "fixed in 2", superseded_by="acme/model@2")
    world.files.install_advisories(world.sign(advised, *HOLDERS[:2]), ONLINE, NOW)
    world.refresh()
    [warning] = world.admit("acme/model@1").advisories  # type: ignore[attr-defined]
    assert "superseded" in warning and "use acme/model@2" in warning
    withdrawn = world.advise("acme/model@1", None)
    world.files.install_advisories(world.sign(withdrawn, *HOLDERS[:2]), ONLINE, NOW)
    world.refresh()
    assert world.heard() == {}
    assert world.admit("acme/model@1").advisories == ()  # type: ignore[attr-defined]


def test_a_cert_the_publisher_delegated_to_advises_with_its_own_threshold(world: World) -> None:
    delegated = pt.delegate_advisories(
        world.targets(), root=world.root, keys=[c.public_key for c in CERT], threshold=2, now=NOW
    )
    world.install(delegated)
    revoked = world.advise("acme/model@2", "revoked", "CERT-2026-0042: poisoned weights")
    with pytest.raises(TrustError, match="does not sign"):
        world.sign(revoked, HOLDERS[0])  # the publisher's keys no longer sign advisories
    with pytest.raises(TrustError, match="signed by 1 of"):
        world.files.install_advisories(world.sign(revoked, CERT[0]), ONLINE, NOW)
    world.files.install_advisories(world.sign(revoked, CERT[0], CERT[2]), ONLINE, NOW)
    world.refresh()
    assert world.heard() == {"acme/model@2": "revoked"}


def test_advisories_signed_outside_the_role_are_refused_by_the_node(world: World) -> None:
    """A peer (or a thief of one key) serves advisories the role's threshold did not
    sign: the node refuses them and keeps what it heard before."""
    first = world.advise("acme/model@1", "deprecated", "old")
    world.files.install_advisories(world.sign(first, *HOLDERS[:2]), ONLINE, NOW)
    world.refresh()
    assert world.heard() == {"acme/model@1": "deprecated"}
    forged = world.advise("acme/model@2", "revoked", "trust me")
    forged = pa.sign(forged, HOLDERS[0], targets=world.targets())  # 1 of a threshold of 2
    # The publisher's node would refuse to install it; a hostile peer serves it anyway,
    # with a snapshot the online key signed for it (the online key is not enough).
    hostile = world.hostile(world.targets(), forged)
    world.peers.serving = hostile
    with pytest.raises(TrustError, match="refused"):
        world.refresh()
    assert world.heard() == {"acme/model@1": "deprecated"}


def test_releases_that_change_a_release_are_refused_with_an_alert(world: World) -> None:
    """Equivocation: the publisher's keys (or a thief of enough of them) sign releases
    in which acme/model@1 is another manifest. TUF accepts a newer version; sovnet
    refuses it, puts back what it trusted, and says so in the log and `status`."""

    world.refresh()
    world.peers.serving = world.hostile(world.equivocating_targets())
    metadata = world.metadata()
    for _ in range(2):  # refused again on the next refresh: the old state was put back
        with pytest.raises(TrustError, match="equivocates") as refused:
            asyncio.run(metadata.refresh("acme"))
        assert "acme/model/1: released before as " + str(world.cids["1"]) in refused.value.message
    assert len(metadata.alerts) == 1 and "equivocates" in metadata.alerts[-1]
    release = RootFiles(world.node).resolve("acme/model@1")
    assert release is not None and release.cid == world.cids["1"]
    world.peers.serving = world.publisher  # the honest publisher's metadata still works
    asyncio.run(metadata.refresh("acme"))


def test_releases_changed_behind_advisories_no_peer_sends_are_refused_all_the_same(
    world: World,
) -> None:
    """The client keeps new targets before it fails to get the advisories the snapshot
    lists: the check that a release stays runs after a failed refresh too."""

    world.refresh()
    world.peers.serving = world.hostile(world.equivocating_targets(), listed=7)
    metadata = world.metadata()
    with pytest.raises(TrustError, match="equivocates"):
        asyncio.run(metadata.refresh("acme"))
    release = RootFiles(world.node).resolve("acme/model@1")
    assert release is not None and release.cid == world.cids["1"]
    assert len(metadata.alerts) == 1


def test_advisories_a_peer_withholds_are_said_at_the_gate(world: World) -> None:
    """The snapshot lists advisories the node could not get (the only peer withholds
    them): the refresh fails, and the run gate says that advisories exist unheard."""
    revoked = world.advise("acme/model@1", "revoked", "bad weights")
    world.files.install_advisories(world.sign(revoked, *HOLDERS[:2]), ONLINE, NOW)
    [advisories] = world.files.directory.glob("*.advisories.json")
    advisories.rename(advisories.with_suffix(".hidden"))
    with pytest.raises(SovnetError, match=r"1\.advisories\.json"):
        world.refresh()
    [warning] = world.admit("acme/model@1").advisories  # type: ignore[attr-defined]
    assert "acme signed advisories version 1, which this node has not heard" in warning
    advisories.with_suffix(".hidden").rename(advisories)
    world.refresh()
    with pytest.raises(RevokedError):
        world.admit("acme/model@1")


def test_a_stale_peer_asked_first_does_not_hide_a_revocation(world: World, tmp_path: Path) -> None:
    """Every peer is asked for the timestamp and the newest is taken: an honest but
    stale peer (or one hiding advisories) answering first is not taken at its word."""
    import shutil

    world.refresh()
    stale = tmp_path / "stale"
    shutil.copytree(world.publisher, stale)  # a peer that refreshed a while ago
    world.peers.others = {PeerAddress.parse("127.0.0.1:8"): stale}
    revoked = world.advise("acme/model@1", "revoked", "bad weights")
    world.files.install_advisories(world.sign(revoked, *HOLDERS[:2]), ONLINE, NOW)
    world.refresh()
    assert world.heard() == {"acme/model@1": "revoked"}


def test_a_publisher_cannot_revoke_another_s_model_by_releasing_its_bytes(
    world: World,
) -> None:
    """evil (pinned here too, for its own models) releases acme/model@1's manifest as
    evil/x@1 and revokes that: its advisory names a release of evil's, not acme's
    model, whose run goes on (found by the hostile tester)."""
    import hashlib

    from tuf.api.metadata import TargetFile, Targets

    evil = pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([99]) * 32))
    root = pr.sign(pr.new_root("evil", [evil.public_key], 1, now=NOW, online=evil.public_key), evil)
    PublisherFiles(world.publisher, "evil").install_root(root)
    RootFiles(world.node).pin(root)
    victim = Store(world.node).manifest_bytes(world.cids["1"])

    def target(path: str, **custom: str) -> TargetFile:
        digest = {"sha256": hashlib.sha256(victim).hexdigest()}
        fields = {"custom": {"cid": str(world.cids["1"]), **custom}}
        return TargetFile(len(victim), digest, path, unrecognized_fields=fields)

    targets = Targets(version=1, expires=NOW + datetime.timedelta(days=9))
    targets.targets["evil/x/1"] = target("evil/x/1")
    targets.targets["evil/x:latest"] = target("evil/x:latest", release="evil/x/1")
    signed = pt.delegate_advisories(
        pr.to_bytes(Metadata(targets)), root=root, keys=[evil.public_key], threshold=1, now=NOW
    )
    files = PublisherFiles(world.publisher, "evil")
    files.install_targets(pt.sign(signed, evil, root=root), evil, NOW)
    revoked = pa.advise(
        None, targets=files.latest("targets")[1], root=root, ref="evil/x@1",  # type: ignore[index]
        kind="revoked", reason="acme's model is malware: use evil/x", now=NOW,
    )  # fmt: skip
    files.install_advisories(pa.sign(revoked, evil, targets=files.latest("targets")[1]), evil, NOW)  # type: ignore[index]
    asyncio.run(world.metadata().refresh("evil"))
    assert world.heard() == {"evil/x@1": "revoked"}
    assert world.admit("acme/model@1").advisories == ()  # type: ignore[attr-defined]


def test_a_name_no_peer_serves_is_not_asked_and_blames_no_peer(world: World) -> None:
    """A root may delegate a role, or reach a version, whose file name the control
    plane does not serve: the client is told "not found", no peer is asked, and none
    is marked failing for it."""
    from tuf.api.exceptions import DownloadHTTPError

    from sovnet.daemon.publisher_metadata import PeerMetadata

    async def fetch() -> PeerMetadata:
        loop = asyncio.get_running_loop()
        fetcher = PeerMetadata(world.peers, world.peers.addresses, loop, 5.0)  # type: ignore[arg-type]
        with pytest.raises(DownloadHTTPError):
            await asyncio.to_thread(fetcher.fetch, "sovnet://acme/1.Zz-role.json")
        with pytest.raises(DownloadHTTPError):
            await asyncio.to_thread(fetcher.fetch, f"sovnet://acme/{10**12}.root.json")
        return fetcher

    fetcher = asyncio.run(fetch())
    assert fetcher.unreachable == {} and world.peers.asked == []


@pytest.mark.parametrize(
    ("ref", "kind", "reason", "more", "error"),
    [
        ("acme/model@9", "revoked", "x", {}, "not among"),
        ("acme/model", "revoked", "x", {}, "names no version"),
        ("acme/model@1", "banned", "x", {}, "not an advisory"),
        ("acme/model@1", "revoked", "", {}, "one line"),
        ("acme/model@1", "revoked", "a\x1b[2Jb", {}, "one line"),
        ("acme/model@1", "revoked", "a\u202eb", {}, "one line"),
        ("acme/model@1", "revoked", "a\u061cb", {}, "one line"),  # Arabic letter mark
        ("acme/model@1", "revoked", "a\u2060b\ufeff", {}, "one line"),  # invisible
        ("acme/model@1", "revoked", "a\u00adb", {}, "one line"),  # soft hyphen
        ("acme/model@1", "revoked", "a\U000e0041b", {}, "one line"),  # a tag character
        ("acme/model@1", "revoked", "a" + "\u0301" * 200, {}, "one line"),  # stacked marks
        ("acme/model@1", "revoked", "x" * 1001, {}, "one line"),
        ("acme/model@1", "superseded", "x", {}, "names its successor"),
        ("acme/model@1", "superseded", "x", {"superseded_by": "acme/model@7"}, "not among"),
        ("acme/model@1", "deprecated", "x", {"superseded_by": "acme/model@2"}, "goes with"),
        ("acme/model@1", None, "", {}, "no advisory to withdraw"),
    ],
)
def test_bad_advisories_are_refused_before_anyone_signs(
    world: World, ref: str, kind: str | None, reason: str, more: dict[str, str], error: str
) -> None:
    with pytest.raises(SovnetError, match=error):
        world.advise(ref, kind, reason, **more)


def test_an_advisory_names_the_release_s_bytes_not_only_its_path(world: World) -> None:
    """Targets whose acme/model/1 holds other bytes (signed by the threshold all the
    same: a publisher's node never installs such, a release stays) do not carry the
    advisory made for the release's bytes."""
    from tuf.api.metadata import Metadata, Targets

    signed = world.sign(world.advise("acme/model@1", "revoked", "bad"), *HOLDERS[:2])
    [advisory] = pa.advisories_in(signed, targets=world.targets(), root=world.root)
    assert advisory.release.cid == world.cids["1"]
    changed = Metadata[Targets].from_bytes(world.targets())
    files = changed.signed.targets
    files["acme/model/1"] = files["acme/model/2"]
    changed.signatures.clear()
    for holder in HOLDERS[:2]:
        changed.sign(holder, append=True)
    assert pa.advisories_in(signed, targets=pr.to_bytes(changed), root=world.root) == []


def test_tuf_verifies_sovnet_advisories_as_a_delegated_role(world: World) -> None:
    """A third party with a stock TUF library verifies the advisories from the
    targets that delegate them (`Metadata.verify_delegate`)."""
    from tuf.api.metadata import Metadata

    advised = world.sign(world.advise("acme/model@1", "revoked", "bad"), *HOLDERS[:2])
    world.files.install_advisories(advised, ONLINE, NOW)
    targets = Metadata.from_bytes(world.targets())
    targets.verify_delegate(pt.ADVISORIES_ROLE, Metadata.from_bytes(advised))
    [path] = Metadata.from_bytes(advised).signed.targets
    assert path == "advisories/acme/model/1"
    assert targets.signed.delegations is not None
    role = targets.signed.delegations.roles[pt.ADVISORIES_ROLE]  # type: ignore[index]
    assert role.is_delegated_path(path) and not role.is_delegated_path("acme/model/1")


@given(st.text(max_size=60))
def test_a_reason_shown_is_one_plain_line(text: str) -> None:
    """Whatever text a publisher writes, a reason that passes hides nothing: no control,
    format, private, unassigned or separator character, and few combining marks."""
    import unicodedata

    if pa.plain_line(text):
        assert text and all(
            unicodedata.category(c) not in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"} for c in text
        )
    printable = "".join(c for c in text if unicodedata.category(c)[0] in "LNPS" or c == " ")
    if printable and not any(unicodedata.combining(c) for c in printable):
        assert pa.plain_line(printable)


@pytest.mark.parametrize(
    ("issued", "valid"),
    [("2026-12-02", True), ("9999-99-99", False), ("\u0662\u0660\u0662\u0666-01-01", False),
     ("2026-1-1", False), (20261202, False)],
)  # fmt: skip
def test_an_advisory_s_date_is_a_real_ascii_date(world: World, issued: object, valid: bool) -> None:
    from tuf.api.metadata import Targets

    made = Metadata[Targets].from_bytes(world.advise("acme/model@1", "revoked", "bad"))
    [target] = made.signed.targets.values()
    target.unrecognized_fields["custom"]["issued"] = issued
    signed = world.sign(pr.to_bytes(Metadata(made.signed)), *HOLDERS[:2])
    found = pa.advisories_in(signed, targets=world.targets(), root=world.root)
    assert (len(found) == 1) is valid


def test_releases_of_a_version_no_node_can_ask_for_are_not_installed(world: World) -> None:
    from tuf.api.metadata import Targets

    far = Metadata[Targets].from_bytes(world.targets())
    far.signed.version = 10**9
    far.signatures.clear()
    with pytest.raises(InvalidInputError, match="above 999999999"):
        world.install(pr.to_bytes(far))
    assert pt.version_of(world.targets()) == 2  # what was installed stays the newest


def _rotated_out(world: World, holder: pr.CryptoSigner) -> None:
    """Root version 2 without ``holder``'s key (signed by 2 old and 2 new holders),
    installed on the publisher's node; its next releases are signed under it."""
    rotated = pr.rotate(world.root, remove=[holder.public_key.keyid], now=NOW)
    kept = [h for h in HOLDERS if h is not holder]
    for signer in kept[:2]:
        rotated = pr.sign(rotated, signer, previous=world.root)
    world.files.install_root(rotated)
    world.root = rotated


def test_a_key_rotated_out_of_the_root_signs_no_advisory_after_the_next_release(
    world: World,
) -> None:
    """The default advisories role is the root's targets keys as they are at each
    release, not a copy of them made at the first: once a stolen key is rotated out
    and the next releases are out, the thief alone cannot revoke, and nodes refuse
    advisories it signed."""
    stolen = HOLDERS[2]
    role = pt.advisory_role(world.targets())
    assert role is not None and stolen.public_key.keyid in role.keyids
    _rotated_out(world, stolen)
    world.install(world.release("2", Store(world.node).manifest_bytes(world.cids["2"])))
    role = pt.advisory_role(world.targets())
    assert role is not None and pt.follows_targets_keys(role)
    assert sorted(role.keyids) == sorted(h.public_key.keyid for h in HOLDERS[:2])
    forged = world.advise("acme/model@1", "revoked", "trust me")
    with pytest.raises(TrustError, match="does not sign"):
        world.sign(forged, stolen)
    # Signed all the same (by hand) and served by a hostile peer: the node refuses it.
    signed = Metadata.from_bytes(forged)
    signed.sign(stolen, append=True)
    signed.sign(HOLDERS[0], append=True)  # one holder still in, fooled: 1 of 2
    world.peers.serving = world.hostile(world.targets(), pr.to_bytes(signed))
    with pytest.raises(TrustError, match="refused"):
        world.refresh()
    assert world.heard() == {}


def test_advisories_delegated_to_other_keys_stay_with_them_through_a_rotation(
    world: World,
) -> None:
    world.install(
        pt.delegate_advisories(
            world.targets(), root=world.root, keys=[c.public_key for c in CERT], threshold=2,
            now=NOW,
        )
    )  # fmt: skip
    _rotated_out(world, HOLDERS[2])
    world.install(world.release("2", Store(world.node).manifest_bytes(world.cids["2"])))
    role = pt.advisory_role(world.targets())
    assert role is not None and not pt.follows_targets_keys(role)
    assert sorted(role.keyids) == sorted(c.public_key.keyid for c in CERT)


def test_advisories_a_rotated_out_key_signed_are_renewed_before_the_next_release(
    world: World,
) -> None:
    """Advisories installed before the rotation, signed by the key rotated out and
    one kept: the next releases would leave them short of signatures, so they are
    refused until the advisories are signed again by keys that stay (the order the
    hint gives)."""
    stolen = HOLDERS[2]
    first = world.sign(world.advise("acme/model@1", "deprecated", "old"), HOLDERS[1], stolen)
    world.files.install_advisories(first, ONLINE, NOW)
    _rotated_out(world, stolen)
    manifest = Store(world.node).manifest_bytes(world.cids["2"])
    with pytest.raises(TrustError, match="advisories") as refused:
        world.install(world.release("2", manifest))
    assert "publisher advise" in (refused.value.hint or "")
    again = world.sign(world.advise("acme/model@1", "deprecated", "old"), *HOLDERS[:2])
    world.files.install_advisories(again, ONLINE, NOW)
    world.install(world.release("2", manifest))
    world.refresh()
    assert world.heard() == {"acme/model@1": "deprecated"}


def test_a_revocation_heard_stays_heard_across_a_rotation_of_the_releases_keys(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """A rotation that retires a releases key makes the releases and advisories this
    node trusted unverifiable under the new root. Until the next releases arrive (a
    hostile peer can withhold them), they stay trusted under the root they were
    trusted by: a revocation does not fall silent, and names still resolve."""
    revoked = world.sign(world.advise("acme/model@1", "revoked", "backdoor"), *HOLDERS[:2])
    world.files.install_advisories(revoked, ONLINE, NOW)
    world.refresh()
    assert world.heard() == {"acme/model@1": "revoked"}
    _rotated_out(world, HOLDERS[1])  # no new releases under version 2 yet
    caplog.set_level("INFO")
    with pytest.raises(TrustError, match="targets was signed by 1/2 keys"):
        world.refresh()  # the releases served are version 1's, signed under root 1
    assert "publisher acme: followed its root to version 2 (fingerprint " in caplog.text
    roots = RootFiles(world.node)
    assert roots.pinned()[0].check.version == 2  # the node followed the rotation
    assert world.heard() == {"acme/model@1": "revoked"}
    with pytest.raises(RevokedError, match="backdoor"):
        world.admit("acme/model@1")
    found = roots.resolve("acme/model@2")
    assert found is not None and found.cid == world.cids["2"]


def test_releases_that_change_a_release_never_reach_what_other_processes_read(
    world: World,
) -> None:
    """python-tuf keeps the new targets before the advisories are asked for, and the
    equivocation is found after both: a gate in another process (`sovnet run`), or a
    node killed meanwhile, read the live directory, which the client never writes."""
    world.refresh()
    world.peers.serving = world.hostile(world.equivocating_targets(), listed=7)
    seen: list[object] = []
    ask = world.peers.publisher_file

    async def watching(peer: PeerAddress, publisher: str, name: str) -> bytes | None:
        if name.endswith(".advisories.json"):  # while the client waits for a peer
            found = RootFiles(world.node).resolve("acme/model@1")
            seen.append(found.cid if found else None)
        return await ask(peer, publisher, name)

    world.peers.publisher_file = watching  # type: ignore[method-assign]
    with pytest.raises(TrustError, match="equivocates"):
        world.refresh()
    assert seen == [world.cids["1"]]
    assert not list(world.node.glob("roots/.*"))  # the copy it worked in is gone


def test_a_next_root_not_as_its_holders_were_shown_is_not_followed(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """Version 2 of the root, signed by enough holders of version 1 and 2, in which
    one key alone signs releases (a draft edited before they signed): peers serve it,
    and the node stays on version 1, saying why (hostile tester's H2)."""
    import shutil

    world.refresh()
    drafted = Metadata.from_bytes(pr.rotate(world.root, now=NOW))
    drafted.signed.roles["targets"].keyids = [HOLDERS[0].public_key.keyid]
    drafted.signed.roles["targets"].threshold = 1
    drafted.signatures.clear()
    for holder in HOLDERS[:2]:
        drafted.sign(holder, append=True)
    hostile = world.publisher.parent / "hostile-root"
    shutil.copytree(world.publisher, hostile)
    served = PublisherFiles(hostile, "acme").directory
    (served / "2.root.json").write_bytes(pr.to_bytes(drafted))
    world.peers.serving = hostile
    metadata = world.metadata()
    asyncio.run(metadata.refresh("acme"))  # the rest of its metadata still refreshes
    assert RootFiles(world.node).pinned()[0].check.version == 1
    assert "root version 2 is signed by its holders but can never work (its releases " in (
        caplog.text
    )
    assert "this node stays on version 1" in caplog.text
    assert any("can never work" in alert for alert in metadata.alerts)  # sovnet status


def _thief_peer(world: World, targets: bytes, root2: bytes | None = None) -> None:
    """A peer asked before the honest one, serving the publisher's files but these."""
    import shutil

    served = world.publisher.parent / "thief" / "publishers" / "acme"
    served.mkdir(parents=True)
    for path in world.files.directory.iterdir():
        shutil.copy(path, served / path.name)
    (served / f"{pt.version_of(targets)}.targets.json").write_bytes(targets)
    if root2 is not None:
        (served / "2.root.json").write_bytes(root2)
    world.peers.others[PeerAddress.parse("127.0.0.1:7")] = served.parents[1]


def _stolen_releases(world: World, version: int) -> tuple[bytes, object]:
    """Releases ``version`` as a thief of HOLDERS[0] and [1] signs them: acme/model@666."""
    from tuf.api.metadata import TargetFile, Targets

    from sovnet.core.cid import CID

    forged = Metadata[Targets].from_bytes(world.files.file("2.targets.json"))
    forged.signed.version = version
    model = forged.signed.targets["acme/model/2"]
    cid = CID.of(b"the thief's manifest")
    forged.signed.targets["acme/model/666"] = TargetFile(
        model.length, dict(model.hashes), "acme/model/666", {"custom": {"cid": str(cid)}}
    )
    forged.signatures.clear()
    for holder in HOLDERS[:2]:
        forged.sign(holder, append=True)
    return pr.to_bytes(forged), cid


def _rotate_out_two(world: World) -> tuple[pr.CryptoSigner, object]:
    """Root version 2 without HOLDERS[0] and [1] (stolen), and releases under it."""
    new = [
        pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([k]) * 32))
        for k in (41, 42)
    ]
    stolen = [h.public_key.keyid for h in HOLDERS[:2]]
    rotated = pr.rotate(world.root, remove=stolen, add=[k.public_key for k in new], now=NOW)
    for holder in (*HOLDERS, new[0]):
        rotated = pr.sign(rotated, holder, previous=world.root)
    world.files.install_root(rotated)
    world.root = rotated
    cid = publish_model(world.node, world.publisher.parent / "m4", 4096, "4")
    world.install(world.release("4", Store(world.node).manifest_bytes(cid)), HOLDERS[2], new[0])
    return new[0], cid


def test_unsigned_junk_for_the_next_root_does_not_keep_a_node_on_the_old_one(
    world: World,
) -> None:
    """Hostile tester's second round: the 'not followed if it can never work' rule ran
    on unverified bytes, so a peer's junk 2.root.json (with a 'problem') froze the node
    on root 1, whose stolen keys then signed releases. Junk is python-tuf's to refuse,
    and the peer's to be blamed for; the real next root is followed."""
    world.refresh()
    _, honest = _rotate_out_two(world)
    junk = json.loads(world.files.file("2.root.json") or b"")
    junk["signed"]["roles"]["targets"]["threshold"] = 1  # a 'problem'; signatures broken
    forged, _ = _stolen_releases(world, pt.version_of(world.targets()))
    _thief_peer(world, forged, json.dumps(junk).encode())
    world.refresh()
    roots = RootFiles(world.node)
    assert roots.pinned()[0].check.version == 2
    assert roots.resolve("acme/model@666") is None
    found = roots.resolve("acme/model@4")
    assert found is not None and found.cid == honest


def test_a_split_view_signed_by_stolen_keys_ends_with_the_rotation_that_removes_them(
    world: World,
) -> None:
    """A thief of two releases keys shows a node its own releases (acme/model@666).
    The publisher rotates the keys out and releases again: the node follows the new
    root, and the thief's releases, signed by keys it no longer names, bind nothing
    (a refused 'equivocation' committed nothing, not even the new root)."""
    world.refresh()
    cid3 = publish_model(world.node, world.publisher.parent / "m3", 4096, "3")
    world.install(world.release("3", Store(world.node).manifest_bytes(cid3)))
    forged, planted = _stolen_releases(world, pt.version_of(world.targets()))
    _thief_peer(world, forged)
    world.refresh()
    roots = RootFiles(world.node)
    stolen = roots.resolve("acme/model@666")
    assert stolen is not None and stolen.cid == planted  # TUF's limit, keys stolen
    world.peers.others.clear()  # the thief is gone
    _, honest = _rotate_out_two(world)
    world.refresh()
    assert roots.pinned()[0].check.version == 2
    assert roots.resolve("acme/model@666") is None
    found = roots.resolve("acme/model@4")
    assert found is not None and found.cid == honest


def test_one_key_spelled_two_ways_is_one_key(world: World) -> None:
    """Upper-case hex is the same Ed25519 key, with another 'own' id: a root naming a
    holder twice that way could be completed by that holder alone."""
    from securesystemslib.signer import SSlibKey

    doubled = Metadata.from_bytes(pr.rotate(world.root, now=NOW))
    key = HOLDERS[0].public_key
    twin = SSlibKey.from_dict(
        "x", {"keytype": key.keytype, "scheme": key.scheme,
              "keyval": {"public": key.keyval["public"].upper()}}
    )  # fmt: skip
    from securesystemslib.signer._utils import compute_default_keyid

    twin.keyid = compute_default_keyid(twin.keytype, twin.scheme, twin.keyval)
    doubled.signed.add_key(twin, "root")
    found = pr.problems(pr.to_bytes(doubled), now=NOW)
    assert any("is not written the one way sovnet writes it" in line for line in found), found


@pytest.mark.parametrize("change", ["unpin", "replace"])
def test_an_operator_s_trust_change_during_a_refresh_stands(world: World, change: str) -> None:
    """`trust rm` or `trust add --replace` while the daemon refreshes: the refresh's
    commit crashed sovnetd (a directory gone) or put the old root back."""
    world.refresh()
    roots = RootFiles(world.node)
    other = pr.new_root("acme", [HOLDERS[2].public_key], 1, now=NOW, online=ONLINE.public_key)
    other = pr.sign(other, HOLDERS[2])
    ask = world.peers.publisher_file

    async def meanwhile(peer: PeerAddress, publisher: str, name: str) -> bytes | None:
        if name == "timestamp.json" and roots.is_pinned("acme"):
            if change == "unpin":
                roots.unpin("acme")
            elif roots.pinned()[0].check.keys != (HOLDERS[2].public_key.keyid,):
                roots.pin(other, replace=True)
        return await ask(peer, publisher, name)

    world.peers.publisher_file = meanwhile  # type: ignore[method-assign]
    with contextlib.suppress(SovnetError):  # refused or not: no crash, and it stands
        world.refresh()
    if change == "unpin":
        assert not roots.is_pinned("acme")
    else:
        assert roots.pinned()[0].check.keys == (HOLDERS[2].public_key.keyid,)


@pytest.mark.parametrize("rotation", ["raise the threshold", "rotate the thief's keys out"])
def test_a_rotation_by_a_thief_of_enough_keys_never_changes_a_release(
    world: World, rotation: str
) -> None:
    """Hostile tester's third round: a thief of two of three keys signs root version 2
    (its own key added and the threshold raised, or its stolen keys swapped for its
    own), chained as TUF asks, so that the releases trusted before no longer verify;
    its releases then name another CID for acme/model@1. Releases the current root
    does not vouch for may be dropped, never changed."""
    world.refresh()
    thief = [
        pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([k]) * 32))
        for k in (90, 91)
    ]
    if rotation == "raise the threshold":
        root2 = pr.rotate(world.root, add=[thief[0].public_key], threshold=3, now=NOW)
        signers = [*HOLDERS[:2], thief[0]]
    else:
        stolen = [h.public_key.keyid for h in HOLDERS[:2]]
        root2 = pr.rotate(world.root, remove=stolen, add=[k.public_key for k in thief], now=NOW)
        signers = thief
    for holder in (*HOLDERS[:2], *thief):
        with contextlib.suppress(TrustError):  # a key of neither version is refused
            root2 = pr.sign(root2, holder, previous=world.root)
    changed = Metadata.from_bytes(world.targets())
    changed.signed.version += 1
    changed.signed.targets["acme/model/1"] = changed.signed.targets["acme/model/2"]
    changed.signatures.clear()
    for holder in signers:
        changed.sign(holder, append=True)
    hostile = world.hostile(pr.to_bytes(changed))
    (hostile / "publishers" / "acme" / "2.root.json").write_bytes(root2)
    world.peers.serving = hostile
    metadata = world.metadata()
    with pytest.raises(TrustError, match="equivocates"):
        asyncio.run(metadata.refresh("acme"))
    release = RootFiles(world.node).resolve("acme/model@1")
    assert release is not None and release.cid == world.cids["1"]
    assert any("equivocates" in alert for alert in metadata.alerts)
