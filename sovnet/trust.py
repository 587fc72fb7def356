"""Publisher trust: which keys a node trusts, and the one gate every manifest passes.

:func:`open_manifest` is the only way to turn manifest bytes into a
:class:`~sovnet.manifest.Manifest` that the rest of sovnet acts on. In order, it

1. checks that the bytes hash to the CID they were asked for (else IntegrityError);
2. verifies each signature in the bundle over the CID (raw bytes, nothing parsed);
3. if trust is required, refuses unless a trusted key signed (TrustError);
4. only then parses the manifest.

Peer trust (whom we talk to) is a different thing and lives elsewhere: a peer
being trusted never makes its manifests trusted.

Pure: no I/O. trust.json is read and written by keyfiles.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from sovnet import canonjson
from sovnet.cid import CID
from sovnet.errors import (
    IntegrityError,
    InvalidInputError,
    ManifestFormatError,
    NotFoundError,
    TrustError,
)
from sovnet.manifest import Manifest
from sovnet.signing import KeyId, PublicKey, SignatureBundle

TRUST_FILE_VERSION = 1
MAX_TRUST_BYTES = 4 * 1024 * 1024
MAX_NAME_CHARS = 64


@dataclass(frozen=True)
class TrustedKey:
    """A publisher key this node trusts, under a name a person chose for it."""

    key_id: KeyId
    name: str
    public_key: PublicKey | None = None

    def __post_init__(self) -> None:
        if self.public_key is not None and self.public_key.key_id != self.key_id:
            raise InvalidInputError("the public key does not match the key id")
        check_name(self.name)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_CHARS:
        raise InvalidInputError(f"a trusted key's name is 1 to {MAX_NAME_CHARS} characters")
    try:
        canonjson.check_string(name)
    except ManifestFormatError as exc:
        raise InvalidInputError(f"name {name!r}: {exc.message}") from exc
    return name


def parse_key_reference(text: str) -> tuple[KeyId, PublicKey | None]:
    """A key id or a public key, as a person would paste either."""
    stripped = text.strip()
    if stripped.startswith("ed25519:") or len(stripped) == 64:
        public_key = PublicKey.parse(stripped)
        return public_key.key_id, public_key
    return KeyId.parse(stripped), None


@dataclass(frozen=True)
class TrustStore:
    """The set of trusted publisher keys (a value; keyfiles.py persists it)."""

    keys: tuple[TrustedKey, ...] = ()

    def get(self, key_id: KeyId) -> TrustedKey | None:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        return None

    def with_key(self, key: TrustedKey) -> TrustStore:
        """Trust ``key`` (renaming it, or learning its public key, if already trusted)."""
        old = self.get(key.key_id)
        if old is not None and key.public_key is None:
            key = TrustedKey(key.key_id, key.name, old.public_key)
        others = tuple(k for k in self.keys if k.key_id != key.key_id)
        return TrustStore(tuple(sorted([*others, key], key=lambda k: k.key_id)))

    def without(self, key_id: KeyId) -> TrustStore:
        if self.get(key_id) is None:
            raise NotFoundError(f"key {key_id} is not trusted", hint="`sovnet trust ls` lists them")
        return TrustStore(tuple(k for k in self.keys if k.key_id != key_id))

    def to_bytes(self) -> bytes:
        return canonjson.dumps(
            {
                "keys": [
                    {
                        "key_id": str(k.key_id),
                        "name": k.name,
                        "public_key": None if k.public_key is None else str(k.public_key),
                    }
                    for k in self.keys
                ],
                "sovnet_trust": TRUST_FILE_VERSION,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> TrustStore:
        value = canonjson.loads(data, max_size=MAX_TRUST_BYTES)
        if (
            not isinstance(value, dict)
            or set(value) != {"keys", "sovnet_trust"}
            or value["sovnet_trust"] != TRUST_FILE_VERSION
            or not isinstance(value["keys"], list)
        ):
            raise ManifestFormatError("trust file: expected sovnet_trust 1 and a list of keys")
        keys = []
        for item in value["keys"]:
            if not isinstance(item, dict) or set(item) != {"key_id", "name", "public_key"}:
                raise ManifestFormatError("trust file: each key has key_id, name, public_key")
            public = item["public_key"]
            keys.append(
                TrustedKey(
                    KeyId.parse(str(item["key_id"])),
                    str(item["name"]),
                    None if public is None else PublicKey.parse(str(public)),
                )
            )
        return cls(tuple(sorted(keys, key=lambda k: k.key_id)))


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

    @property
    def trusted(self) -> bool:
        return any(s.counts for s in self.signers)


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
    if require_trusted and not any(s.counts for s in signers):
        raise TrustError(untrusted_reason(cid, signers), hint=UNTRUSTED_HINT)
    return OpenedManifest(cid, Manifest.from_bytes(raw), raw, signers)


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
