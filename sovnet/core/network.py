"""Networks of trusted peers: a CA certificate, and node certificates it issues.

Peer trust decides whom a node talks to; it is separate from publisher trust
(signing.py, trust.py), which decides what content is authentic. A *network* is
a self-signed CA certificate. A node belongs to it when it holds a certificate
issued by that CA; only such nodes can join the network's swarms (libtorrent
SSL torrents carry the CA certificate) or use its control plane (HTTPS with
client certificates checked against the same CA).

Keys are ECDSA P-256: every TLS stack (OpenSSL under libtorrent, Python's ssl
under aiohttp) supports it. A node certificate has the node's name as its
common name and the DNS name ``*`` as its subject alternative name, because
libtorrent admits a peer to an SSL torrent only if one of its certificate's
names matches the torrent's name, and ``*`` matches every torrent of the
network.

An *invite* (:class:`Invite`) is the file one node hands another to bring it
in: the CA certificate, the new node's certificate, optionally its private key
(when the inviter generated it), and addresses of peers to start from.

Pure: bytes and ``now`` in, values out; files are read and written by
networkfiles.py.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sovnet.core.address import PeerAddress
from sovnet.errors import InvalidInputError

CA_DAYS = 3650
NODE_DAYS = 730
INVITE_VERSION = 1
MAX_INVITE_BYTES = 64 * 1024
MAX_INVITE_PEERS = 64
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_CLOCK_SKEW = datetime.timedelta(hours=1)

# RFC 7919's ffdhe2048 group, PKCS#3 PEM (as `openssl genpkey -genparam -algorithm DH
# -pkeyopt dh_param:ffdhe2048` prints it). libtorrent's set_ssl_certificate insists on
# DH parameters, though its handshakes use ECDHE; a published, vetted group needs no
# generation (which takes minutes) and no file.
FFDHE2048_PEM = b"""\
-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
"""


def dh_params_pem() -> bytes:
    return FFDHE2048_PEM


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"{what} {name!r} is not valid: 1 to 63 letters, digits, '.', '_' or '-'"
        )
    return name


@dataclass(frozen=True, order=True)
class NodeId:
    """Fingerprint of a node's TLS key (peer trust); never a publisher key id."""

    raw: bytes

    @classmethod
    def of(cls, certificate: x509.Certificate) -> NodeId:
        spki = certificate.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(hashlib.sha256(spki).digest()[:10])

    def __str__(self) -> str:
        return "node-" + base64.b32encode(self.raw).decode("ascii").lower()


