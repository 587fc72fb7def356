"""A publisher's root of trust: a TUF root whose keys several people hold.

Today a publisher is one Ed25519 key: lost, it can never sign again; stolen, the
thief signs for ever. A publisher root (TUF's ``root`` role, through python-tuf's
Metadata API) names n keys, held by different people or institutions, of which k
must sign; a new version of the root, signed by k of the old keys and k of the
new, replaces a lost or stolen key. The same keys and threshold sign releases
(TUF's ``targets`` role); the publisher's node signs ``snapshot`` and
``timestamp`` with an online key of its own, short-lived, when one is given.

The offline ceremony passes one file between machines that never meet:

1. :func:`new_root` (``sovnet publisher init``): the unsigned root, version 1;
2. :func:`sign` (``sovnet publisher sign``), once by each holder, with their
   private key (Ed25519, or ECDSA P-256 as hardware keys hold);
3. :func:`check` (``sovnet publisher status`` / ``finish``): who signed, who is
   missing, and whether the threshold is met: by the root's own keys, and for a
   rotation (:func:`rotate`) by the previous version's too (TUF's rule, §5.3.4
   of the TUF specification).

Pure: bytes and ``now`` in, bytes and values out; python-tuf does the
verification (:meth:`tuf.api.metadata.Root.get_verification_result`), this
module the rules around it: which keys, bounds on the input, and what a person
is told.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.exceptions import FormatError
from securesystemslib.signer import CryptoSigner, Key, SSlibKey
from securesystemslib.signer._utils import compute_default_keyid
from tuf.api.metadata import Metadata, Root, Targets
from tuf.api.serialization import DeserializationError, SerializationError
from tuf.api.serialization.json import JSONSerializer

from sovnet.core.manifest import ORG_PATTERN
from sovnet.core.signing import PUBLIC_KEY_PREFIX, PublicKey
from sovnet.errors import InvalidInputError, InvalidKeyError, ManifestFormatError, TrustError
from sovnet.trust.keys import parse_key_reference

_T = TypeVar("_T", Root, Targets)

PUBLISHER_FIELD = "x-sovnet-publisher"  # the publisher's name, in the root's signed part
PUBLISHER_PATTERN = ORG_PATTERN
MAX_ROOT_BYTES = 512 * 1024
MAX_KEYS = 64
# The highest version of a metadata file nodes serve by name (N.root.json: 9 digits).
MAX_VERSION = 999_999_999
ACCEPTED_KEYS = {("ed25519", "ed25519"), ("ecdsa", "ecdsa-sha2-nistp256")}
ROOT_LIFETIME = datetime.timedelta(days=365)
# Root and targets: the offline keys. Snapshot and timestamp: the online key.
OFFLINE_ROLES = ("root", "targets")
ONLINE_ROLES = ("snapshot", "timestamp")


@dataclass(frozen=True)
class RootCheck:
    """What a root file says and who signed it, for a person to read."""

    publisher: str
    version: int
    threshold: int
    keys: tuple[str, ...]  # TUF key ids of the root role, sorted
    signed_by: tuple[str, ...]  # those of ``keys`` whose signature is valid
    previous_threshold: int | None  # a rotation: the previous version's threshold
    previous_signed_by: tuple[str, ...]  # and its keys that signed this version
    expires: datetime.datetime
    previous_keys: tuple[str, ...] = ()  # a rotation: the previous version's root keys
    names: Mapping[str, str] = field(default_factory=dict)  # TUF key id -> `key show`'s
    online_keys: tuple[str, ...] = ()  # the timestamp role's: the publisher's node

    @property
    def complete(self) -> bool:
        """Signed by enough keys (of this version, and of the previous one)."""
        if len(self.signed_by) < self.threshold:
            return False
        return self.previous_threshold is None or (
            len(self.previous_signed_by) >= self.previous_threshold
        )


def public_key(data: bytes) -> Key:
    """A holder's public key: a PEM public key (Ed25519 or ECDSA P-256), or sovnet's
    own ``ed25519:HEX`` form (``sovnet key show``)."""
    text = data.strip()
    if text.startswith(PUBLIC_KEY_PREFIX.encode()) or re.fullmatch(rb"[0-9a-f]{64}", text):
        raw = PublicKey.parse(text.decode("ascii")).raw
        return SSlibKey.from_crypto(ed25519.Ed25519PublicKey.from_public_bytes(raw))
    try:
        loaded = serialization.load_pem_public_key(text)
    except (ValueError, UnsupportedAlgorithm):
        raise InvalidKeyError(
            "not a public key: expected a PEM public key (Ed25519 or ECDSA P-256) or ed25519:HEX"
        ) from None
    _check_algorithm(loaded)
    return SSlibKey.from_crypto(loaded)


def signer(pem: bytes) -> CryptoSigner:
    """A holder's private key (unencrypted PKCS#8 PEM, Ed25519 or ECDSA P-256)."""
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidKeyError(
            "not a private key: expected an unencrypted PEM private key (Ed25519 or ECDSA P-256)"
        ) from None
    _check_algorithm(loaded.public_key())
    return CryptoSigner(loaded)


