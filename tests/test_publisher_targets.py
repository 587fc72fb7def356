"""Releases and channels signed by a publisher root, checked by a stock TUF client
(python-tuf's ngclient Updater) the way a node will: through an untrusted transport
(here a dict of files; on a node, its peers), from a pinned root kept on disk."""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from tuf.api.exceptions import (
    BadVersionNumberError,
    DownloadHTTPError,
    ExpiredMetadataError,
    UnsignedMetadataError,
)
from tuf.ngclient import FetcherInterface, Updater

from sovnet.core.cid import CID
from sovnet.core.signing import PrivateKey
from sovnet.errors import InvalidInputError, TrustError
from sovnet.store.publish import publish
from sovnet.store.store import Store
from sovnet.trust import publisher_root as pr
from sovnet.trust import publisher_targets as pt

NOW = datetime.datetime.now(datetime.UTC)
HOLDERS = [
    pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([k]) * 32))
    for k in (1, 2, 3)
]
ONLINE = pr.CryptoSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
BASE = "sovnet://publisher/acme/"


class Files(FetcherInterface):
    """A repository's files by name; what is not there is a 404, as over HTTP."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def _fetch(self, url: str) -> Iterator[bytes]:
        name = url.removeprefix(BASE)
        if name not in self.files:
            raise DownloadHTTPError(f"{name} not found", 404)
        return iter([self.files[name]])


class Publisher:
    """A publisher's repository: root (2 of 3), targets, and the online metadata."""

    def __init__(self) -> None:
        draft = pr.new_root(
            "acme", [h.public_key for h in HOLDERS], 2, now=NOW, online=ONLINE.public_key
        )
        self.root = pr.sign(pr.sign(draft, HOLDERS[0]), HOLDERS[1])
        self.targets: bytes | None = None
        self.repo = Files()
        self.snapshots = 0

    def release(self, manifest: bytes, version: str, *signers: pr.CryptoSigner) -> bytes:
        draft = pt.release(
            self.targets, root=self.root, name="acme/tiny", version=version,
            manifest=manifest, now=NOW,
        )  # fmt: skip
        for holder in signers:
            draft = pt.sign(draft, holder, root=self.root)
        return draft

    def serve(self, targets: bytes, now: datetime.datetime = NOW) -> None:
        """Put ``targets`` out, with a new snapshot and timestamp (the node's job)."""
        self.targets = targets
        self.snapshots += 1
        snapshot, timestamp = pt.online_metadata(
            targets,
            snapshot_version=self.snapshots,
            timestamp_version=self.snapshots,
            online=ONLINE,
            now=now,
        )
        version = pt.check(targets, root=self.root).version
        self.repo.files.update(
            {
                f"{version}.targets.json": targets,
                f"{self.snapshots}.snapshot.json": snapshot,
                "timestamp.json": timestamp,
            }
        )


def _manifest(tmp_path: Path, version: str, content: bytes = b"{}") -> bytes:
    model = tmp_path / f"model-{version}-{len(content)}"
    model.mkdir()
    (model / "config.json").write_bytes(content)
    store = Store(tmp_path / f"store-{version}-{len(content)}").init()
    result = publish(
        store, PrivateKey.from_seed(bytes(32)), model, name="acme/tiny", version=version
    )
    return store.manifest_bytes(CID.parse(str(result.cid)))


def _node(tmp_path: Path, publisher: Publisher) -> Updater:
    """A node that pinned the publisher's root (version 1): its metadata kept on disk."""
    directory = tmp_path / "node-metadata"
    directory.mkdir(exist_ok=True)
    return Updater(str(directory), BASE, fetcher=publisher.repo, bootstrap=publisher.root)


def test_a_release_signed_by_two_of_three_is_found_by_name_and_channel(tmp_path: Path) -> None:
    publisher = Publisher()
    manifest = _manifest(tmp_path, "1.0")
    publisher.serve(publisher.release(manifest, "1.0", HOLDERS[0], HOLDERS[2]))

    node = _node(tmp_path, publisher)
    node.refresh()
    for ref in ("acme/tiny", "acme/tiny:latest", "acme/tiny@1.0"):
        found = pt.resolve(node.get_targetinfo, ref)
        assert found == pt.Release("acme/tiny", "1.0", CID.of(manifest)), ref
    info = node.get_targetinfo("acme/tiny/1.0")
    assert info is not None
    info.verify_length_and_hashes(manifest)  # the bytes a peer sends are checked so


def test_a_release_signed_by_one_of_three_is_refused(tmp_path: Path) -> None:
    publisher = Publisher()
    publisher.serve(publisher.release(_manifest(tmp_path, "1.0"), "1.0", HOLDERS[1]))
    assert not pt.check(publisher.targets or b"", root=publisher.root).complete
    with pytest.raises(UnsignedMetadataError):
        _node(tmp_path, publisher).refresh()


