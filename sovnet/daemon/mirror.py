"""A mirror follows publishers: after each refresh of their metadata, it fetches
every release it follows (config ``follow``) that is not here, without anyone
asking, and seeds it like any model.

What to hold is decided from the metadata this node's TUF client trusted
(store/rootfiles.py), never from what a peer says. A release its publisher revoked
is not fetched (one already here stays: nothing is deleted remotely). At most
:data:`MAX_FOLLOW_FETCHES` run at once, so a publisher of a thousand releases does
not start a thousand fetches; the next round starts the rest. A fetch that fails
is tried again at the next round, from where it stopped.

A publisher whose refresh failed (its metadata expired, or the peers offered only
older or badly signed metadata) is stale: the mirror keeps and seeds what it holds
but starts no fetch for it until a refresh succeeds, since its last trusted
metadata may no longer be what the publisher vouches for.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sovnet.api.messages import FollowedPublisher, MirrorStatus
from sovnet.core.cid import CID
from sovnet.core.config import FollowRule
from sovnet.core.manifest import version_order
from sovnet.daemon.fetcher import Fetcher
from sovnet.errors import SovnetError
from sovnet.store.retention import Retention
from sovnet.store.rootfiles import RootFiles
from sovnet.store.store import Store
from sovnet.trust import publisher_targets
from sovnet.trust.publisher_targets import Release

log = logging.getLogger(__name__)

MAX_FOLLOW_FETCHES = 2


@dataclass
class _Followed:
    """What the mirror knows of one followed publisher since it started."""

    rule: FollowRule
    refreshed: str | None = None  # when its metadata was last refreshed, ISO 8601 UTC
    problem: str | None = None  # why the last refresh or follow failed
    stale: bool = False  # the last refresh failed: nothing new is fetched
    wanted: tuple[CID, ...] = ()  # the releases it follows, newest metadata's
    failed: dict[CID, str] = field(default_factory=dict)  # last failure of a fetch


class Mirror:
    def __init__(
        self, state_dir: Path, store: Store, fetcher: Fetcher, rules: tuple[FollowRule, ...]
    ) -> None:
        self._roots = RootFiles(state_dir)
        self._store = store
        self._fetcher = fetcher
        self._followed = {rule.publisher: _Followed(rule) for rule in rules}
        self._tasks: dict[CID, asyncio.Task[None]] = {}
        for publisher, followed in self._followed.items():
            if not self._roots.is_pinned(publisher):
                log.warning(
                    "mirror: follows %s, but no root of %s is pinned here: nothing of it "
                    "is fetched until `sovnet trust add root.json` pins one",
                    publisher, publisher,
                )  # fmt: skip
                continue
            # What it holds and lacks by the metadata trusted before this start, for
            # status until the first refresh (nothing is fetched before one).
            try:
                followed.wanted = self._wanted(followed.rule)
            except SovnetError as exc:
                followed.problem = exc.message

    def refreshed(self, publisher: str, problem: str | None) -> None:
        """Its metadata was just refreshed (``problem``: why that failed): follow it."""
        followed = self._followed.get(publisher)
        if followed is None:
            return
        if problem is None:
            now = datetime.datetime.now(datetime.UTC)
            followed.refreshed = now.isoformat(timespec="seconds")
            if followed.stale:
                log.info("mirror: %s refreshed again: following it", publisher)
        elif not followed.stale:
            log.warning(
                "mirror: %s is stale (%s): keeping what is here, fetching nothing new "
                "from it until a refresh succeeds",
                publisher, problem,
            )  # fmt: skip
        followed.stale = problem is not None
        followed.problem = problem
        try:
            followed.wanted = self._wanted(followed.rule)
        except SovnetError as exc:
            followed.problem = exc.message
            return
        if followed.stale:
            return
        missing = [cid for cid in followed.wanted if not self._store.has(cid)]
        for cid in missing:
            if len(self._tasks) >= MAX_FOLLOW_FETCHES:
                break
            if cid not in self._tasks:
                log.info("mirror: %s released %s: fetching it", publisher, cid)
                self._tasks[cid] = asyncio.create_task(self._fetch(followed, cid))

    def _wanted(self, rule: FollowRule) -> tuple[CID, ...]:
        """The CIDs of the releases ``rule`` follows, in the order they are listed;
        revoked ones only if here already."""
        files = self._roots.trusted(rule.publisher)
        if files is None:
            return ()
        revoked = {
            a.release.cid
            for a in self._roots.advisories()
            if a.kind == "revoked" and a.release.name.split("/")[0] == rule.publisher
        }
        retention = Retention(self._store)
        by_model: dict[str, list[Release]] = {}
        for item in publisher_targets.listing(files[1], root=files[0]):
            release = item.release
            if not rule.wants(release.name, item.channels):
                continue
            if release.cid in revoked and not self._store.has(release.cid):
                continue  # not fetched; what is here already stays
            by_model.setdefault(release.name, []).append(release)
        wanted = []
        for releases in by_model.values():
            if rule.versions:  # the newest of each model only
                releases.sort(key=lambda r: version_order(r.version), reverse=True)
                del releases[rule.versions :]
            for release in releases:
                if retention.dropped(release.cid) and not self._store.has(release.cid):
                    # Removed here (`sovnet rm`, or collected for a newer one): fetched
                    # again, it would only push another out. `sovnet fetch` asks for it.
                    continue
                wanted.append(release.cid)
        return tuple(dict.fromkeys(wanted))

    async def _fetch(self, followed: _Followed, cid: CID) -> None:
        try:
            await asyncio.shield(self._fetcher.start(cid).outcome)
        except SovnetError as exc:
            followed.failed[cid] = exc.message
        else:
            followed.failed.pop(cid, None)
        finally:
            self._tasks.pop(cid, None)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def status(self) -> MirrorStatus:
        listed = []
        for publisher, followed in self._followed.items():
            files = self._roots.trusted(publisher)
            version = publisher_targets.version_of(files[1]) if files else None
            held = [cid for cid in followed.wanted if self._store.has(cid)]
            fetching = [cid for cid in followed.wanted if cid in self._tasks]
            problem = followed.problem
            pinned = self._roots.is_pinned(publisher)
            if not pinned:
                problem = (
                    f"no root of {publisher} is pinned here: `sovnet trust add root.json` "
                    "with the root its publisher gives"
                )
            listed.append(
                FollowedPublisher(
                    publisher=publisher,
                    models=followed.rule.models,
                    channels=followed.rule.channels,
                    releases_version=version,
                    refreshed=followed.refreshed,
                    problem=problem,
                    stale=followed.stale or not pinned,
                    versions=followed.rule.versions,
                    wanted=len(followed.wanted),
                    held=len(held),
                    fetching=len(fetching),
                    missing=len(followed.wanted) - len(held),
                    failed=tuple(f"{cid}: {why}" for cid, why in followed.failed.items()),
                )
            )
        return MirrorStatus(tuple(listed))
