"""Ed25519 validity as docs/spec.md §9.1 states it, checked against crafted keys.

OpenSSL computes the cofactorless equation with R compared as bytes and refuses
S >= L; it accepts public keys outside the prime-order subgroup. These tests build
such keys and signatures by hand (with core/ed25519.py's point arithmetic, so the
test also checks that OpenSSL, which is not ours, agrees it made valid signatures),
show which of them OpenSSL accepts, and that sovnet refuses them all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sovnet.core import ed25519
from sovnet.core.cid import CID
from sovnet.core.signing import PrivateKey, PublicKey, Signature, signed_message

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
BASE = bytes.fromhex("58" + "66" * 31)
IDENTITY = bytes([1]) + bytes(31)
ORDER_TWO = (P - 1).to_bytes(32, "little")  # (0, -1)


def openssl_accepts(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def challenge(r: bytes, public_key: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + public_key + message).digest(), "little") % L


def cids() -> Iterator[CID]:
    for i in range(10_000):
        yield CID.of(b"message %d" % i)
    raise AssertionError("no CID found")  # pragma: no cover - 1 in 8 fit


def torsion_point_of_order_eight() -> tuple[int, int, int, int]:
    # [L]Q has order dividing 8 for any curve point Q; pick one of order exactly 8.
    for i in range(1000):
        point = ed25519.decode_point(hashlib.sha256(b"%d" % i).digest())
        if point is None:
            continue
        torsion = ed25519.multiply(L, point)
        if not ed25519.is_identity(ed25519.multiply(4, torsion)):
            return torsion
    raise AssertionError("no point of order 8")  # pragma: no cover


def test_keys_from_key_generation_are_accepted() -> None:
    for seed in range(20):
        key = PrivateKey.from_seed(bytes([seed]) * 32)
        assert ed25519.public_key_acceptable(key.public_key.raw)
        cid = CID.of(b"x")
        assert key.sign(cid).verify(cid)


def test_the_identity_key_verifies_in_openssl_for_every_message_and_never_in_sovnet() -> None:
    signature = IDENTITY + bytes(32)  # R = identity, S = 0
    cid = CID.of(b"any manifest")
    assert openssl_accepts(IDENTITY, signature, signed_message(cid))
    assert not PublicKey(IDENTITY).verify(cid, signature)


@pytest.mark.parametrize("k_parity", [0, 1])
def test_the_order_two_key_with_r_identity_and_s_zero_is_refused(k_parity: int) -> None:
    """The case OpenSSL and @noble/ed25519 (default mode) disagree on: with k even,
    R + [k]A is the identity and OpenSSL accepts; §9.1 refuses the key itself."""
    signature = IDENTITY + bytes(32)
    cid = next(
        c for c in cids() if challenge(IDENTITY, ORDER_TWO, signed_message(c)) % 2 == k_parity
    )
    assert openssl_accepts(ORDER_TWO, signature, signed_message(cid)) == (k_parity == 0)
    assert not PublicKey(ORDER_TWO).verify(cid, signature)
    assert not Signature(PublicKey(ORDER_TWO), signature).verify(cid)


def test_a_key_with_a_small_order_component_is_refused() -> None:
    """A = [a]B + T (T of order 8): a signature made with a verifies under the
    cofactorless equation whenever k is a multiple of 8, and OpenSSL accepts it."""
    base = ed25519.decode_point(BASE)
    assert base is not None
    secret, nonce = 0x1234567 * 2**200 % L, 0x7654321 * 2**190 % L
    public = ed25519.encode_point(
        ed25519.add(ed25519.multiply(secret, base), torsion_point_of_order_eight())
    )
    r = ed25519.encode_point(ed25519.multiply(nonce, base))
    for cid in cids():
        k = challenge(r, public, signed_message(cid))
        if k % 8 == 0:
            break
    signature = r + ((nonce + k * secret) % L).to_bytes(32, "little")
    assert openssl_accepts(public, signature, signed_message(cid))
    assert not ed25519.public_key_acceptable(public)
    assert not PublicKey(public).verify(cid, signature)


def test_every_small_order_point_is_refused() -> None:
    torsion = torsion_point_of_order_eight()
    encodings = {ed25519.encode_point(ed25519.multiply(i, torsion)) for i in range(8)}
    assert len(encodings) == 8 and IDENTITY in encodings and ORDER_TWO in encodings
    for raw in encodings:
        assert not ed25519.public_key_acceptable(raw), raw.hex()


def test_non_canonical_encodings_are_refused() -> None:
    # y in p .. 2**255 - 1 is a second spelling of y - p; x = 0 with the sign bit set
    # is a second spelling of x = 0.
    for y in range(P, 2**255):
        for sign in (0, 1):
            assert ed25519.decode_point((y | sign << 255).to_bytes(32, "little")) is None
    assert ed25519.decode_point((1 | 1 << 255).to_bytes(32, "little")) is None
    key = PrivateKey.from_seed(bytes(32)).public_key.raw
    assert ed25519.encode_point(ed25519.decode_point(key) or ed25519.IDENTITY) == key


def test_s_at_or_above_the_group_order_is_refused() -> None:
    key = PrivateKey.from_seed(bytes(range(32)))
    cid = CID.of(b"manifest")
    good = key.sign(cid).value
    s = int.from_bytes(good[32:], "little")
    high = good[:32] + (s + L).to_bytes(32, "little")
    assert not ed25519.scalar_below_order(high)
    assert not openssl_accepts(key.public_key.raw, high, signed_message(cid))
    assert not key.public_key.verify(cid, high)
    assert key.public_key.verify(cid, good)
