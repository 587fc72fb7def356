"""The Ed25519 rules sovnet states itself, so validity does not depend on a library.

OpenSSL (through ``cryptography``) computes the verification equation: cofactorless,
``encode([S]B - [k]A)`` compared with R as bytes, S < L required. What it does not
refuse is a public key outside the prime-order subgroup: the identity ``01 00…00``
"verifies" ``R = identity, S = 0`` over every message, the order-2 key y = p - 1 over
every message whose k is even, and a key with a small-order component over one
message in eight. Such keys never come out of key generation, and libraries
disagree about them (libsodium refuses them, ``@noble/ed25519`` accepts some), so
docs/spec.md §9.1 refuses them, and this module checks that with plain integer
arithmetic before the library is asked.

Pure: no I/O. Variable-time, which is fine: public keys and signatures are public.
"""

from __future__ import annotations

from functools import lru_cache

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493  # order of the base point
D = -121665 * pow(121666, P - 2, P) % P
_SQRT_MINUS_ONE = pow(2, (P - 1) // 4, P)

# Extended homogeneous coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z.
Point = tuple[int, int, int, int]
IDENTITY: Point = (0, 1, 1, 0)


def add(p: Point, q: Point) -> Point:
    # RFC 8032 §5.1.4, complete for every pair of curve points.
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = 2 * t1 * t2 * D % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % P, g * h % P, f * g % P, e * h % P)


def multiply(scalar: int, point: Point) -> Point:
    result = IDENTITY
    while scalar:
        if scalar & 1:
            result = add(result, point)
        point = add(point, point)
        scalar >>= 1
    return result


def is_identity(point: Point) -> bool:
    x, y, z, _ = point
    return x % P == 0 and (y - z) % P == 0


def decode_point(raw: bytes) -> Point | None:
    """The point a 32-byte encoding names (RFC 8032 §5.1.3), or None.

    Stricter than the RFC's decoding in one place, as §9.1 says: y must be below p
    (no second spelling of a point). x = 0 with the sign bit set is refused, as in
    the RFC.
    """
    if len(raw) != 32:
        return None
    value = int.from_bytes(raw, "little")
    sign = value >> 255
    y = value & ((1 << 255) - 1)
    if y >= P:
        return None
    u = (y * y - 1) % P
    v = (D * y * y + 1) % P
    x = u * pow(v, 3, P) * pow(u * pow(v, 7, P), (P - 5) // 8, P) % P
    if v * x * x % P == -u % P:
        x = x * _SQRT_MINUS_ONE % P
    if v * x * x % P != u:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = P - x
    return (x, y, 1, x * y % P)


def encode_point(point: Point) -> bytes:
    """The canonical 32-byte encoding of ``point``."""
    x, y, z, _ = point
    inverse = pow(z, P - 2, P)
    x, y = x * inverse % P, y * inverse % P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


@lru_cache(maxsize=4096)
def public_key_acceptable(raw: bytes) -> bool:
    """Whether ``raw`` is a public key §9.1 accepts: the canonical encoding of a point
    of the prime-order subgroup other than the identity (so [L]A is the identity)."""
    point = decode_point(raw)
    return point is not None and not is_identity(point) and is_identity(multiply(L, point))


def scalar_below_order(signature: bytes) -> bool:
    """Whether the signature's S (its last 32 bytes, little-endian) is below L."""
    return len(signature) == 64 and int.from_bytes(signature[32:], "little") < L
