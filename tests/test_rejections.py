"""Refused connections: counted by listener and reason, logged once a source an
interval with the count (issue #12, defect 9)."""

from __future__ import annotations

import logging

import pytest

from sovnet.net.rejections import CONTROL, SWARM, RejectionCount, Rejections


def test_one_line_a_source_an_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    rejections = Rejections(interval=60, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="sovnet.net.rejections")
    for _ in range(30):
        rejections.record(CONTROL, "203.0.113.9", "no member certificate")
    for _ in range(7):
        rejections.record(CONTROL, "203.0.113.9", "a certificate of another network")
    rejections.record(SWARM, "203.0.113.9", "not TLS")
    rejections.record(CONTROL, "198.51.100.1", "no member certificate")
    assert caplog.records == []  # nothing until the interval ends
    now[0] = 61.0
    rejections.record(CONTROL, "203.0.113.9", "no member certificate")  # a new interval
    assert [r.getMessage() for r in caplog.records] == [
        "rejected 37 connections from 203.0.113.9 to the control plane in the last 60 s: "
        "no member certificate (30), a certificate of another network (7)"
    ]
    rejections.close()
    assert len(caplog.records) == 4
    assert all(r.levelno == logging.INFO for r in caplog.records)
    assert rejections.counts() == [
        RejectionCount(CONTROL, "a certificate of another network", 7, "203.0.113.9"),
        RejectionCount(CONTROL, "no member certificate", 32, "203.0.113.9"),
        RejectionCount(SWARM, "not TLS", 1, "203.0.113.9"),
    ]