def _check_algorithm(key: object) -> None:
    if isinstance(key, ed25519.Ed25519PublicKey):
        return
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return
    raise InvalidKeyError(
        "publisher root keys are Ed25519 or ECDSA P-256 (what hardware keys hold); "
        f"this one is {type(key).__name__.removeprefix('_')}"
    )


def new_root(
    publisher: str,
    keys: Sequence[Key],
    threshold: int,
    *,
    now: datetime.datetime,
    online: Key | None = None,
    lifetime: datetime.timedelta = ROOT_LIFETIME,
) -> bytes:
    """An unsigned root, version 1: ``threshold`` of ``keys`` sign the root and
    releases; ``online`` (else the same keys) signs snapshot and timestamp."""
    if not PUBLISHER_PATTERN.fullmatch(publisher):
        raise InvalidInputError(
            f"{publisher!r} is not a publisher name (the ORG of ORG/MODEL: letters, digits, "
            ". _ -, at most 64)"
        )
    root = Root(expires=expiry(now, lifetime))
    _set_offline_keys(root, keys, threshold)
    for role in ONLINE_ROLES:
        for key in [online] if online is not None else keys:
            root.add_key(key, role)
        root.roles[role].threshold = 1 if online is not None else threshold
    root.unrecognized_fields[PUBLISHER_FIELD] = publisher
    return to_bytes(Metadata(root))


def rotate(
    current: bytes,
    *,
    add: Sequence[Key] = (),
    remove: Sequence[str] = (),
    threshold: int | None = None,
    online: Key | None = None,
    now: datetime.datetime,
    lifetime: datetime.timedelta = ROOT_LIFETIME,
) -> bytes:
    """The next version of a root, unsigned: keys added or removed (by TUF key id, a
    unique prefix of it, the key id ``sovnet key show`` prints or the public key),
    another threshold, another ``online`` key for snapshot and
    timestamp. It needs the signatures of the old threshold of old keys and the new
    threshold of new keys."""
    metadata = load_root(current)
    root = metadata.signed
    keyids = list(root.roles["root"].keyids)
    gone = {_resolve(reference, root, keyids) for reference in remove}
    kept = [root.keys[k] for k in keyids if k not in gone]
    new = Root(
        version=root.version + 1,
        expires=expiry(now, lifetime),
        consistent_snapshot=root.consistent_snapshot,
    )
    _set_offline_keys(new, [*kept, *add], threshold or root.roles["root"].threshold)
    for role in ONLINE_ROLES:
        if online is not None:
            new.add_key(online, role)
            new.roles[role].threshold = 1
            continue
        old_role = root.roles[role]
        for keyid in old_role.keyids:
            if keyid not in gone:
                new.add_key(root.keys[keyid], role)
        new.roles[role].threshold = old_role.threshold
        if not new.roles[role].keyids:  # its keys were all removed: the offline ones sign
            for key in [*kept, *add]:
                new.add_key(key, role)
            new.roles[role].threshold = new.roles["root"].threshold
    new.unrecognized_fields.update(root.unrecognized_fields)
    return to_bytes(Metadata(new))


def online_keys(data: bytes) -> tuple[frozenset[str], ...]:
    """The key ids of the snapshot and timestamp roles of a root."""
    roles = load_root(data).signed.roles
    return tuple(frozenset(roles[role].keyids) for role in ONLINE_ROLES)


def signs_online_alone(data: bytes, keyid: str) -> bool:
    """Whether the key ``keyid`` signs snapshot and timestamp on its own: what the
    publisher's node, which signs them unattended, needs of the root."""
    roles = load_root(data).signed.roles
    return all(keyid in roles[role].keyids and roles[role].threshold == 1 for role in ONLINE_ROLES)


