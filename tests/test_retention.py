"""What a store keeps within its budget: pins always, then the most recently used;
and what removing a model frees is what the disk gets back."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from sovnet.core.cid import CID
from sovnet.store.keyfiles import NodeFiles
from sovnet.store.retention import Limits, Retention
from sovnet.store.store import Store
from tests.test_node import publish_model

MIB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> Store:
    NodeFiles(tmp_path / "node").generate_key()
    return Store(tmp_path / "node").init()


def _three(store: Store, tmp_path: Path) -> list[CID]:
    cids = []
    for k in range(3):  # 1 MiB each, oldest first
        cid = publish_model(store.root, tmp_path / f"m{k}", size=MIB + k, version=str(k))
        os.utime(store.manifest_path(cid), (time.time() - 1000 + k, time.time() - 1000 + k))
        cids.append(cid)
    return cids


def test_the_least_recently_used_unpinned_model_goes_first(store: Store, tmp_path: Path) -> None:
    old, middle, new = _three(store, tmp_path)
    retention = Retention(store)
    one_model = retention.store_bytes() // 3
    limits = Limits(max_store_bytes=retention.store_bytes() - one_model // 2)
    assert [v.cid for v in retention.plan(limits).victims] == [old]
    retention.set_pinned(old, True)
    assert [v.cid for v in retention.plan(limits).victims] == [middle]
    retention.touch(middle)  # run just now: the newest use
    assert [v.cid for v in retention.plan(limits).victims] == [new]
    assert [v.cid for v in retention.plan(limits, protect={new}).victims] == [middle]


def test_a_budget_no_removal_can_keep_says_why(store: Store, tmp_path: Path) -> None:
    cids = _three(store, tmp_path)
    retention = Retention(store)
    for cid in cids:
        retention.set_pinned(cid, True)
    plan = retention.plan(Limits(max_store_bytes=MIB), needed=MIB)
    assert not plan.enough and plan.victims == ()
    assert plan.problem is not None and "quota of 1.0 MiB" in plan.problem


def test_a_blob_an_export_still_links_frees_nothing(store: Store, tmp_path: Path) -> None:
    cid = publish_model(store.root, tmp_path / "m", size=2 * MIB)
    retention = Retention(store)
    [victim] = retention.plan(Limits(max_store_bytes=1)).victims
    assert victim.frees >= 2 * MIB
    blob = max(store.blobs.iterdir(), key=lambda p: p.stat().st_size)  # the weights
    os.link(blob, tmp_path / "exported")  # as `sovnet export --hf-cache` links it
    [victim] = retention.plan(Limits(max_store_bytes=1)).victims
    assert victim.frees < MIB  # the weights stay on the disk: only config.json frees
    removed = store.remove(cid)
    assert removed.held_bytes >= 2 * MIB and removed.freed_bytes < MIB


def test_pins_survive_and_a_removed_model_is_forgotten(store: Store, tmp_path: Path) -> None:
    cid = publish_model(store.root, tmp_path / "m", size=MIB)
    retention = Retention(store)
    assert retention.set_pinned(cid, True) and not retention.set_pinned(cid, True)
    assert Retention(store).pinned() == {cid}
    retention.forget(cid)
    assert Retention(store).pinned() == set()
