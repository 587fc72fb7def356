"""Advisories on a publisher's releases: revoked, deprecated, superseded by another.

An advisory is a target ``advisories/ORG/MODEL/VERSION`` of the delegated TUF role
``advisories`` (publisher_targets.py delegates it: to the publisher's own keys by
default, or to another institution's, a national CERT with its own threshold). Its
length and hashes are the release's own, so it names those manifest bytes and no
others, and ``custom`` says what it advises::

    "custom": {"cid": "...", "advisory": "revoked", "reason": "...",
               "superseded_by": "ORG/MODEL@VERSION", "issued": "2026-12-02"}

Advisories are metadata like the releases: signed offline by passing the file
around (``x-sovnet-role: advisories`` in its signed part tells ``publisher sign``
what it is), listed in the snapshot, so TUF's rollback and freeze protection cover
them, and heard through any peer. What an advisory *does* is the node operator's
decision (run/admission.py): nothing is deleted or stopped remotely.

Pure: bytes and ``now`` in, bytes and values out.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, TargetFile, Targets

from sovnet.core.manifest import NAME_PATTERN, VERSION_PATTERN
from sovnet.errors import InvalidInputError, ManifestFormatError, NotFoundError, TrustError
from sovnet.trust import publisher_root, publisher_targets
from sovnet.trust.publisher_targets import ADVISORIES_PREFIX, ADVISORIES_ROLE, Release

KINDS = ("revoked", "deprecated", "superseded")
ROLE_FIELD = "x-sovnet-role"  # in the signed part: what `publisher sign` is signing
ADVISORIES_LIFETIME = datetime.timedelta(days=365)
MAX_REASON = 1000
# A reason is one line of text shown on terminals: none of Unicode's control, format
# (invisible, direction-changing), surrogate, private-use, unassigned or line- and
# paragraph-separator characters, which could make it say another thing than it shows.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
MAX_COMBINING = 4  # combining marks in a row: more only stack into noise
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)


@dataclass(frozen=True)
class Advisory:
    release: Release
    kind: str  # one of KINDS
    reason: str
    superseded_by: str | None  # ORG/MODEL@VERSION
    issued: str  # the date it was written, as its signers wrote it
    version: int  # of the advisories metadata that says it
    signed_by: tuple[str, ...]  # key ids of the advisories role that signed it

    def describe(self) -> str:
        """One line for a person: what, by whom, why."""
        signers = ", ".join(k[:16] for k in self.signed_by)
        text = (
            f"{self.release.name}@{self.release.version} is {self.kind} by "
            f"{self.release.name.split('/')[0]}'s advisories (version {self.version}, "
            f"signed by {signers}; issued {self.issued})"
        )
        if self.superseded_by:
            text += f"; use {self.superseded_by}"
        return text + f": {self.reason}"


def plain_line(text: str) -> bool:
    """Whether ``text`` is a reason as a person will read it: 1 to MAX_REASON
    characters, one line, nothing hidden."""
    if not 0 < len(text) <= MAX_REASON:
        return False
    combining = 0
    for char in text:
        if unicodedata.category(char) in _HIDDEN_CATEGORIES:
            return False
        combining = combining + 1 if unicodedata.combining(char) else 0
        if combining > MAX_COMBINING:
            return False
    return True


def _date(text: object) -> bool:
    if not isinstance(text, str) or not _DATE.fullmatch(text):
        return False
    try:
        datetime.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def path(release: Release) -> str:
    return f"{ADVISORIES_PREFIX}/{release.name}/{release.version}"


def advise(
    current: bytes | None,
    *,
    targets: bytes,
    root: bytes,
    ref: str,
    kind: str | None,
    reason: str,
    superseded_by: str | None = None,
    now: datetime.datetime,
    lifetime: datetime.timedelta = ADVISORIES_LIFETIME,
) -> bytes:
    """The next version of the advisories (unsigned), with ``ref`` (``ORG/MODEL@VERSION``,
    a release in ``targets``) advised ``kind``, or its advisory withdrawn (``kind`` None)."""
    if not publisher_targets.check(targets, root=root).complete:
        raise TrustError("the releases given are not signed by enough of the root's keys")
    if publisher_targets.advisory_role(targets) is None:
        raise TrustError(
            "these releases delegate no advisories role",
            hint="`sovnet publisher delegate-advisories` writes releases that do",
        )
    release = _release(targets, root, ref)
    if kind is not None and kind not in KINDS:
        raise InvalidInputError(f"{kind!r} is not an advisory: {', '.join(KINDS)}")
    if kind is not None and not plain_line(reason):
        raise InvalidInputError(
            f"the reason is one line of text, 1 to {MAX_REASON} characters",
            hint='--reason "what is wrong, and what to do"',
        )
    if superseded_by is not None:
        if kind != "superseded":
            raise InvalidInputError("--superseded-by goes with the advisory superseded")
        _release(targets, root, superseded_by)
    elif kind == "superseded":
        raise InvalidInputError(
            "a superseded release names its successor", hint="--superseded-by ORG/MODEL@VERSION"
        )
    if current is None:
        advisories = Targets(version=1, expires=publisher_root.expiry(now, lifetime))
        advisories.unrecognized_fields[ROLE_FIELD] = ADVISORIES_ROLE
        advisories.unrecognized_fields[publisher_root.PUBLISHER_FIELD] = release.name.split("/")[0]
    else:
        advisories = _parse(current).signed
        advisories.version += 1
        advisories.expires = publisher_root.expiry(now, lifetime)
    target_path = path(release)
    if kind is None:
        if advisories.targets.pop(target_path, None) is None:
            raise NotFoundError(f"{ref} has no advisory to withdraw")
        return publisher_root.to_bytes(Metadata(advisories))
    released = _top_level(targets).targets[release.path]
    custom: dict[str, str] = {
        "cid": str(release.cid),
        "advisory": kind,
        "reason": reason,
        "issued": now.astimezone(datetime.UTC).date().isoformat(),
    }
    if superseded_by is not None:
        custom["superseded_by"] = superseded_by
    advisories.targets[target_path] = TargetFile(
        length=released.length,
        hashes=dict(released.hashes),
        path=target_path,
        unrecognized_fields={"custom": custom},
    )
    return publisher_root.to_bytes(Metadata(advisories))


def is_advisories(data: bytes) -> bool:
    """Whether a metadata file says it is advisories (checked again when verified)."""
    try:
        return _parse(data).signed.unrecognized_fields.get(ROLE_FIELD) == ADVISORIES_ROLE
    except ManifestFormatError:
        return False


def sign(data: bytes, holder: CryptoSigner, *, targets: bytes) -> bytes:
    """``data`` (advisories) with ``holder``'s signature added; the key must be one the
    releases ``targets`` delegate advisories to."""
    metadata = _parse(data)
    role = publisher_targets.advisory_role(targets)
    if role is None or holder.public_key.keyid not in role.keyids:
        raise TrustError(
            f"key {holder.public_key.keyid[:16]} does not sign this publisher's advisories",
            hint="sign with a key that `sovnet publisher status` lists",
        )
    metadata.sign(holder, append=True)
    return publisher_root.to_bytes(metadata)


def check(data: bytes, *, targets: bytes) -> publisher_targets.TargetsCheck:
    """Who of the advisories role's keys signed ``data``."""
    metadata = _parse(data)
    delegator = _top_level(targets)
    role = publisher_targets.advisory_role(targets)
    if role is None:
        return publisher_targets.TargetsCheck(metadata.signed.version, 1, ())
    result = delegator.get_verification_result(
        ADVISORIES_ROLE, metadata.signed_bytes, metadata.signatures
    )
    delegations = delegator.delegations
    keys = delegations.keys if delegations is not None else {}
    return publisher_targets.TargetsCheck(
        metadata.signed.version,
        role.threshold,
        tuple(sorted(result.signed)),
        keys=tuple(sorted(role.keyids)),
        names=publisher_root.holder_names(keys),
        expires=metadata.signed.expires,
    )