def test_a_channel_moves_and_an_older_targets_is_refused_after_a_restart(
    tmp_path: Path,
) -> None:
    publisher = Publisher()
    first, second = _manifest(tmp_path, "1.0"), _manifest(tmp_path, "2.0", b'{"a": 1}')
    publisher.serve(publisher.release(first, "1.0", HOLDERS[0], HOLDERS[1]))
    old_files = dict(publisher.repo.files)
    publisher.serve(publisher.release(second, "2.0", HOLDERS[0], HOLDERS[1]))
    node = _node(tmp_path, publisher)
    node.refresh()
    latest = pt.resolve(node.get_targetinfo, "acme/tiny")
    assert latest is not None and latest.cid == CID.of(second)

    # A peer serves the previous, validly signed metadata: the node, restarted
    # (a new Updater on the same directory), refuses to go back.
    publisher.repo.files = old_files
    with pytest.raises(BadVersionNumberError):
        _node(tmp_path, publisher).refresh()


def test_a_version_released_twice_with_other_bytes_is_refused(tmp_path: Path) -> None:
    publisher = Publisher()
    publisher.serve(publisher.release(_manifest(tmp_path, "1.0"), "1.0", *HOLDERS[:2]))
    other = _manifest(tmp_path, "1.0", b'{"other": true}')
    with pytest.raises(TrustError, match="already released as"):
        publisher.release(other, "1.0")


def test_a_key_rotated_out_no_longer_counts_for_releases(tmp_path: Path) -> None:
    publisher = Publisher()
    publisher.serve(publisher.release(_manifest(tmp_path, "1.0"), "1.0", *HOLDERS[:2]))
    node = _node(tmp_path, publisher)
    node.refresh()
    # Holder 2's key is stolen: holders 0 and 1 rotate it out (root version 2).
    v2 = pr.rotate(publisher.root, remove=[HOLDERS[2].public_key.keyid], now=NOW)
    for holder in HOLDERS[:2]:
        v2 = pr.sign(v2, holder, previous=publisher.root)
    assert pr.check(v2, previous=publisher.root).complete
    publisher.repo.files["2.root.json"] = v2
    publisher.root = v2
    # The thief and one honest holder sign a release: below threshold now.
    with pytest.raises(TrustError, match="does not sign this publisher's releases"):
        publisher.release(_manifest(tmp_path, "2.0", b"[]"), "2.0", HOLDERS[2])
    forged = pt.release(
        publisher.targets, root=publisher.root, name="acme/tiny", version="2.0",
        manifest=_manifest(tmp_path, "2.0", b"[1]"), now=NOW,
    )  # fmt: skip
    forged = pt.sign(forged, HOLDERS[0], root=publisher.root)
    forged_by_thief = _sign_anyway(forged, HOLDERS[2])
    publisher.serve(forged_by_thief)
    with pytest.raises(UnsignedMetadataError):
        _node(tmp_path, publisher).refresh()


def test_an_expired_timestamp_stops_new_releases(tmp_path: Path) -> None:
    publisher = Publisher()
    release = publisher.release(_manifest(tmp_path, "1.0"), "1.0", *HOLDERS[:2])
    publisher.serve(release, now=NOW - datetime.timedelta(days=2))  # the node went quiet
    with pytest.raises(ExpiredMetadataError):
        _node(tmp_path, publisher).refresh()