def network_id(ca_pem: bytes) -> str:
    """A short fingerprint of a network's CA, to compare out loud."""
    der = load_certificate(ca_pem, "CA certificate").public_bytes(serialization.Encoding.DER)
    text = base64.b32encode(hashlib.sha256(der).digest()[:10]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def load_certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise InvalidInputError(f"the {what} is not a PEM certificate") from exc


def load_private_key(pem: bytes, what: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"the {what} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise InvalidInputError(f"the {what} is not an ECDSA P-256 key")
    return key


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_key() -> bytes:
    """A fresh P-256 private key, PEM."""
    return _key_pem(ec.generate_private_key(ec.SECP256R1()))


@dataclass(frozen=True)
class TlsIdentity:
    """This node's certificate in the network, for the SSL torrents."""

    cert_pem: bytes
    key_pem: bytes
    dh_pem: bytes


@dataclass(frozen=True)
class TlsFiles:
    """Where a node's TLS material is, for Python's ssl (which loads keys from files)."""

    ca_pem: bytes
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class CertificateAuthority:
    key_pem: bytes
    cert_pem: bytes


def create_network(name: str, now: datetime.datetime) -> CertificateAuthority:
    """A new network: a self-signed CA that may sign node certificates only."""
    check_name(name, "network name")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sovnet network"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(_key_pem(key), _cert_pem(cert))


def network_name(ca_pem: bytes) -> str:
    cert = load_certificate(ca_pem, "CA certificate")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else "?"


def node_request(key_pem: bytes, node_name: str) -> bytes:
    """A certificate signing request for this node's TLS key, PEM."""
    check_name(node_name, "node name")
    key = load_private_key(key_pem, "node key")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def issue_node_certificate(
    ca: CertificateAuthority, request_pem: bytes, now: datetime.datetime
) -> bytes:
    """Sign a node's request: a leaf certificate for TLS client and server use."""
    try:
        csr = x509.load_pem_x509_csr(request_pem)
    except ValueError as exc:
        raise InvalidInputError("the request is not a PEM certificate signing request") from exc
    if not csr.is_signature_valid:
        raise InvalidInputError("the request's signature does not verify")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise InvalidInputError("the request is not for an ECDSA P-256 key")
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    node_name = check_name(str(names[0].value) if names else "", "node name")
    ca_key = load_private_key(ca.key_pem, "CA key")
    ca_cert = load_certificate(ca.cert_pem, "CA certificate")
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + datetime.timedelta(days=NODE_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("*")]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return _cert_pem(cert)


@dataclass(frozen=True)
class Membership:
    """A checked node certificate: who this node is in which network."""

    network: str
    network_id: str
    node_name: str
    node_id: NodeId
    not_after: datetime.datetime


def check_membership(
    ca_pem: bytes, cert_pem: bytes, key_pem: bytes | None, now: datetime.datetime
) -> Membership:
    """That ``cert_pem`` was issued by the CA, is valid at ``now`` and (when given)
    belongs to ``key_pem``; raise InvalidInputError saying which part fails."""
    ca = load_certificate(ca_pem, "CA certificate")
    cert = load_certificate(cert_pem, "node certificate")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise InvalidInputError(
            f"the node certificate was not issued by network {network_name(ca_pem)!r}"
        ) from exc
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InvalidInputError(
            f"the node certificate is valid from {cert.not_valid_before_utc:%Y-%m-%d} "
            f"to {cert.not_valid_after_utc:%Y-%m-%d}, not now",
            hint="ask the network's owner for a new invite",
        )
    if key_pem is not None:
        key = load_private_key(key_pem, "node key")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise InvalidInputError("the node certificate is for another key than this node's")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Membership(
        network=network_name(ca_pem),
        network_id=network_id(ca_pem),
        node_name=str(names[0].value) if names else "?",
        node_id=NodeId.of(cert),
        not_after=cert.not_valid_after_utc,
    )


@dataclass(frozen=True)
class Invite:
    """What a network member hands a new node (see module docstring)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes | None = None
    peers: tuple[PeerAddress, ...] = ()

    def to_bytes(self) -> bytes:
        # Plain JSON, not canonical JSON: nothing signs an invite, and PEM text
        # holds newlines, which canonical JSON does not carry.
        return json.dumps(
            {
                "ca_certificate": self.ca_pem.decode("ascii"),
                "node_certificate": self.cert_pem.decode("ascii"),
                "node_key": None if self.key_pem is None else self.key_pem.decode("ascii"),
                "peers": [str(p) for p in self.peers],
                "sovnet_invite": INVITE_VERSION,
            },
            indent=2,
            sort_keys=True,
        ).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> Invite:
        if len(data) > MAX_INVITE_BYTES:
            raise InvalidInputError(f"not a sovnet invite: over {MAX_INVITE_BYTES} bytes")
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise InvalidInputError("not a sovnet invite: not JSON") from exc
        fields = {"ca_certificate", "node_certificate", "node_key", "peers", "sovnet_invite"}
        if not isinstance(value, dict) or set(value) != fields:
            raise InvalidInputError("not a sovnet invite: expected " + ", ".join(sorted(fields)))
        if value["sovnet_invite"] != INVITE_VERSION or isinstance(value["sovnet_invite"], bool):
            raise InvalidInputError(
                f"invite version {value['sovnet_invite']!r} is not supported; upgrade sovnet"
            )
        texts = [value["ca_certificate"], value["node_certificate"]]
        if not all(isinstance(t, str) and t.isascii() for t in texts):
            raise InvalidInputError("not a sovnet invite: certificates must be PEM text")
        key = value["node_key"]
        if key is not None and not (isinstance(key, str) and key.isascii()):
            raise InvalidInputError("not a sovnet invite: node_key must be PEM text or null")
        peers = value["peers"]
        if not isinstance(peers, list) or len(peers) > MAX_INVITE_PEERS:
            raise InvalidInputError(f"not a sovnet invite: at most {MAX_INVITE_PEERS} peers")
        return cls(
            ca_pem=str(texts[0]).encode("ascii"),
            cert_pem=str(texts[1]).encode("ascii"),
            key_pem=None if key is None else str(key).encode("ascii"),
            peers=tuple(PeerAddress.parse(str(p)) for p in peers),
        )