def said(data: bytes) -> list[str]:
    """What the advisories file ``data`` says, a line each, for a holder about to sign
    it (read without checking signatures, as publisher_targets.said)."""
    lines = []
    for target_path, file in sorted(_parse(data).signed.targets.items()):
        _, _, release_path = target_path.partition("/")
        name, _, version = release_path.rpartition("/")
        custom = file.unrecognized_fields.get("custom")
        fields = custom if isinstance(custom, dict) else {}
        kind, reason = fields.get("advisory"), fields.get("reason")
        successor = fields.get("superseded_by")
        if not (
            NAME_PATTERN.fullmatch(name)
            and VERSION_PATTERN.fullmatch(version)
            and kind in KINDS
            and isinstance(reason, str)
            and plain_line(reason)
        ):
            shown = target_path if target_path.isprintable() else ascii(target_path)
            lines.append(f"{shown}: not an advisory sovnet makes")
            continue
        use = f" (use {successor})" if isinstance(successor, str) and plain_line(successor) else ""
        lines.append(f"{name}@{version} {kind}{use}: {reason}")
    return lines


def advisories_in(data: bytes, *, targets: bytes, root: bytes) -> list[Advisory]:
    """The advisories in ``data``, if the root's keys signed ``targets`` and the role
    those delegate to signed ``data``; each on a release of ``targets`` with the same
    bytes. A malformed one (signed metadata can still be) is left out."""
    if not publisher_targets.check(targets, root=root).complete:
        return []
    checked = check(data, targets=targets)
    if not checked.complete:
        return []
    org = publisher_root.check(root).publisher
    releases = _top_level(targets).targets
    found = []
    for target_path, file in sorted(_parse(data).signed.targets.items()):
        advisory = _advisory(target_path, file, org, releases, checked)
        if advisory is not None:
            found.append(advisory)
    return found


