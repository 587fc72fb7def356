"""A node's network files under its state directory, and the flow that makes them.

    <state>/network/ca.pem      the network's CA certificate (every member)
    <state>/network/ca.key      the CA's private key (only the node that created it), 0600
    <state>/network/node.key    this node's TLS key, 0600 (never leaves the node in the
                                request flow)
    <state>/network/node.pem    this node's certificate, issued by the CA

The flow (README, "Networks of trusted peers"): the owner runs ``network
create``; a new node runs ``network request`` and sends the request file; the
owner runs ``network invite REQUEST`` and sends back the invite; the new node
runs ``network join INVITE``. ``network invite --new-node NAME`` makes the key
too, for when one person sets up both machines.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from sovnet.core import network
from sovnet.core.address import PeerAddress
from sovnet.core.network import CertificateAuthority, Invite, Membership, TlsFiles, TlsIdentity
from sovnet.errors import InvalidInputError, LocalStateError, NotFoundError
from sovnet.store.atomicfile import write_atomic
from sovnet.store.lockfile import exclusive_lock

# A certificate request is under 1 KiB; a file far larger is not one (network invite).
MAX_REQUEST_BYTES = 64 * 1024


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class NetworkFiles:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "network"
        self.ca_cert = self.dir / "ca.pem"
        self.ca_key = self.dir / "ca.key"
        self.node_key = self.dir / "node.key"
        self.node_cert = self.dir / "node.pem"
        self._lock = state_dir / "network.lock"

    def _prepare(self) -> None:
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalStateError(f"cannot create {self.dir}: {exc.strerror}") from exc

    def _read(self, path: Path, what: str) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(
                f"this node has no {what} ({path})",
                hint="join a network: `sovnet network create NAME`, or "
                "`sovnet network request` then `sovnet network join INVITE`",
            ) from None
        except OSError as exc:
            raise LocalStateError(f"cannot read {path}: {exc.strerror}") from exc

    def _node_key(self) -> bytes:
        if not self.node_key.exists():
            write_atomic(self.node_key, network.new_key(), mode=0o600)
        return self._read(self.node_key, "node key")

    # -- the flow -------------------------------------------------------------------

    def create(self, name: str, node_name: str, *, force: bool = False) -> Membership:
        """A new network owned by this node, and this node's certificate in it."""
        network.check_name(name, "network name")
        network.check_name(node_name, "node name")
        self._prepare()
        with exclusive_lock(self._lock, what="the network files"):
            if self.node_cert.exists() and not force:
                raise InvalidInputError(
                    f"this node is already in network {self.membership().network!r}",
                    hint="--force leaves it for a new network",
                )
            now = _now()
            ca = network.create_network(name, now)
            key = self._node_key()
            cert = network.issue_node_certificate(ca, network.node_request(key, node_name), now)
            write_atomic(self.ca_key, ca.key_pem, mode=0o600)
            write_atomic(self.ca_cert, ca.cert_pem, mode=0o644)
            write_atomic(self.node_cert, cert, mode=0o644)
        return self.membership()

    def request(self, node_name: str) -> bytes:
        """A certificate signing request for this node's TLS key (made if missing)."""
        network.check_name(node_name, "node name")
        self._prepare()
        with exclusive_lock(self._lock, what="the network files"):
            return network.node_request(self._node_key(), node_name)

    def invite(
        self,
        *,
        request: bytes | None = None,
        new_node: str | None = None,
        peers: tuple[PeerAddress, ...] = (),
    ) -> Invite:
        """Admit another node: sign its request, or make a key and certificate for it."""
        if (request is None) == (new_node is None):
            raise InvalidInputError("give a request file or --new-node NAME, not both")
        ca = CertificateAuthority(
            key_pem=self._read(self.ca_key, "network CA key (only the network's creator has it)"),
            cert_pem=self._read(self.ca_cert, "network CA certificate"),
        )
        key = None
        if new_node is not None:
            key = network.new_key()
            request = network.node_request(key, new_node)
        assert request is not None
        cert = network.issue_node_certificate(ca, request, _now())
        return Invite(ca_pem=ca.cert_pem, cert_pem=cert, key_pem=key, peers=peers)

    def join(self, invite: Invite, *, force: bool = False) -> Membership:
        """Install an invite after checking that it fits this node's key."""
        self._prepare()
        with exclusive_lock(self._lock, what="the network files"):
            if self.node_cert.exists() and not force:
                current = self.membership()
                if network.network_id(invite.ca_pem) != current.network_id:
                    raise InvalidInputError(
                        f"this node is already in network {current.network!r}",
                        hint="--force leaves it for the invite's network",
                    )
            if invite.key_pem is not None:
                key = invite.key_pem
            else:
                key = self._read(self.node_key, "node key (run `sovnet network request` first)")
            network.check_membership(invite.ca_pem, invite.cert_pem, key, _now())
            if invite.key_pem is not None:
                write_atomic(self.node_key, invite.key_pem, mode=0o600)
            if self.ca_key.exists() and force:
                self.ca_key.unlink()  # a CA key of another network is of no use here
            write_atomic(self.ca_cert, invite.ca_pem, mode=0o644)
            write_atomic(self.node_cert, invite.cert_pem, mode=0o644)
        return self.membership()

    # -- what the daemon needs ---------------------------------------------------------

    def joined(self) -> bool:
        return self.node_cert.exists() and self.ca_cert.exists() and self.node_key.exists()

    def membership(self) -> Membership:
        ca = self._read(self.ca_cert, "network CA certificate")
        cert = self._read(self.node_cert, "node certificate")
        key = self._read(self.node_key, "node key")
        try:
            return network.check_membership(ca, cert, key, _now())
        except InvalidInputError as exc:
            raise LocalStateError(f"{self.dir}: {exc.message}", hint=exc.hint) from exc

    def is_owner(self) -> bool:
        return self.ca_key.exists()

    def ca_pem(self) -> bytes:
        return self._read(self.ca_cert, "network CA certificate")

    def tls_files(self) -> TlsFiles:
        return TlsFiles(ca_pem=self.ca_pem(), cert_path=self.node_cert, key_path=self.node_key)

    def identity(self) -> TlsIdentity:
        return TlsIdentity(
            cert_pem=self._read(self.node_cert, "node certificate"),
            key_pem=self._read(self.node_key, "node key"),
            dh_pem=network.dh_params_pem(),
        )