def sign(data: bytes, holder: CryptoSigner, *, previous: bytes | None = None) -> bytes:
    """``data`` with ``holder``'s signature added (replacing an earlier one of theirs).

    The key must be one of the root's (or, for a rotation, of ``previous``'s): a
    signature nobody asked for is refused rather than carried along."""
    metadata = load_root(data)
    keyid = holder.public_key.keyid
    allowed = set(metadata.signed.roles["root"].keyids)
    if previous is not None:
        allowed |= set(load_root(previous).signed.roles["root"].keyids)
    if keyid not in allowed and keyid in metadata.signed.roles["timestamp"].keyids:
        raise TrustError(
            f"key {keyid[:16]} is this root's online key (the publisher's node's): it signs "
            "snapshot and timestamp, and only the holders of the root's keys sign the root",
            hint="each holder signs on their own machine (or with --key THEIR.pem)",
        )
    if keyid not in allowed:
        raise TrustError(
            f"key {keyid[:16]} is not one of this root's keys"
            + (" nor of the previous version's" if previous is not None else ""),
            hint="sign with a key that `sovnet publisher status` lists",
        )
    metadata.sign(holder, append=True)
    return to_bytes(metadata)


def check(data: bytes, *, previous: bytes | None = None) -> RootCheck:
    """Who signed ``data`` (a root, or the next version of ``previous``)."""
    metadata = load_root(data)
    root = metadata.signed
    own = root.get_verification_result("root", metadata.signed_bytes, metadata.signatures)
    previous_threshold: int | None = None
    previous_signed: tuple[str, ...] = ()
    previous_keys: tuple[str, ...] = ()
    names = holder_names(root.keys)
    if previous is not None:
        before = load_root(previous).signed
        if root.version != before.version + 1:
            raise TrustError(
                f"version {root.version} does not follow version {before.version}: a root "
                "is replaced by the next version only"
            )
        if root.unrecognized_fields.get(PUBLISHER_FIELD) != _publisher(before):
            raise TrustError("the two roots are of different publishers")
        result = before.get_verification_result("root", metadata.signed_bytes, metadata.signatures)
        previous_threshold = before.roles["root"].threshold
        previous_signed = tuple(sorted(result.signed))
        previous_keys = tuple(sorted(before.roles["root"].keyids))
        names.update(holder_names(before.keys))
    return RootCheck(
        publisher=_publisher(root),
        version=root.version,
        threshold=root.roles["root"].threshold,
        keys=tuple(sorted(root.roles["root"].keyids)),
        signed_by=tuple(sorted(own.signed)),
        previous_threshold=previous_threshold,
        previous_signed_by=previous_signed,
        expires=root.expires,
        previous_keys=previous_keys,
        names=names,
        online_keys=tuple(sorted(root.roles["timestamp"].keyids)),
    )


def problems(data: bytes, *, now: datetime.datetime) -> list[str]:
    """What keeps a root, well formed and signed, from ever working on sovnet's nodes:
    a role whose threshold its keys cannot meet, no ``consistent_snapshot`` (nodes
    serve snapshot and targets by version only), an expiry already past."""
    root = load_root(data).signed
    found = []
    if len(root.keys) > MAX_KEYS:
        found.append(f"it names {len(root.keys)} keys; a root has at most {MAX_KEYS}")
    for keyid, key in sorted(root.keys.items()):
        if (key.keytype, key.scheme) not in ACCEPTED_KEYS:
            found.append(
                f"key {shown_id(keyid)} is {key.keytype}/{key.scheme}: Ed25519 or ECDSA P-256 only"
            )
    found += key_problems(root.keys)
    found += _role_problems(root)
    if root.version > MAX_VERSION:
        found.append(f"version {root.version} is above {MAX_VERSION}, the highest nodes serve")
    for name, role in sorted(root.roles.items()):
        if len(role.keyids) < role.threshold:
            found.append(
                f"role {name} has {len(role.keyids)} key(s) for a threshold of {role.threshold}"
            )
    if not root.consistent_snapshot:
        found.append("consistent_snapshot is false: nodes serve N.snapshot.json and N.targets.json")
    if root.is_expired(now):
        found.append(f"it expired on {root.expires:%Y-%m-%d}")
    return found


