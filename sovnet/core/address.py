"""Peer addresses: ``HOST:PORT`` as a person types them (``[::1]:6880`` for IPv6).

A :class:`PeerAddress` says where to reach a node's control plane or swarm; it
says nothing about who the node is (that is its certificate, network.py).

Pure: no I/O, no name resolution.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sovnet.errors import InvalidInputError

_HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


@dataclass(frozen=True, order=True)
class PeerAddress:
    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool):
            raise InvalidInputError(f"port {self.port!r} is not a number")
        if not 0 <= self.port <= 65535:
            raise InvalidInputError(f"port {self.port} is outside 0..65535")
        if not _is_ip(self.host) and not _HOSTNAME.fullmatch(self.host):
            raise InvalidInputError(f"{self.host!r} is not a host name or IP address")

    @classmethod
    def parse(cls, text: str, *, allow_zero_port: bool = False) -> PeerAddress:
        hint = "write HOST:PORT, e.g. 192.0.2.7:6880 or [2001:db8::7]:6880"
        text = text.strip() if isinstance(text, str) else ""
        if text.startswith("["):
            host, sep, port_text = text[1:].partition("]:")
            if not sep or not _is_ip(host) or ":" not in host:
                raise InvalidInputError(f"{text!r} is not an address", hint=hint)
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or ":" in host:
                raise InvalidInputError(f"{text!r} is not an address", hint=hint)
        if not port_text.isdigit() or len(port_text) > 5:
            raise InvalidInputError(f"{text!r}: the port must be a number", hint=hint)
        address = cls(host, int(port_text))
        if address.port == 0 and not allow_zero_port:
            raise InvalidInputError(f"{text!r}: port 0 is not a peer's port", hint=hint)
        return address

    @property
    def is_ip(self) -> bool:
        """Whether the host is an IP address (not a name to resolve first)."""
        return _is_ip(self.host)

    @property
    def url_host(self) -> str:
        """The host as URLs and listen strings write it: an IPv6 address in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def __str__(self) -> str:
        return f"{self.url_host}:{self.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
