"""Content identifiers: CIDv1, multibase base32 lower, multicodec raw, multihash BLAKE3.

A CID names exact bytes. sovnet uses one shape only, so the binary form is a
fixed 4-byte prefix and a 32-byte BLAKE3 digest:

    0x01  CID version 1
    0x55  multicodec "raw"
    0x1e  multihash "blake3"
    0x20  digest length 32
    <32 bytes BLAKE3-256 of the content>

The text form is ``"b"`` + RFC 4648 base32, lower case, no padding (59 characters).
Any multiformats library parses it. Parsing here accepts exactly that shape and
rejects everything else with :class:`~sovnet.errors.InvalidCIDError`.

Pure: no I/O, no clock, no environment.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

import blake3

from sovnet.errors import InvalidCIDError

CID_PREFIX = bytes([0x01, 0x55, 0x1E, 0x20])
DIGEST_SIZE = 32
CID_TEXT_LENGTH = 59
_BASE32_ALPHABET = frozenset("abcdefghijklmnopqrstuvwxyz234567")

_KNOWN_MULTIBASE = {
    "B": "base32upper",
    "z": "base58btc",
    "f": "base16",
    "m": "base64",
    "u": "base64url",
}


def blake3_digest(data: bytes | bytearray | memoryview) -> bytes:
    """BLAKE3-256 of ``data`` (the digest a CID carries)."""
    return blake3.blake3(data).digest()


@dataclass(frozen=True, order=True)
class CID:
    """The content address of exact bytes; create with :meth:`of` or :meth:`parse`."""

    digest: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.digest, bytes) or len(self.digest) != DIGEST_SIZE:
            raise InvalidCIDError("a CID digest must be 32 bytes of BLAKE3")

    @classmethod
    def of(cls, data: bytes | bytearray | memoryview) -> CID:
        """The CID of ``data``."""
        return cls(blake3_digest(data))

    @classmethod
    def from_binary(cls, raw: bytes) -> CID:
        if len(raw) != len(CID_PREFIX) + DIGEST_SIZE or not raw.startswith(CID_PREFIX):
            raise InvalidCIDError(
                "binary CID is not CIDv1/raw/blake3-256 (expected prefix 01551e20 and 32 bytes)"
            )
        return cls(bytes(raw[len(CID_PREFIX) :]))

    @classmethod
    def parse(cls, text: str) -> CID:
        """Parse the text form; the error says exactly which rule failed."""
        hint = "a sovnet CID looks like b…, 59 characters (see `sovnet ls`)"
        if not isinstance(text, str) or not text:
            raise InvalidCIDError("empty CID", hint=hint)
        shown = text if len(text) <= 80 else text[:77] + "..."
        if text[0] != "b":
            base = _KNOWN_MULTIBASE.get(text[0])
            if text.startswith("Qm"):
                reason = "a CIDv0 (sha2-256, base58) is not a sovnet CID"
            elif base:
                reason = f"multibase {base!r} is not accepted; sovnet CIDs use base32 lower ('b')"
            else:
                reason = "it does not start with the base32 multibase prefix 'b'"
            raise InvalidCIDError(f"invalid CID {shown!r}: {reason}", hint=hint)
        body = text[1:]
        if len(text) != CID_TEXT_LENGTH:
            raise InvalidCIDError(
                f"invalid CID {shown!r}: {len(text)} characters, expected {CID_TEXT_LENGTH}",
                hint=hint,
            )
        if not set(body) <= _BASE32_ALPHABET:
            raise InvalidCIDError(
                f"invalid CID {shown!r}: only lower-case base32 letters a-z and 2-7 may follow 'b'",
                hint=hint,
            )
        try:
            # 58 base32 characters carry 290 bits: 36 bytes and 2 zero bits of slack.
            raw = base64.b32decode(body.upper() + "======")
        except binascii.Error as exc:  # pragma: no cover - alphabet and length checked above
            raise InvalidCIDError(f"invalid CID {shown!r}: not base32", hint=hint) from exc
        if raw[:1] != b"\x01":
            raise InvalidCIDError(f"invalid CID {shown!r}: not CID version 1", hint=hint)
        if raw[1:2] != b"\x55":
            raise InvalidCIDError(
                f"invalid CID {shown!r}: codec 0x{raw[1]:02x} is not 'raw' (0x55)", hint=hint
            )
        if raw[2:4] != b"\x1e\x20":
            raise InvalidCIDError(
                f"invalid CID {shown!r}: multihash is not blake3-256 (0x1e, 32 bytes)", hint=hint
            )
        cid = cls(raw[4:])
        if str(cid) != text:
            # Non-zero slack bits: another spelling of the same bytes. Accepting it
            # would give one content two names.
            raise InvalidCIDError(f"invalid CID {shown!r}: not in canonical form", hint=hint)
        return cid

    @property
    def binary(self) -> bytes:
        return CID_PREFIX + self.digest

    def matches(self, data: bytes | bytearray | memoryview) -> bool:
        """Whether ``data`` is exactly the content this CID names."""
        return blake3_digest(data) == self.digest

    def __str__(self) -> str:
        return "b" + base64.b32encode(self.binary).decode("ascii").lower().rstrip("=")

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"