def key_problems(keys: Mapping[str, Key]) -> list[str]:
    """Keys a person cannot take at their id: an id that is not its key's own (TUF's
    default, the SHA-256 of the key), or one key under two ids. python-tuf takes ids
    as given, so either would let one holder's signature count as another's, or
    twice, while `publisher status` showed two holders (hostile tester's H3)."""
    found = []
    seen: dict[str, str] = {}
    for keyid, key in sorted(keys.items()):
        try:
            own = compute_default_keyid(key.keytype, key.scheme, key.keyval)
        except (FormatError, ValueError, TypeError):  # a key python-tuf parsed, unhashable
            own = None
        if own != keyid:
            found.append(f"key id {shown_id(keyid)} is not its key's own id")
        material = _material(key)
        if material is None:
            found.append(
                f"key {shown_id(keyid)} is not written the one way sovnet writes it "
                "(lower-case hex; PEM as `sovnet key show` and OpenSSL write it)"
            )
            continue
        if material in seen:
            found.append(f"keys {shown_id(seen[material])} and {shown_id(keyid)} are one key twice")
        seen.setdefault(material, keyid)
    return found


def _material(key: Key) -> str | None:
    """The key's public bytes (hex), if its ``keyval`` is written the one canonical
    way: two spellings of one key (upper-case hex, PEM wrapped otherwise) would hash
    to two "own" ids and let one holder count twice (hostile tester's second round)."""
    public = key.keyval.get("public")
    if not isinstance(public, str):
        return None
    if key.keytype == "ed25519":
        return public if re.fullmatch(r"[0-9a-f]{64}", public) else None
    try:
        loaded = serialization.load_pem_public_key(public.encode())
    except (ValueError, UnsupportedAlgorithm):
        return None
    canonical = loaded.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    if canonical != public:
        return None
    der = loaded.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der.hex()


def _role_problems(root: Root) -> list[str]:
    """Roles other than sovnet makes them (sovnet/trust/publisher_root.py's new_root):
    the releases (targets) signed by the same keys and threshold as the root, which
    `publisher status` shows; snapshot and timestamp by one online key set, any of
    them alone (the publisher's node signs them by itself). A root drafted otherwise
    showed "2 of 3" while one key signed releases (hostile tester's H2)."""
    roles = root.roles
    found = [
        f"role {name} names key {shown_id(keyid)}, which the root does not hold"
        for name, role in sorted(roles.items())
        for keyid in role.keyids
        if keyid not in root.keys
    ]
    offline, releases = roles["root"], roles["targets"]
    if set(releases.keyids) != set(offline.keyids) or releases.threshold != offline.threshold:
        found.append(
            f"its releases (targets) are signed by {releases.threshold} of "
            f"{len(releases.keyids)} keys, not by the root's {offline.threshold} of "
            f"{len(offline.keyids)}"
        )
    snapshot, timestamp = roles["snapshot"], roles["timestamp"]
    if set(snapshot.keyids) != set(timestamp.keyids) or {
        snapshot.threshold,
        timestamp.threshold,
    } != {1}:
        found.append("snapshot and timestamp are not signed by the same online key(s), one alone")
    return found


def shown_id(keyid: str) -> str:
    """A key id for a person: its first 16 hex digits, or, if it is not hex (a root
    can say anything), escaped: nothing from a file reaches the terminal raw."""
    if re.fullmatch(r"[0-9a-f]{16,64}", keyid):
        return keyid[:16]
    return ascii(keyid[:32])


def _set_offline_keys(root: Root, keys: Sequence[Key], threshold: int) -> None:
    unique = {key.keyid: key for key in keys}
    if len(unique) != len(keys):
        raise InvalidInputError("the same key is given twice")
    if not 1 <= len(unique) <= MAX_KEYS:
        raise InvalidInputError(f"a root has 1 to {MAX_KEYS} keys, not {len(unique)}")
    if not 1 <= threshold <= len(unique):
        raise InvalidInputError(
            f"a threshold of {threshold} cannot be met by {len(unique)} key(s)",
            hint="the threshold is how many of the keys must sign: 1 to the number of keys",
        )
    for role in OFFLINE_ROLES:
        for key in unique.values():
            root.add_key(key, role)
        root.roles[role].threshold = threshold


