"""Networks: the CA issues node certificates; membership is checked at every step."""

from __future__ import annotations

import contextlib
import datetime
import json

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core import network
from sovnet.core.address import PeerAddress
from sovnet.core.network import Invite
from sovnet.errors import InvalidInputError

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def ca() -> network.CertificateAuthority:
    return network.create_network("lab", NOW)


def _member(ca: network.CertificateAuthority, name: str = "node-b") -> tuple[bytes, bytes]:
    key = network.new_key()
    return key, network.issue_node_certificate(ca, network.node_request(key, name), NOW)


def test_issued_certificate_is_a_member(ca: network.CertificateAuthority) -> None:
    key, cert = _member(ca)
    membership = network.check_membership(ca.cert_pem, cert, key, NOW)
    assert (membership.network, membership.node_name) == ("lab", "node-b")
    assert membership.network_id == network.network_id(ca.cert_pem)
    parsed = x509.load_pem_x509_certificate(cert)
    names = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # libtorrent admits a peer to an SSL torrent only if a name matches the torrent's.
    assert names.get_values_for_type(x509.DNSName) == ["*"]


def test_certificate_of_another_network_is_refused(ca: network.CertificateAuthority) -> None:
    other = network.create_network("elsewhere", NOW)
    key, cert = _member(other)
    with pytest.raises(InvalidInputError, match="not issued by network 'lab'"):
        network.check_membership(ca.cert_pem, cert, key, NOW)


def test_certificate_for_another_key_is_refused(ca: network.CertificateAuthority) -> None:
    _, cert = _member(ca)
    with pytest.raises(InvalidInputError, match="another key"):
        network.check_membership(ca.cert_pem, cert, network.new_key(), NOW)


def test_expired_certificate_is_refused(ca: network.CertificateAuthority) -> None:
    key, cert = _member(ca)
    later = NOW + datetime.timedelta(days=network.NODE_DAYS + 1)
    with pytest.raises(InvalidInputError, match="not now"):
        network.check_membership(ca.cert_pem, cert, key, later)


def test_a_tampered_request_is_refused(ca: network.CertificateAuthority) -> None:
    request = network.node_request(network.new_key(), "node-c")
    der = x509.load_pem_x509_csr(request).public_bytes(
        __import__("cryptography").hazmat.primitives.serialization.Encoding.DER
    )
    tampered = bytearray(der)
    tampered[-5] ^= 1
    pem = (
        b"-----BEGIN CERTIFICATE REQUEST-----\n"
        + __import__("base64").encodebytes(bytes(tampered))
        + b"-----END CERTIFICATE REQUEST-----\n"
    )
    with pytest.raises(InvalidInputError):
        network.issue_node_certificate(ca, pem, NOW)


@pytest.mark.parametrize("name", ["", "a b", "x" * 64, "../evil", "é"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError):
        network.node_request(network.new_key(), name)


def test_invite_round_trip(ca: network.CertificateAuthority) -> None:
    key, cert = _member(ca)
    invite = Invite(ca.cert_pem, cert, key, (PeerAddress("192.0.2.1", 6880),))
    assert Invite.from_bytes(invite.to_bytes()) == invite
    assert Invite.from_bytes(Invite(ca.cert_pem, cert).to_bytes()).key_pem is None


@pytest.mark.parametrize(
    "change",
    [
        {"sovnet_invite": 2},
        {"peers": ["not an address"]},
        {"node_key": 5},
        {"extra": 1},
        {"ca_certificate": ["x"]},
    ],
)
def test_malformed_invites_are_refused(ca: network.CertificateAuthority, change: dict) -> None:
    value = json.loads(Invite(ca.cert_pem, _member(ca)[1]).to_bytes())
    value.update(change)
    with pytest.raises(InvalidInputError):
        Invite.from_bytes(json.dumps(value).encode())


@given(st.binary(max_size=300))
def test_any_bytes_give_an_invite_or_a_typed_error(data: bytes) -> None:
    with contextlib.suppress(InvalidInputError):
        Invite.from_bytes(data)


def test_dh_parameters_load() -> None:
    assert network.dh_params_pem().startswith(b"-----BEGIN DH PARAMETERS-----")


def test_an_invite_names_an_address_the_control_plane_listens_on() -> None:
    import socket

    from sovnet.cli.daemon_commands import inviter_address

    host = socket.gethostname()
    for listen in ("0.0.0.0", "::", ""):  # "" is an older sovnetd, which does not say
        address, why = inviter_address(listen, 6880)
        assert address == PeerAddress(host, 6880) and "all addresses" in why
    for listen in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        address, why = inviter_address(listen, 6880)
        assert address == PeerAddress(listen, 6880)
        assert f"listens on {listen} only" in why
    address, why = inviter_address("192.0.2.7", 6880)
    assert address == PeerAddress("192.0.2.7", 6880) and "192.0.2.7" in why
