"""Publisher trust: the publisher keys this node trusts, under names a person chose.

A value (:class:`TrustStore`) and its canonical bytes (trust.json, the format in
docs/spec.md); store/keyfiles.py reads and writes the file. Pure: no I/O.
Which manifests count is decided by trust/gate.py, with a TrustStore as input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from sovnet.core import canonjson
from sovnet.core.cid import CID
from sovnet.core.signing import KeyId, PublicKey
from sovnet.errors import InvalidInputError, ManifestFormatError, NotFoundError

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


def parse_key_reference(text: str, *, typed: bool = False) -> tuple[KeyId, PublicKey | None]:
    """A key id or a public key, as a person would paste either. A ``typed`` key id
    (``trust add``) must carry its check group, so that a typo is refused rather than
    trusting some other key; ids without one are still read where nothing new is trusted."""
    stripped = text.strip()
    if stripped.startswith("ed25519:") or len(stripped) == 64:
        public_key = PublicKey.parse(stripped)
        return public_key.key_id, public_key
    return (KeyId.parse_checked(stripped) if typed else KeyId.parse(stripped)), None


@dataclass(frozen=True)
class Released:
    """A CID a pinned publisher root released as ``name@version``."""

    cid: CID
    name: str  # ORG/MODEL
    version: str
    publisher: str  # whose root: the ORG of ``name``
    # The target's signed SHA-256 and length of the manifest's bytes: a release whose
    # CID names other bytes than its hashes vouches for neither.
    sha256: str = ""
    length: int = -1

    def vouches_for(self, raw: bytes) -> bool:
        """Whether the release's signed hashes are those of ``raw``."""
        return len(raw) == self.length and hashlib.sha256(raw).hexdigest() == self.sha256

    def __str__(self) -> str:
        return f"{self.name}@{self.version}, released by {self.publisher}'s root"


@dataclass(frozen=True)
class TrustStore:
    """The set of trusted publisher keys (a value; keyfiles.py persists it), and the
    CIDs that pinned publisher roots released (read from their verified metadata each
    time, never persisted here): a released manifest is trusted for that release
    whoever signed its bundle."""

    keys: tuple[TrustedKey, ...] = ()
    releases: tuple[Released, ...] = ()

    def released(self, cid: CID) -> list[Released]:
        return [r for r in self.releases if r.cid == cid]

    def with_releases(self, releases: Iterable[Released]) -> TrustStore:
        return TrustStore(self.keys, tuple(releases))

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
                        # The 8-group form: the file stays as sovnet wrote it before
                        # key ids had a check group, so older versions still read it.
                        "key_id": k.key_id.short(),
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
