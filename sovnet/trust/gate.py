"""Publisher trust's one gate: every manifest a node acts on passes it.

:func:`open_manifest` is the only way to turn manifest bytes into a
:class:`~sovnet.manifest.Manifest` that the rest of sovnet acts on. In order, it

1. checks that the bytes hash to the CID they were asked for (else IntegrityError);
2. verifies each signature in the bundle over the CID (raw bytes, nothing parsed);
3. if trust is required, refuses unless a trusted key signed, or a pinned publisher
   root released this CID (TrustError);
4. only then parses the manifest.

Peer trust (whom we talk to) is a different thing and lives elsewhere: a peer
being trusted never makes its manifests trusted.

Pure: no I/O. Which keys are trusted is a :class:`~sovnet.trust.keys.TrustStore`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest
from sovnet.core.signing import KeyId, PublicKey, SignatureBundle
from sovnet.errors import IntegrityError, TrustError
from sovnet.trust.keys import TrustStore


@dataclass(frozen=True)
class SignerReport:
    """What one signature in a bundle turned out to be."""

    key_id: KeyId
    public_key: PublicKey
    valid: bool
    trusted_as: str | None

    @property
    def counts(self) -> bool:
        """A valid signature by a trusted key: the only kind that makes a manifest trusted."""
        return self.valid and self.trusted_as is not None


@dataclass(frozen=True)
class OpenedManifest:
    """A manifest whose bytes matched its CID, with what its signatures are worth."""

    cid: CID
    manifest: Manifest
    raw: bytes
    signers: tuple[SignerReport, ...]
    released_as: str | None = None  # the release of a pinned publisher root it is

    @property
    def trusted(self) -> bool:
        return self.released_as is not None or any(s.counts for s in self.signers)


def check_signatures(bundle: SignatureBundle, trust: TrustStore) -> tuple[SignerReport, ...]:
    reports = []
    for signature in bundle.signatures:
        trusted = trust.get(signature.key_id)
        reports.append(
            SignerReport(
                key_id=signature.key_id,
                public_key=signature.public_key,
                valid=signature.verify(bundle.cid),
                trusted_as=None if trusted is None else trusted.name,
            )
        )
    return tuple(reports)


def open_manifest(
    cid: CID,
    raw: bytes,
    bundle: SignatureBundle,
    trust: TrustStore,
    *,
    require_trusted: bool = True,
) -> OpenedManifest:
    """The trust gate: hash, then signatures, then (only then) parse."""
    if not cid.matches(raw):
        raise IntegrityError(
            f"manifest bytes do not hash to {cid}",
            hint="the manifest was altered or corrupted; fetch it again from a trusted source",
        )
    if bundle.cid != cid:
        raise TrustError(f"the signatures are for {bundle.cid}, not {cid}")
    signers = check_signatures(bundle, trust)
    # A release counts only if its signed SHA-256 is of these bytes: its CID alone is
    # a claim (hostile tester's H10 on #13).
    releases = [r for r in trust.released(cid) if r.vouches_for(raw)]
    if require_trusted and not releases and not any(s.counts for s in signers):
        raise TrustError(untrusted_reason(cid, signers), hint=UNTRUSTED_HINT)
    # A release vouches for these bytes (its signed hashes are theirs): they may be
    # parsed to see whether they are what it says, the manifest of that name@version.
    manifest = Manifest.from_bytes(raw)
    matching = [
        r for r in releases if r.name == manifest.name and manifest.version in (None, r.version)
    ]
    if require_trusted and not matching and not any(s.counts for s in signers):
        raise TrustError(
            f"{cid} is released as {releases[0].name}@{releases[0].version} but is the "
            f"manifest of {manifest.name}@{manifest.version or '(no version)'}",
            hint="its publisher's release names a model of another name: do not trust it",
        )
    return OpenedManifest(cid, manifest, raw, signers, str(matching[0]) if matching else None)


UNTRUSTED_HINT = (
    "if you know the publisher, compare its key id with them and run "
    "`sovnet trust add KEY_ID --name NAME`"
)


def untrusted_reason(cid: CID, signers: tuple[SignerReport, ...]) -> str:
    if not signers:
        return f"{cid} is not signed by anyone"
    parts = []
    for s in signers:
        if not s.valid:
            parts.append(f"{s.key_id} (invalid signature)")
        else:
            parts.append(f"{s.key_id} (valid, not trusted)")
    return f"{cid} has no valid signature from a trusted key; signed by " + ", ".join(parts)