def problems(data: bytes, *, targets: bytes, root: bytes) -> list[str]:
    """What keeps ``data`` from being installed beside ``targets``: an advisory that
    names no release of theirs, or is malformed."""
    org = publisher_root.check(root).publisher
    releases = _top_level(targets).targets
    checked = check(data, targets=targets)
    parsed = _parse(data).signed
    found = []
    if parsed.unrecognized_fields.get(ROLE_FIELD) != ADVISORIES_ROLE:
        found.append(f"not marked {ROLE_FIELD}: {ADVISORIES_ROLE}")
    if parsed.unrecognized_fields.get(publisher_root.PUBLISHER_FIELD) != org:
        found.append(f"not marked {publisher_root.PUBLISHER_FIELD}: {org}")
    for target_path, file in sorted(parsed.targets.items()):
        if _advisory(target_path, file, org, releases, checked) is None:
            found.append(f"{target_path}: not an advisory on a release of {org}")
    return found


def _advisory(
    target_path: str,
    file: TargetFile,
    org: str,
    releases: dict[str, TargetFile],
    checked: publisher_targets.TargetsCheck,
) -> Advisory | None:
    prefix, _, release_path = target_path.partition("/")
    name, _, version = release_path.rpartition("/")
    released = releases.get(release_path)
    custom = file.unrecognized_fields.get("custom")
    if (
        prefix != ADVISORIES_PREFIX
        or not NAME_PATTERN.fullmatch(name)
        or name.split("/")[0] != org
        or not VERSION_PATTERN.fullmatch(version)
        or released is None
        or released.hashes != file.hashes
        or not isinstance(custom, dict)
    ):
        return None
    release = publisher_targets.resolve(releases.get, f"{name}@{version}")
    kind, reason = custom.get("advisory"), custom.get("reason")
    successor, issued = custom.get("superseded_by"), custom.get("issued", "")
    if (
        release is None
        or custom.get("cid") != str(release.cid)
        or kind not in KINDS
        or not isinstance(reason, str)
        or not plain_line(reason)
        or not _date(issued)
        or (successor is not None and not isinstance(successor, str))
        or (kind == "superseded") != (successor is not None)
    ):
        return None
    assert isinstance(kind, str)
    if successor is not None:
        assert isinstance(successor, str)
        if publisher_targets.resolve(releases.get, successor) is None:
            return None
    return Advisory(release, kind, reason, successor, issued, checked.version, checked.signed_by)


def _release(targets: bytes, root: bytes, ref: str) -> Release:
    if "@" not in ref:
        raise InvalidInputError(f"{ref!r} names no version", hint="ORG/MODEL@VERSION")
    found = publisher_targets.resolve_in(targets, ref, root=root)
    if found is None:
        raise NotFoundError(
            f"{ref} is not among the publisher's releases",
            hint="`sovnet ls --remote` lists them",
        )
    return found


def _top_level(targets: bytes) -> Targets:
    return publisher_root.load(
        targets,
        Targets,
        max_bytes=publisher_targets.MAX_TARGETS_BYTES,
        what="releases (targets) metadata",
    ).signed


def _parse(data: bytes) -> Metadata[Targets]:
    return publisher_root.load(
        data, Targets, max_bytes=publisher_targets.MAX_TARGETS_BYTES, what="advisories metadata"
    )