def holder_id(key: Key) -> str | None:
    """The key id ``sovnet key show`` prints for a root key (Ed25519 keys only: a
    P-256 hardware key has its TUF key id alone)."""
    if key.keytype != "ed25519" or not isinstance(key.keyval.get("public"), str):
        return None
    try:
        return str(PublicKey(bytes.fromhex(key.keyval["public"])).key_id)
    except (ValueError, InvalidKeyError):
        return None


def holder_names(keys: Mapping[str, Key]) -> dict[str, str]:
    """TUF key id -> the key id ``sovnet key show`` prints, for the Ed25519 ones."""
    return {keyid: name for keyid, key in keys.items() if (name := holder_id(key)) is not None}


def tuf_key_id(public: PublicKey) -> str:
    """The TUF key id of a node's Ed25519 key (what publisher roots name it by)."""
    key = SSlibKey.from_crypto(ed25519.Ed25519PublicKey.from_public_bytes(public.raw))
    return key.keyid


def _resolve(reference: str, root: Root, keyids: Sequence[str]) -> str:
    """The key of ``keyids`` a person named: by a TUF key id (8 or more of its first
    hex digits), by the key id ``sovnet key show`` prints, or by its public key."""
    text = reference.strip()
    if re.fullmatch(r"[0-9a-fA-F]{0,64}", text):  # a TUF key id: 8 digits at least
        matches = [k for k in keyids if k.startswith(text.lower())] if len(text) >= 8 else []
    else:
        try:
            named, public = parse_key_reference(text)
        except InvalidKeyError as exc:
            raise InvalidInputError(
                exc.message,
                hint=f"{exc.hint or 'give the key id `sovnet key show` prints'}; or 8+ hex "
                "digits of a key id `sovnet publisher status` lists",
            ) from None
        wanted = str(public.key_id) if public is not None else str(named)
        matches = [k for k in keyids if holder_id(root.keys[k]) == wanted]
    if len(matches) != 1:
        raise InvalidInputError(
            f"{reference!r} names {'no' if not matches else 'more than one'} key of this root",
            hint="give at least 8 characters of a key id that `sovnet publisher status` lists, "
            "or the key id `sovnet key show` prints",
        )
    return matches[0]


def _publisher(root: Root) -> str:
    name = root.unrecognized_fields.get(PUBLISHER_FIELD)
    if not isinstance(name, str) or not PUBLISHER_PATTERN.fullmatch(name):
        raise ManifestFormatError(f"the root does not name its publisher ({PUBLISHER_FIELD})")
    return name


def load(data: bytes, kind: type[_T], *, max_bytes: int, what: str) -> Metadata[_T]:
    """TUF metadata of ``kind`` from untrusted bytes: bounded, parsed by python-tuf, of
    that role, or ManifestFormatError saying which rule it breaks. (Signatures are
    checked by the caller, against the keys it trusts.)"""
    if len(data) > max_bytes:
        raise ManifestFormatError(f"{what} is at most {max_bytes // 1024} KiB")
    try:
        metadata = Metadata[kind].from_bytes(data)  # type: ignore[valid-type]
        _ = metadata.signed_bytes  # what signatures cover: canonical JSON (no floats)
    except (DeserializationError, RecursionError) as exc:
        raise ManifestFormatError(f"not {what} in TUF's form: {exc.__cause__ or exc}") from None
    except SerializationError as exc:
        raise ManifestFormatError(
            f"{what} that cannot be signed: not canonical JSON ({exc.__cause__ or exc})"
        ) from None
    if not isinstance(metadata.signed, kind):
        raise ManifestFormatError(f"not {what} but {metadata.signed.type} metadata")
    return metadata


def claimed_version(data: bytes) -> int | None:
    """The version a metadata file says it is, before anyone checked it (None: no
    version to read)."""
    try:
        value = json.loads(data)["signed"]["version"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def to_bytes(metadata: Metadata[Any]) -> bytes:
    """Metadata as sovnet writes it: python-tuf's JSON, indented for a person to read."""
    return metadata.to_bytes(JSONSerializer(compact=False))


def load_root(data: bytes) -> Metadata[Root]:
    """A publisher root from untrusted bytes (:func:`load`, and it names its publisher)."""
    metadata = load(data, Root, max_bytes=MAX_ROOT_BYTES, what="a root")
    _publisher(metadata.signed)
    return metadata


def expiry(now: datetime.datetime, lifetime: datetime.timedelta) -> datetime.datetime:
    return (now + lifetime).astimezone(datetime.UTC).replace(microsecond=0)
