"""HOST:PORT parsing: what people type, IPv6 in brackets, and typed errors otherwise."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.core.address import PeerAddress
from sovnet.errors import InvalidInputError


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:6880", "127.0.0.1", 6880),
        ("  mirror.example.org:443 ", "mirror.example.org", 443),
        ("[::1]:6880", "::1", 6880),
        ("[2001:db8::7]:1", "2001:db8::7", 1),
    ],
)
def test_parses(text: str, host: str, port: int) -> None:
    address = PeerAddress.parse(text)
    assert (address.host, address.port) == (host, port)
    assert PeerAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "host",
        "host:",
        ":80",
        "host:80000",
        "host:0",
        "::1:80",
        "[::1]80",
        "a b:1",
        "h:-1",
        "[example.org]:80",
        "host:8x",
        "-bad.example:1",
    ],
)
def test_refuses(text: str) -> None:
    with pytest.raises(InvalidInputError):
        PeerAddress.parse(text)


def test_port_zero_only_for_listening() -> None:
    assert PeerAddress.parse("0.0.0.0:0", allow_zero_port=True).port == 0


@given(st.text(max_size=40))
def test_any_text_gives_an_address_or_a_typed_error(text: str) -> None:
    try:
        address = PeerAddress.parse(text)
    except InvalidInputError:
        return
    assert PeerAddress.parse(str(address)) == address