@pytest.mark.parametrize(
    ("name", "version", "channels", "message"),
    [
        ("other/tiny", "1.0", ("latest",), "not a model of publisher acme"),
        ("acme/tiny", "1.0/x", ("latest",), "not a version"),
        ("acme/tiny", "1.0", ("Latest!",), "not a channel name"),
        ("acme/tiny", "2.0", ("latest",), "not acme/tiny@2.0"),
    ],
)
def test_a_release_that_does_not_fit_is_refused(
    tmp_path: Path, name: str, version: str, channels: tuple[str, ...], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        pt.release(
            None, root=Publisher().root, name=name, version=version,
            manifest=_manifest(tmp_path, "1.0"), channels=channels, now=NOW,
        )  # fmt: skip


def _sign_anyway(data: bytes, holder: pr.CryptoSigner) -> bytes:
    """A signature added without asking whose key it is (what a thief's tool does)."""
    from tuf.api.metadata import Metadata, Targets

    metadata = Metadata[Targets].from_bytes(data)
    metadata.sign(holder, append=True)
    return metadata.to_bytes()


def _crafted(publisher: Publisher, extra: dict[str, dict[str, object]]) -> bytes:
    """The next targets with ``extra`` target entries as a hostile tool writes them,
    then signed by two holders (the threshold): well signed, badly made."""
    from tuf.api.metadata import Metadata, TargetFile, Targets

    metadata = Metadata[Targets].from_bytes(publisher.targets or b"")
    metadata.signed.version += 1
    for path, value in extra.items():
        metadata.signed.targets[path] = TargetFile.from_dict(dict(value), path)
    metadata.signatures.clear()
    data = metadata.to_bytes()
    for holder in HOLDERS[:2]:
        data = pt.sign(data, holder, root=publisher.root)
    return data


def test_well_signed_but_malformed_targets_name_nothing_and_are_not_installed(
    tmp_path: Path,
) -> None:
    from sovnet.store.publisherfiles import PublisherFiles

    publisher = Publisher()
    manifest = _manifest(tmp_path, "1.0")
    publisher.targets = publisher.release(manifest, "1.0", *HOLDERS[:2])
    sha = {"sha256": "ab" * 32}
    other = str(CID.of(b"other"))
    crafted = _crafted(
        publisher,
        {
            "acme/nocid/1.0": {"length": 10, "hashes": sha},  # no custom at all
            "evil/tiny/1.0": {"length": 10, "hashes": sha, "custom": {"cid": other}},
            "acme/tiny/1.0": {"length": 10, "hashes": sha, "custom": {"cid": other}},
            "acme/tiny:W!RD": {"length": 10, "hashes": sha, "custom": {"cid": other}},
        },
    )
    releases = pt.releases(crafted, root=publisher.root)
    assert [(r.name, r.version) for r in releases] == [("acme/tiny", "1.0")]  # no crash
    lookup = {p: f for p, f in _targets(crafted).items()}.get
    assert pt.resolve(lookup, "acme/nocid@1.0") is None
    assert pt.resolve(lookup, "acme/tiny:W!RD") is None

    state = tmp_path / "publisher-node"
    state.mkdir()
    files = PublisherFiles(state, "acme")
    files.install_root(publisher.root)
    files.install_targets(publisher.targets, ONLINE, NOW)
    with pytest.raises(TrustError) as refused:
        files.install_targets(crafted, ONLINE, NOW)
    said = refused.value.message
    for path in ("acme/nocid/1.0", "evil/tiny/1.0", "acme/tiny:W!RD"):
        assert path in said
    assert "acme/tiny/1.0: released before" in said
    assert files.latest("targets") is not None and files.latest("targets")[0] == 1


def test_a_release_of_another_name_is_not_trusted_by_the_gate(tmp_path: Path) -> None:
    from sovnet.core.signing import SignatureBundle
    from sovnet.trust.gate import open_manifest
    from sovnet.trust.keys import Released, TrustStore

    manifest = _manifest(tmp_path, "1.0")  # acme/tiny@1.0
    cid = CID.of(manifest)
    bundle = SignatureBundle(cid)
    digest, length = hashlib.sha256(manifest).hexdigest(), len(manifest)
    as_other = TrustStore(releases=(Released(cid, "acme/other", "2.0", "acme", digest, length),))
    with pytest.raises(TrustError, match=re.escape("is the manifest of acme/tiny@1.0")):
        open_manifest(cid, manifest, bundle, as_other)
    as_itself = TrustStore(releases=(Released(cid, "acme/tiny", "1.0", "acme", digest, length),))
    opened = open_manifest(cid, manifest, bundle, as_itself)
    assert opened.trusted and opened.released_as == "acme/tiny@1.0, released by acme's root"
    # A release whose signed hashes are of other bytes vouches for nothing (its CID is
    # a claim): hostile tester's H10.
    other = hashlib.sha256(b"other bytes").hexdigest()
    claimed = TrustStore(releases=(Released(cid, "acme/tiny", "1.0", "acme", other, length),))
    with pytest.raises(TrustError, match="is not signed by anyone"):
        open_manifest(cid, manifest, bundle, claimed)


def test_a_channel_points_only_at_a_version_of_its_own_model(tmp_path: Path) -> None:
    """A channel of acme/tiny that names a release of acme/other names nothing: `fetch
    acme/tiny` must not get another model (hostile tester's H10)."""
    from tuf.api.metadata import Metadata, TargetFile, Targets

    publisher = Publisher()
    manifest = _manifest(tmp_path, "1")
    signed = Metadata[Targets].from_bytes(publisher.release(manifest, "1"))
    mine = signed.signed.targets["acme/tiny/1"]
    custom = {"cid": str(CID.of(manifest))}
    signed.signed.targets["acme/other/1"] = TargetFile(
        mine.length, dict(mine.hashes), "acme/other/1", {"custom": custom}
    )
    signed.signed.targets["acme/tiny:latest"] = TargetFile(
        mine.length, dict(mine.hashes), "acme/tiny:latest",
        {"custom": {**custom, "release": "acme/other/1"}},
    )  # fmt: skip
    signed.signatures.clear()
    for holder in HOLDERS[:2]:
        signed.sign(holder, append=True)
    data = pr.to_bytes(signed)
    assert pt.resolve_in(data, "acme/tiny:latest", root=publisher.root) is None
    assert "acme/tiny:latest: not a release or channel of acme with a CID" in pt.problems(
        data, root=publisher.root, previous=None
    )


def _targets(data: bytes) -> dict[str, object]:
    from tuf.api.metadata import Metadata, Targets

    return dict(Metadata[Targets].from_bytes(data).signed.targets)
