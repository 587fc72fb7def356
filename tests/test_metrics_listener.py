"""The metrics listener's address rules, on loopback: the default address is taken
only if free (a second node on one machine goes without, and says so); an address
that was set must listen, or sovnetd does not start."""

from __future__ import annotations

import errno
import logging
import socket

import pytest

from sovnet.core.address import PeerAddress
from sovnet.core.config import DEFAULT_METRICS_LISTEN
from sovnet.daemon.metrics import OperatorEndpoints
from sovnet.errors import LocalStateError


def _hold(address: PeerAddress) -> socket.socket | None:
    """A listener on ``address``; None if another process has it already."""
    holder = socket.socket()
    try:
        holder.bind((address.host, address.port))
    except OSError as exc:
        holder.close()
        assert exc.errno == errno.EADDRINUSE
        return None
    holder.listen()
    return holder


async def test_a_taken_default_address_is_a_warning_and_no_listener(
    caplog: pytest.LogCaptureFixture,
) -> None:
    holder = _hold(DEFAULT_METRICS_LISTEN)  # taken one way or the other
    try:
        endpoints = OperatorEndpoints(None)
        with caplog.at_level(logging.WARNING):
            await endpoints.start()
        assert endpoints.address is None
        assert f"{DEFAULT_METRICS_LISTEN} is taken" in caplog.text
        await endpoints.close()
    finally:
        if holder is not None:
            holder.close()


async def test_a_taken_address_that_was_set_stops_the_start() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = PeerAddress("127.0.0.1", holder.getsockname()[1])
        with pytest.raises(LocalStateError, match=f"cannot serve metrics on {taken}"):
            await OperatorEndpoints(taken).start()


async def test_off_listens_nowhere() -> None:
    endpoints = OperatorEndpoints("off")
    await endpoints.start()
    assert endpoints.address is None


async def test_a_port_zero_is_the_one_the_kernel_picked() -> None:
    endpoints = OperatorEndpoints(PeerAddress("127.0.0.1", 0))
    await endpoints.start()
    try:
        assert endpoints.address is not None and endpoints.address.port > 0
        assert endpoints.readiness() == {
            "started": "starting: opening the store and the models it holds"
        }
    finally:
        await endpoints.close()
