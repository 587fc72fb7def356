"""Publisher keys (Ed25519), key ids and manifest signatures.

A signature binds a manifest CID, not the manifest's parsed content: the signed
message is ``SIGNATURE_DOMAIN || binary CID`` (see docs/spec.md), so a signature
is checked over raw bytes before anything is parsed, and the domain string keeps
these signatures from ever being valid for another protocol's messages.

Signatures live beside a manifest in a :class:`SignatureBundle`, one per key, so
several publishers or mirrors can co-sign one CID without touching its bytes.

A :class:`KeyId` is a short fingerprint of a public key meant to be read aloud and
compared: 160 bits of BLAKE3, 32 base32 characters in groups of four, and a ninth
group that is a check of the other eight, so a key id typed with a typo is refused
instead of naming some other key.

Pure: no I/O. Key files are read and written by keyfiles.py.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sovnet.core import canonjson, ed25519
from sovnet.core.cid import CID
from sovnet.errors import InvalidCIDError, InvalidKeyError, ManifestFormatError, quoted

SIGNATURE_DOMAIN = b"sovnet manifest signature v1\x00"
KEY_ID_DOMAIN = b"sovnet key id v1\x00"
KEY_ID_BYTES = 20
KEY_ID_CHECK_DOMAIN = b"sovnet key id check v1\x00"
KEY_ID_CHECK_CHARS = 4
PUBLIC_KEY_PREFIX = "ed25519:"
BUNDLE_VERSION = 1
MAX_BUNDLE_BYTES = 1024 * 1024
MAX_SIGNATURES = 1000
_HEX = re.compile(r"[0-9a-f]+")
# The digits base32 leaves out, and the letters a person most likely meant by them.
_BASE32_LOOKALIKES: dict[str | int, str | int | None] = {"0": "O", "1": "I", "8": "B", "9": "G"}
_BASE32 = re.compile(r"[A-Z2-7]+")


def signed_message(cid: CID) -> bytes:
    """The exact bytes an Ed25519 manifest signature covers."""
    return SIGNATURE_DOMAIN + cid.binary


@dataclass(frozen=True, order=True)
class KeyId:
    """Fingerprint of a publisher key, e.g. ``ABCD-EFGH-…-WXYZ`` (8 groups of 4, and a
    ninth, the check group; docs/spec.md §8). Equality and order are the raw bytes'."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != KEY_ID_BYTES:
            raise InvalidKeyError("a key id is 20 bytes")

    @classmethod
    def parse(cls, text: str) -> KeyId:
        """Accept the checked form (9 groups) or the form of files written before the
        check existed (8 groups), in any case, with or without dashes and spaces. A
        check group that does not match is refused."""
        compact = re.sub(r"[\s-]", "", text).upper()
        misread = sorted(set(compact) & set(_BASE32_LOOKALIKES))
        meant = compact.translate(str.maketrans(_BASE32_LOOKALIKES))
        if misread and len(meant) in (32, 32 + KEY_ID_CHECK_CHARS) and _BASE32.fullmatch(meant):
            # A person copying a key id by eye reads O as 0, I as 1, ...: say which.
            guesses = ", ".join(f"{_BASE32_LOOKALIKES[c]} for {c}" for c in misread)
            raise InvalidKeyError(
                f"{quoted(text.strip())} is not a key id: base32 has no 0, 1, 8 or 9",
                hint=f"perhaps {guesses}? Compare it with its owner's `sovnet key show`",
            )
        if len(compact) not in (32, 32 + KEY_ID_CHECK_CHARS) or not _BASE32.fullmatch(compact):
            raise InvalidKeyError(
                f"{quoted(text.strip())} is not a key id",
                hint="a key id is 9 groups of four base32 characters, ABCD-EFGH-…, "
                "as `sovnet key show` prints it",
            )
        key_id = cls(base64.b32decode(compact[:32]))
        if len(compact) > 32 and compact[32:] != key_id.check_group():
            raise InvalidKeyError(
                f"key id check group does not match: a typo? ({quoted(text.strip())})",
                hint="compare it with its owner's `sovnet key show` again, character by character",
            )
        return key_id

    @classmethod
    def parse_checked(cls, text: str) -> KeyId:
        """A key id a person typed: only the checked form, so a typo cannot name another key."""
        compact = re.sub(r"[\s-]", "", text)
        if len(compact) == 32 and re.fullmatch(r"[A-Za-z2-7]+", compact):
            raise InvalidKeyError(
                f"{quoted(text.strip())} has no check group: a typo in it could not be caught",
                hint="give the key id with its 9th group, as `sovnet key show` prints it "
                "(ABCD-EFGH-…, 9 groups of 4), or the full public key ed25519:<64 hex digits>",
            )
        return cls.parse(text)

    def check_group(self) -> str:
        """The 4 check characters: the first 20 bits of a domain-separated BLAKE3 of the
        20 bytes, in base32 (§8)."""
        digest = blake3.blake3(KEY_ID_CHECK_DOMAIN + self.raw).digest()
        return base64.b32encode(digest[:5]).decode("ascii")[:KEY_ID_CHECK_CHARS]

    def short(self) -> str:
        """The 8-group form without the check group: what trust files hold, and what
        sovnet printed before the check existed (the v1 test vectors)."""
        text = base64.b32encode(self.raw).decode("ascii")
        return "-".join(text[i : i + 4] for i in range(0, len(text), 4))

    def __str__(self) -> str:
        return f"{self.short()}-{self.check_group()}"


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key; text form ``ed25519:<64 hex digits>``."""

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != 32:
            raise InvalidKeyError("an Ed25519 public key is 32 bytes")

    @classmethod
    def parse(cls, text: str) -> PublicKey:
        body = text.strip()
        if body.startswith(PUBLIC_KEY_PREFIX):
            body = body[len(PUBLIC_KEY_PREFIX) :]
        if len(body) != 64 or not _HEX.fullmatch(body):
            raise InvalidKeyError(
                f"{quoted(text.strip())} is not a public key",
                hint="a public key looks like ed25519:<64 hex digits>; `sovnet key show` prints it",
            )
        return cls(bytes.fromhex(body))

    @property
    def key_id(self) -> KeyId:
        return KeyId(blake3.blake3(KEY_ID_DOMAIN + self.raw).digest()[:KEY_ID_BYTES])

    def verify(self, cid: CID, signature: bytes) -> bool:
        """Whether ``signature`` is valid for ``cid`` under docs/spec.md §9.1."""
        # OpenSSL checks the equation and S < L, but takes any point as a key: keys
        # outside the prime-order subgroup are refused here, before it is asked.
        if not ed25519.scalar_below_order(signature) or not ed25519.public_key_acceptable(self.raw):
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, signed_message(cid))
        except (InvalidSignature, ValueError):
            return False
        return True

    def __str__(self) -> str:
        return PUBLIC_KEY_PREFIX + self.raw.hex()


class PrivateKey:
    """An Ed25519 signing key. Never printed, never compared, never pickled."""

    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> PrivateKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        """A key from 32 seed bytes (test vectors; real keys come from generate)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_pem(cls, data: bytes) -> PrivateKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidKeyError("the key file is not an unencrypted PKCS#8 PEM key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidKeyError("the key file does not hold an Ed25519 key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def public_key(self) -> PublicKey:
        return PublicKey(
            self._key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def sign(self, cid: CID) -> Signature:
        return Signature(self.public_key, self._key.sign(signed_message(cid)))

    def __repr__(self) -> str:
        return f"PrivateKey(key_id={self.public_key.key_id})"


@dataclass(frozen=True)
class Signature:
    """One publisher's Ed25519 signature of a manifest CID (unchecked until verified)."""

    public_key: PublicKey
    value: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.value, bytes) or len(self.value) != 64:
            raise ManifestFormatError("an Ed25519 signature is 64 bytes")

    @property
    def key_id(self) -> KeyId:
        return self.public_key.key_id

    def verify(self, cid: CID) -> bool:
        return self.public_key.verify(cid, self.value)


@dataclass(frozen=True)
class SignatureBundle:
    """The signatures of one CID, at most one per key, sorted by key id."""

    cid: CID
    signatures: tuple[Signature, ...] = ()

    def __post_init__(self) -> None:
        ids = [s.key_id for s in self.signatures]
        if ids != sorted(ids) or len(set(ids)) != len(ids):
            raise ManifestFormatError("signatures must be sorted by key id, one per key")
        if len(ids) > MAX_SIGNATURES:
            raise ManifestFormatError(f"more than {MAX_SIGNATURES} signatures")

    def with_signature(self, signature: Signature) -> SignatureBundle:
        """This bundle plus ``signature`` (replacing an older one by the same key)."""
        others = [s for s in self.signatures if s.key_id != signature.key_id]
        return SignatureBundle(
            self.cid, tuple(sorted([*others, signature], key=lambda s: s.key_id))
        )

    def merged(self, other: SignatureBundle) -> SignatureBundle:
        result = self
        for signature in other.signatures:
            if signature.verify(self.cid):
                result = result.with_signature(signature)
        return result

    def to_bytes(self) -> bytes:
        return canonjson.dumps(
            {
                "cid": str(self.cid),
                "signatures": [
                    {
                        "alg": "ed25519",
                        "public_key": str(s.public_key),
                        "signature": s.value.hex(),
                    }
                    for s in self.signatures
                ],
                "sovnet_signatures": BUNDLE_VERSION,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, cid: CID) -> SignatureBundle:
        """Parse a bundle that must be for ``cid``; signatures are not verified here."""
        value = canonjson.loads(data, max_size=MAX_BUNDLE_BYTES)
        if not isinstance(value, dict) or set(value) != {"cid", "signatures", "sovnet_signatures"}:
            raise ManifestFormatError(
                "signature bundle: expected cid, signatures, sovnet_signatures"
            )
        if value["sovnet_signatures"] != BUNDLE_VERSION or isinstance(
            value["sovnet_signatures"], bool
        ):
            raise ManifestFormatError(
                f"signature bundle version {value['sovnet_signatures']!r} is not supported"
            )
        try:
            bundle_cid = CID.parse(str(value["cid"]))
        except InvalidCIDError as exc:
            raise ManifestFormatError(f"signature bundle: {exc.message}") from exc
        if bundle_cid != cid:
            raise ManifestFormatError(f"signature bundle is for {bundle_cid}, not {cid}")
        items = value["signatures"]
        if not isinstance(items, list) or len(items) > MAX_SIGNATURES:
            raise ManifestFormatError("signature bundle: signatures must be a list")
        signatures = []
        for item in items:
            if not isinstance(item, dict) or set(item) != {"alg", "public_key", "signature"}:
                raise ManifestFormatError(
                    "signature bundle: each entry has alg, public_key, signature"
                )
            if item["alg"] != "ed25519":
                raise ManifestFormatError(f"signature algorithm {item['alg']!r} is not supported")
            sig_hex = item["signature"]
            if not isinstance(sig_hex, str) or len(sig_hex) != 128 or not _HEX.fullmatch(sig_hex):
                raise ManifestFormatError("signature bundle: a signature is 128 hex digits")
            try:
                public_key = PublicKey.parse(str(item["public_key"]))
            except InvalidKeyError as exc:
                raise ManifestFormatError(f"signature bundle: {exc.message}") from exc
            if str(public_key) != item["public_key"]:
                raise ManifestFormatError("signature bundle: public key not in canonical form")
            signatures.append(Signature(public_key, bytes.fromhex(sig_hex)))
        bundle = cls(cid, tuple(signatures))
        if bundle.to_bytes() != data:  # pragma: no cover - every field is checked above
            raise ManifestFormatError("signature bundle is not in canonical form")
        return bundle
