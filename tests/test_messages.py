"""The API's messages (api/messages.py): every one survives JSON and back unchanged,
and a reply that does not fit its message is a DaemonError, never a KeyError."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from sovnet.api import messages
from sovnet.api.messages import (
    FetchProgress,
    FetchUnderWay,
    KnownPeer,
    NodeStatus,
    PublishResult,
    event_json,
    from_json,
    to_json,
)
from sovnet.errors import DaemonError

MESSAGES = [
    messages.ManifestAccepted,
    messages.FetchProgress,
    messages.FetchVerifying,
    messages.FetchResult,
    messages.RecentFetch,
    messages.PublishRequest,
    messages.PublishScanned,
    messages.PublishHashed,
    messages.PublishResult,
    messages.RemoveResult,
    messages.FetchUnderWay,
    messages.NodeStatus,
    messages.SeedingStats,
    messages.KnownPeer,
    messages.PeerRemoved,
]


def _finite(value: Any) -> bool:
    text = json.dumps(value)
    return (
        "NaN" not in text
        and "Infinity" not in text
        and not (isinstance(value, float) and math.isnan(value))
    )


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.__name__)
@given(data=st.data())
def test_every_message_round_trips_through_json(cls: type[Any], data: st.DataObject) -> None:
    message = data.draw(st.from_type(cls))
    wire = to_json(message)
    assume(_finite(wire))
    assert from_json(cls, json.loads(json.dumps(wire))) == message


def test_optional_fields_are_left_out_and_events_say_their_kind() -> None:
    assert to_json(FetchUnderWay("bcid", "finding peers")) == {
        "cid": "bcid",
        "state": "finding peers",
    }
    assert event_json(FetchProgress(1, 2, 3, None, 4, 0)) == {
        "event": "progress",
        "done": 1,
        "total": 2,
        "rate": 3,
        "eta": None,
        "peers": 4,
        "hash_failures": 0,
    }


@pytest.mark.parametrize(
    ("cls", "value", "problem"),
    [
        (KnownPeer, {"source": "added"}, "has no address"),
        (KnownPeer, {"address": 7, "source": "added"}, "address is not a str"),
        (PublishResult, [], "is not an object"),
        (FetchProgress, {**to_json(FetchProgress(1, 2, 3, 1.5, 4, 0)), "done": True}, "done"),
        (NodeStatus, {"node": "a"}, "has no node_id"),
    ],
)
def test_a_reply_that_does_not_fit_is_a_daemon_error(
    cls: type[Any], value: Any, problem: str
) -> None:
    with pytest.raises(DaemonError, match=f"sovnetd sent a malformed {cls.__name__}: .*{problem}"):
        from_json(cls, value)


def test_fields_a_newer_daemon_adds_are_ignored() -> None:
    assert from_json(KnownPeer, {"address": "h:1", "source": "added", "new": 1}) == KnownPeer(
        "h:1", "added"
    )
