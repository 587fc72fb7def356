"""A publisher's releases and channels, as TUF ``targets`` signed by its root's keys.

A release is the target ``ORG/MODEL/VERSION``: its content is the manifest's
canonical bytes (TUF hashes it with SHA-256: BLAKE3 is not among TUF's hash
algorithms), and ``custom.cid`` carries the CID by which the swarm knows it. A
channel is the target ``ORG/MODEL:CHANNEL`` (``latest``, ``stable``, any name):
the same content as the release it points at, ``custom.release`` naming that
release. Moving a channel is a new version of targets, so TUF's rollback
protection covers channels as it covers releases. A ``name@version`` can never
name two CIDs: a new version of targets that would is refused here, and a node
that sees two (equivocation) says so (issue #13).

Targets delegate one role, ``advisories`` (publisher_advisories.py), for the paths
``advisories/ORG/*/*``: by default to the targets keys themselves, and to other
keys (a national CERT's, with its own threshold) by :func:`delegate_advisories`.
The default delegation is marked as such (``x-sovnet-holders: targets``) and made
again from the root's targets keys in each new version, so that a key rotated out
of the root stops signing advisories with the next releases; one to named keys is
carried forward as it is.

The targets role is signed offline, by the root's threshold of keys, by passing
the file around as for the root (publisher_root.py); snapshot and timestamp,
which only say "this is the newest targets", are signed by the publisher node's
online key (:func:`online_metadata`) and expire within days, so that a node
notices a publisher that stopped vouching (a freeze).

Pure: bytes and ``now`` in, bytes and values out.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from securesystemslib.signer import CryptoSigner, Key
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from sovnet.core.cid import CID
from sovnet.core.manifest import CHANNEL_PATTERN, NAME_PATTERN, VERSION_PATTERN, Manifest
from sovnet.errors import InvalidCIDError, InvalidInputError, SovnetError, TrustError
from sovnet.trust import publisher_root

TARGETS_LIFETIME = datetime.timedelta(days=90)
SNAPSHOT_LIFETIME = datetime.timedelta(days=7)
TIMESTAMP_LIFETIME = datetime.timedelta(days=1)
MAX_TARGETS_BYTES = 8 * 1024 * 1024
ADVISORIES_ROLE = "advisories"
ADVISORIES_PREFIX = "advisories"  # advisories/ORG/MODEL/VERSION
HOLDERS_FIELD = "x-sovnet-holders"  # on the advisories role: "targets", the default


@dataclass(frozen=True)
class Release:
    name: str  # ORG/MODEL
    version: str
    cid: CID

    @property
    def path(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class TargetsCheck:
    version: int
    threshold: int
    signed_by: tuple[str, ...]
    keys: tuple[str, ...] = ()  # the TUF key ids of the role that signs it
    names: Mapping[str, str] = field(default_factory=dict)  # -> `key show`'s key id
    expires: datetime.datetime | None = None  # after which nodes refresh nothing new

    @property
    def complete(self) -> bool:
        return len(self.signed_by) >= self.threshold


def release(
    current: bytes | None,
    *,
    root: bytes,
    name: str,
    version: str,
    manifest: bytes,
    channels: tuple[str, ...] = ("latest",),
    now: datetime.datetime,
    lifetime: datetime.timedelta = TARGETS_LIFETIME,
) -> bytes:
    """The next version of targets (unsigned): ``name@version`` released as the
    manifest ``manifest`` (its canonical bytes), and ``channels`` moved to it."""
    publisher = publisher_root.check(root).publisher
    if not NAME_PATTERN.fullmatch(name) or name.split("/")[0] != publisher:
        raise InvalidInputError(
            f"{name!r} is not a model of publisher {publisher} (ORG/MODEL, ORG = {publisher})"
        )
    if not VERSION_PATTERN.fullmatch(version):
        raise InvalidInputError(f"{version!r} is not a version (letters, digits, . _ + -)")
    for channel in channels:
        _check_channel(channel)
    described = Manifest.from_bytes(manifest)
    if described.name != name or described.version not in (None, version):
        raise InvalidInputError(
            f"the manifest is of {described.name}@{described.version or '(no version)'}, "
            f"not {name}@{version}"
        )
    targets = _next(current, root, now, lifetime)
    made = Release(name, version, CID.of(manifest))
    file = _target(made.path, manifest, made.cid)
    earlier = targets.targets.get(made.path)
    if earlier is not None and earlier.hashes != file.hashes:
        raise TrustError(
            f"{name}@{version} is already released as {_cid_of(earlier)}: a "
            "release's version names one manifest for ever",
            hint="release it under a new version",
        )
    targets.targets[made.path] = file
    for channel in channels:
        targets.targets[f"{name}:{channel}"] = _target(
            f"{name}:{channel}", manifest, made.cid, release=made.path
        )
    return publisher_root.to_bytes(Metadata(targets))


def resolve(lookup: Callable[[str], TargetFile | None], ref: str) -> Release | None:
    """The release ``ref`` (``ORG/MODEL@VERSION``, ``ORG/MODEL:CHANNEL`` or a bare
    ``ORG/MODEL``, meaning ``:latest``) names, by ``lookup`` of a target path in
    verified targets (a TUF client's ``get_targetinfo``). A target that is not one
    sovnet makes names nothing: another ORG's path, no CID, a channel whose release
    is missing or holds other bytes (signed metadata can still be malformed)."""
    org = ref.split("/", 1)[0]
    if "@" in ref:
        name, version = ref.split("@", 1)
        return _release_at(lookup, f"{name}/{version}", org)
    name, colon, channel = ref.partition(":")
    if colon and not CHANNEL_PATTERN.fullmatch(channel):
        return None  # "ORG/MODEL:" names no channel (not :latest)
    path = f"{name}:{channel or 'latest'}"
    file = lookup(path)
    if file is None:
        return None
    release_path = _custom(file).get("release")
    if not isinstance(release_path, str) or release_path.rpartition("/")[0] != name:
        return None  # a channel of ORG/MODEL points at a version of ORG/MODEL only
    release = _release_at(lookup, release_path, org)
    released = lookup(release_path)
    if release is None or released is None or released.hashes != file.hashes:
        return None
    return release if _cid_of(file) == release.cid else None


def said(targets: bytes) -> list[str]:
    """What ``targets`` says, a line each, for a holder about to sign it: each release
    (NAME@VERSION and its CID), each channel (NAME:CHANNEL and the version it points
    at), each delegation. Read without checking signatures: what is shown is what a
    signature would vouch for; a target sovnet would not make says so."""
    parsed = _parse(targets).signed
    files = parsed.targets
    lines = []
    for path in sorted(files):
        release = resolve(files.get, path if ":" in path else "@".join(path.rsplit("/", 1)))
        shown = path if path.isprintable() else ascii(path)
        if release is None:
            lines.append(f"{shown}: not a release or channel sovnet makes")
        elif ":" in path:
            lines.append(f"channel {shown} -> {release.version}")
        else:
            lines.append(f"release {release.name}@{release.version} = {release.cid}")
    role = _advisories_role(parsed)
    if role is not None and not follows_targets_keys(role):
        lines.append(f"advisories signed by {role.threshold} of {len(role.keyids)} other keys")
    return lines


def _release_at(lookup: Callable[[str], TargetFile | None], path: str, org: str) -> Release | None:
    name, _, version = path.rpartition("/")
    if not (
        NAME_PATTERN.fullmatch(name)
        and name.split("/")[0] == org
        and VERSION_PATTERN.fullmatch(version)
    ):
        return None
    file = lookup(path)
    cid = _cid_of(file) if file is not None else None
    return Release(name, version, cid) if cid is not None else None


def _custom(file: TargetFile) -> dict[str, object]:
    custom = file.unrecognized_fields.get("custom")
    return custom if isinstance(custom, dict) else {}


def _cid_of(file: TargetFile) -> CID | None:
    text = _custom(file).get("cid")
    if not isinstance(text, str):
        return None
    try:
        return CID.parse(text)
    except InvalidCIDError:
        return None


def sign(data: bytes, holder: CryptoSigner, *, root: bytes) -> bytes:
    """``data`` (targets) with ``holder``'s signature added; the key must be one of
    the root's targets keys."""
    metadata = _parse(data)
    trusted = _root(root)
    if holder.public_key.keyid not in trusted.roles["targets"].keyids:
        raise TrustError(
            f"key {holder.public_key.keyid[:16]} does not sign this publisher's releases",
            hint="sign with a key that `sovnet publisher status` lists",
        )
    metadata.sign(holder, append=True)
    return publisher_root.to_bytes(metadata)


def check(data: bytes, *, root: bytes) -> TargetsCheck:
    """Who of the root's targets keys signed ``data``."""
    metadata = _parse(data)
    trusted = _root(root)
    result = trusted.get_verification_result("targets", metadata.signed_bytes, metadata.signatures)
    role = trusted.roles["targets"]
    return TargetsCheck(
        metadata.signed.version,
        role.threshold,
        tuple(sorted(result.signed)),
        keys=tuple(sorted(role.keyids)),
        names=publisher_root.holder_names(trusted.keys),
        expires=metadata.signed.expires,
    )


def online_metadata(
    targets: bytes,
    *,
    snapshot_version: int,
    timestamp_version: int,
    online: CryptoSigner,
    now: datetime.datetime,
    advisories_version: int | None = None,
) -> tuple[bytes, bytes]:
    """Snapshot and timestamp for ``targets`` (and the advisories of that version, if
    any were signed), signed by the publisher node's key."""
    targets_version = _parse(targets).signed.version
    meta = {"targets.json": MetaFile(version=targets_version)}
    if advisories_version is not None:
        meta[f"{ADVISORIES_ROLE}.json"] = MetaFile(version=advisories_version)
    snapshot = Snapshot(
        version=snapshot_version,
        expires=publisher_root.expiry(now, SNAPSHOT_LIFETIME),
        meta=meta,
    )
    snapshot_md = Metadata(snapshot)
    snapshot_md.sign(online)
    snapshot_bytes = publisher_root.to_bytes(snapshot_md)
    timestamp = Timestamp(
        version=timestamp_version,
        expires=publisher_root.expiry(now, TIMESTAMP_LIFETIME),
        snapshot_meta=MetaFile(version=snapshot_version),
    )
    timestamp_md = Metadata(timestamp)
    timestamp_md.sign(online)
    return snapshot_bytes, publisher_root.to_bytes(timestamp_md)


def _target(path: str, manifest: bytes, cid: CID, *, release: str | None = None) -> TargetFile:
    custom: dict[str, str] = {"cid": str(cid)}
    if release is not None:
        custom["release"] = release
    return TargetFile(
        length=len(manifest),
        hashes={"sha256": hashlib.sha256(manifest).hexdigest()},
        path=path,
        unrecognized_fields={"custom": custom},
    )


def _next(
    current: bytes | None, root: bytes, now: datetime.datetime, lifetime: datetime.timedelta
) -> Targets:
    """The next version of targets: the releases of ``current``, and its delegation of
    advisories if that names other keys; else the advisories role delegated to the
    targets keys of ``root`` as they are now (a key rotated out signs no more)."""
    expires = publisher_root.expiry(now, lifetime)
    if current is None:
        targets = Targets(version=1, expires=expires)
    else:
        before = _parse(current).signed
        targets = Targets(
            version=before.version + 1,
            expires=expires,
            targets=dict(before.targets),
            delegations=before.delegations,
        )
    role = _advisories_role(targets)
    if role is None or follows_targets_keys(role):
        trusted = _root(root)
        keys = trusted.roles["targets"]
        _delegate(
            targets,
            root,
            [trusted.keys[k] for k in keys.keyids],
            keys.threshold,
            follows_targets=True,
        )
    return targets


def follows_targets_keys(role: DelegatedRole) -> bool:
    """Whether the advisories role is the default one: the root's targets keys, made
    again from the root in each new version of targets."""
    return role.unrecognized_fields.get(HOLDERS_FIELD) == "targets"


def _delegate(
    targets: Targets,
    root: bytes,
    keys: list[Key],
    threshold: int,
    *,
    follows_targets: bool = False,
) -> None:
    org = publisher_root.check(root).publisher
    unique = {key.keyid: key for key in keys}
    if not 1 <= len(unique) <= publisher_root.MAX_KEYS or len(unique) != len(keys):
        raise InvalidInputError(
            f"the advisories role has 1 to {publisher_root.MAX_KEYS} different keys"
        )
    if not 1 <= threshold <= len(unique):
        raise InvalidInputError(
            f"a threshold of {threshold} cannot be met by {len(unique)} key(s)",
            hint="the threshold is how many of the keys must sign: 1 to the number of keys",
        )
    targets.delegations = Delegations(
        keys=dict(unique),
        roles={
            ADVISORIES_ROLE: DelegatedRole(
                name=ADVISORIES_ROLE,
                keyids=sorted(unique),
                threshold=threshold,
                terminating=True,
                paths=[f"{ADVISORIES_PREFIX}/{org}/*/*"],
                unrecognized_fields={HOLDERS_FIELD: "targets"} if follows_targets else {},
            )
        },
    )


def delegate_advisories(
    current: bytes,
    *,
    root: bytes,
    keys: list[Key],
    threshold: int,
    now: datetime.datetime,
    lifetime: datetime.timedelta = TARGETS_LIFETIME,
) -> bytes:
    """The next version of targets (unsigned), with the advisories role delegated to
    ``threshold`` of ``keys`` (an institution's, or the publisher's own)."""
    targets = _next(current, root, now, lifetime)
    _delegate(targets, root, keys, threshold)
    return publisher_root.to_bytes(Metadata(targets))


def advisory_role(targets: bytes) -> DelegatedRole | None:
    """The advisories role ``targets`` delegates to, if any."""
    return _advisories_role(_parse(targets).signed)


def _advisories_role(targets: Targets) -> DelegatedRole | None:
    delegations = targets.delegations
    roles = delegations.roles if delegations is not None else None
    return roles.get(ADVISORIES_ROLE) if roles else None


def _check_channel(channel: str) -> None:
    if not CHANNEL_PATTERN.fullmatch(channel):
        raise InvalidInputError(
            f"{channel!r} is not a channel name (lower-case letters, digits, . _ -; at most 32)"
        )


def _root(data: bytes) -> Root:
    return publisher_root.load_root(data).signed


def _parse(data: bytes) -> Metadata[Targets]:
    return publisher_root.load(
        data, Targets, max_bytes=MAX_TARGETS_BYTES, what="releases (targets) metadata"
    )


def resolve_in(targets: bytes, ref: str, *, root: bytes) -> Release | None:
    """:func:`resolve` in ``targets`` as trusted earlier (offline: no refresh), if the
    root's targets keys signed it."""
    if not check(targets, root=root).complete:
        return None
    return resolve(_parse(targets).signed.targets.get, ref)


def version_of(targets: bytes) -> int:
    return _parse(targets).signed.version


def target(targets: bytes, path: str) -> TargetFile | None:
    """The target at ``path`` in ``targets`` itself (not in a role it delegates to)."""
    return target_files(targets).get(path)


def target_files(targets: bytes) -> Mapping[str, TargetFile]:
    """Every target of ``targets`` itself, by path: parsed once for many lookups."""
    return _parse(targets).signed.targets


def verifies(targets: bytes, *, root: bytes) -> bool:
    """Whether the root's releases keys signed ``targets`` (False if either is not
    metadata at all)."""
    try:
        return check(targets, root=root).complete
    except SovnetError:
        return False


def releases(targets: bytes, *, root: bytes) -> list[Release]:
    """The releases in ``targets`` (each a well-formed target of the root's own
    publisher), if the root's targets keys signed it; nothing if they did not (a file
    changed on disk)."""
    return [item.release for item in listing(targets, root=root)]


@dataclass(frozen=True)
class Listed:
    """A release as a listing shows it: with the channels that point at it."""

    release: Release
    channels: tuple[str, ...]


def listing(targets: bytes, *, root: bytes) -> list[Listed]:
    """Every release in ``targets`` (if the root's targets keys signed it), in path
    order, each with the channels that point at it; malformed targets are left out."""
    if not check(targets, root=root).complete:
        return []
    org = publisher_root.check(root).publisher
    files = _parse(targets).signed.targets
    channels: dict[Release, list[str]] = {}
    for path in files:
        pointed = resolve(files.get, path) if ":" in path else None
        if pointed is not None:
            channels.setdefault(pointed, []).append(path.split(":", 1)[1])
    found = []
    for path in sorted(p for p in files if ":" not in p):
        name, _, version = path.rpartition("/")
        release = resolve(files.get, f"{name}@{version}")
        if release is not None and name.split("/")[0] == org:
            found.append(Listed(release, tuple(sorted(channels.get(release, ())))))
    return found


def problems(targets: bytes, *, root: bytes, previous: bytes | None) -> list[str]:
    """What keeps ``targets`` from being installed after ``previous``: a target sovnet
    would not make (another publisher's path, no CID, a channel whose release is
    missing or holds other bytes), and a release of ``previous`` changed or removed
    (a name@version names one manifest for ever)."""
    org = publisher_root.check(root).publisher
    parsed = _parse(targets).signed
    files = parsed.targets
    found = []
    delegations = parsed.delegations
    roles = delegations.roles if delegations is not None else None
    if delegations is not None and (
        roles is None
        or set(roles) != {ADVISORIES_ROLE}
        or roles[ADVISORIES_ROLE].paths != [f"{ADVISORIES_PREFIX}/{org}/*/*"]
        or not roles[ADVISORIES_ROLE].terminating
    ):
        found.append(
            f"delegations: only the role {ADVISORIES_ROLE!r}, for "
            f"{ADVISORIES_PREFIX}/{org}/*/*, terminating"
        )
    if delegations is not None and delegations.keys:
        found += publisher_root.key_problems(delegations.keys)
    for path in sorted(files):
        ref = path if ":" in path else "@".join(path.rsplit("/", 1))
        if not path.startswith(f"{org}/") or resolve(files.get, ref) is None:
            found.append(f"{path}: not a release or channel of {org} with a CID")
    if previous is not None:
        found += changed_releases(targets, previous=previous)
    return found


def changed_releases(targets: bytes, *, previous: bytes) -> list[str]:
    """The releases of ``previous`` that ``targets`` removes or changes: a name@version
    names one manifest for ever, so a publisher (or a thief of its keys) that says
    otherwise equivocates."""
    files = _parse(targets).signed.targets
    found = []
    for path, earlier in sorted(_parse(previous).signed.targets.items()):
        if ":" in path:
            continue  # channels move
        now = files.get(path)
        if now is None:
            found.append(f"{path}: released before as {_cid_of(earlier)}, missing now")
        elif now.hashes != earlier.hashes or _cid_of(now) != _cid_of(earlier):
            found.append(f"{path}: released before as {_cid_of(earlier)}, now {_cid_of(now)}")
    return found
