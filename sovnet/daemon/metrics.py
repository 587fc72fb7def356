"""What an operator sees of a running sovnetd without its API socket: Prometheus
metrics on ``/metrics``, ``/healthz`` (the process answers) and ``/readyz`` (it can do
its job: started, the swarm listening, the store writable, the network's keys
loaded), over plain HTTP on their own listener, loopback by default
(``metrics_listen``). It answers from the moment sovnetd starts, so ``/readyz`` says
"starting" while a mirror opens thousands of models.

Figures are read from the node when Prometheus scrapes (a custom collector), not
counted a second time: the node keeps them for ``sovnet status`` already. Nothing
here takes a request's input beyond its path.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sovnet.core.address import PeerAddress
from sovnet.core.config import DEFAULT_METRICS_LISTEN, MetricsListen
from sovnet.errors import LocalStateError
from sovnet.net.control_listener import GatedListener, ServerLimits, request_deadline
from sovnet.net.rejections import METRICS, Rejections
from sovnet.store import diskspace

if TYPE_CHECKING:
    from sovnet.daemon.node import Node

log = logging.getLogger(__name__)


class NodeCollector(Collector):
    """The node's figures, as Prometheus metric families, at each scrape."""

    def __init__(self, endpoints: OperatorEndpoints) -> None:
        self._endpoints = endpoints

    def collect(self) -> Iterator[Metric]:
        node = self._endpoints.node
        if node is None:  # starting: only the process metrics
            return
        status = node.status()
        info = InfoMetricFamily("sovnet", "This sovnetd: version, node and network.")
        info.add_metric(
            [], {"version": status.version, "node": status.node, "network": status.network}
        )
        yield info
        yield _gauge(
            "sovnet_swarm_listening",
            "1 if the swarm listens for peers.",
            node.swarm.listen_problem is None,
        )
        seeded = node.seeder.seeding()
        yield _gauge("sovnet_models_seeded", "Models this node seeds.", len(seeded))
        yield _gauge(
            "sovnet_models_in_swarm",
            "Seeded models whose torrent is in the swarm now (at most active_seeds; the "
            "others join when a peer asks).",
            node.seeder.joined(),
        )
        yield _gauge(
            "sovnet_seeded_bytes",
            "Bytes of the models this node seeds.",
            sum(spec.manifest.total_size for spec in seeded.values()),
        )
        yield _gauge(
            "sovnet_models_damaged",
            "Models not seeded: a file differs or is missing.",
            len(status.damaged),
        )
        downloaded, uploaded = node.swarm.totals()
        yield _counter(
            "sovnet_downloaded_bytes", "Payload bytes downloaded from peers.", downloaded
        )
        yield _counter("sovnet_uploaded_bytes", "Payload bytes uploaded to peers.", uploaded)
        by_class = node.swarm.class_totals()
        for index, way in enumerate(("downloaded", "uploaded")):
            family = CounterMetricFamily(
                f"sovnet_peer_class_{way}_bytes",
                f"Payload bytes {way}, by peer class: local (loopback and local_networks) "
                "or global (a torrent with peers of both shares by what each moved).",
                labels=["peer_class"],
            )
            for name, pair in sorted(by_class.items()):
                family.add_metric([name], pair[index])
            yield family
        yield _gauge(
            "sovnet_download_rate_bytes",
            "Payload bytes a second downloaded now.",
            status.download_rate,
        )
        yield _gauge(
            "sovnet_upload_rate_bytes", "Payload bytes a second uploaded now.", status.upload_rate
        )
        tally = node.fetcher.tally
        yield _counter("sovnet_fetches_started", "Fetches started.", tally.started)
        ended = CounterMetricFamily(
            "sovnet_fetches_ended",
            "Fetches ended, by result: ok, or why they failed (the error's code).",
            labels=["result"],
        )
        for result, count in sorted(tally.ended.items()):
            ended.add_metric([result], count)
        yield ended
        yield _gauge("sovnet_fetches_under_way", "Fetches under way.", len(status.fetches))
        yield _counter(
            "sovnet_hash_failures",
            "Pieces from peers that failed their hash check.",
            status.hash_failures,
        )
        yield _counter(
            "sovnet_peers_banned", "Peers banned for sending corrupt data.", node.banned_total
        )
        yield _gauge(
            "sovnet_peer_connections",
            "Swarm connections to peers, over every model.",
            sum(s.peers for s in node.swarm.statuses().values()),
        )
        known = GaugeMetricFamily(
            "sovnet_peers_known", "Control-plane peers this node knows, by state.", labels=["state"]
        )
        states: dict[str, int] = {}
        for peer in node.book.all():
            states[peer.state] = states.get(peer.state, 0) + 1
        for state, count in sorted(states.items()):
            known.add_metric([state], count)
        yield known
        refused = CounterMetricFamily(
            "sovnet_connections_refused",
            "Connections refused, by listener (control, swarm) and reason.",
            labels=["plane", "reason"],
        )
        for rejected in status.rejected:
            refused.add_metric([rejected.plane, rejected.reason], rejected.count)
        yield refused
        followed = GaugeMetricFamily(
            "sovnet_followed_releases",
            "Releases of followed publishers (a mirror), by state: held, fetching, missing "
            "(missing: how far behind the newest metadata it trusts).",
            labels=["publisher", "state"],
        )
        stale = GaugeMetricFamily(
            "sovnet_followed_stale",
            "1 while a followed publisher's last refresh failed (nothing new is fetched).",
            labels=["publisher"],
        )
        for publisher in node.mirror_status().followed:
            for state in ("held", "fetching", "missing"):
                followed.add_metric([publisher.publisher, state], getattr(publisher, state))
            stale.add_metric([publisher.publisher], publisher.stale)
        yield followed
        yield stale
        yield _counter(
            "sovnet_hinted_refreshes",
            "Refreshes of publishers' metadata that peers' hints started.",
            node.upkeep.hinted_refreshes,
        )
        yield _gauge(
            "sovnet_publisher_alerts",
            "Publishers caught saying two things.",
            len(status.publisher_alerts),
        )
        try:
            free = diskspace.free_bytes(node.store.root)
        except OSError:
            pass  # /readyz says why
        else:
            yield _gauge("sovnet_store_free_bytes", "Free bytes on the store's disk.", free)
        measured = node.store_bytes()
        if measured is not None:
            yield _gauge(
                "sovnet_store_bytes",
                "Bytes the store's models (and downloads under way) take on its disk "
                "(measured every 10 s).",
                measured,
            )
        yield _gauge(
            "sovnet_store_quota_bytes",
            "The store's quota, max_store_bytes (0: none).",
            node.budget.max_store_bytes,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))


@web.middleware
async def _one_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One request a connection: a client that kept connections alive with a request
    every few seconds held all of them, and no scrape got in (hostile tester)."""
    response = await handler(request)
    response.force_close()
    return response


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, value=float(value))


# Plain HTTP for a scraper and probes: few connections, each brief. Without limits,
# idle connections held open took sovnetd's every file descriptor (hostile tester).
METRICS_LIMITS = ServerLimits(
    header_timeout=10.0, request_timeout=30.0, max_connections=64, max_connections_per_peer=32
)


class OperatorEndpoints:
    """The metrics listener: started before the node, given it once it runs."""

    def __init__(self, listen: MetricsListen, rejections: Rejections | None = None) -> None:
        self.node: Node | None = None
        self.address: PeerAddress | None = None  # where it listens, once it does
        self._listen = listen
        self._runner: web.AppRunner | None = None
        self._listener = GatedListener(
            None, METRICS_LIMITS, rejections or Rejections(), plane=METRICS
        )
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(NodeCollector(self))

    async def start(self) -> None:
        """Listen, unless ``off``. The default address is taken only if free: a second
        node on one machine goes without; an address that was set must listen."""
        if self._listen == "off":
            return
        address = self._listen or DEFAULT_METRICS_LISTEN
        app = web.Application(middlewares=[request_deadline(self._listener), _one_request])
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=METRICS_LIMITS.header_timeout,  # see control_listener.py
            handler_cancellation=True,
            lingering_time=1.0,
        )
        await runner.setup()
        assert runner.server is not None
        try:
            port = await self._listener.start(runner.server, address.host, address.port)
        except OSError as exc:
            await runner.cleanup()
            if self._listen is None and exc.errno == errno.EADDRINUSE:
                log.warning(
                    "metrics: %s is taken (another sovnetd?): no /metrics here; set "
                    "metrics_listen to serve them elsewhere",
                    address,
                )
                return
            raise LocalStateError(
                f"cannot serve metrics on {address}: {exc.strerror or exc}",
                hint='choose another metrics_listen address, or "off"',
            ) from exc
        self._runner = runner
        self.address = PeerAddress(address.host, port)
        log.info("metrics on http://%s/metrics (and /healthz, /readyz)", self.address)

    async def close(self) -> None:
        await self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        checks = self.readiness()
        ready = all(value == "ok" for value in checks.values())
        body = json.dumps({"ready": ready, "checks": checks}, indent=1) + "\n"
        return web.Response(
            text=body, status=200 if ready else 503, content_type="application/json"
        )

    def readiness(self) -> dict[str, str]:
        """Each check: "ok", or why not."""
        node = self.node
        if node is None:
            return {"started": "starting: opening the store and the models it holds"}
        checks = {"started": "ok"}
        checks["swarm"] = node.swarm.listen_problem or "ok"
        checks["store"] = _writable(node.store.root)
        checks["keys"] = "ok" if node.seeder.identity is not None else "the network's keys"
        return checks


def _writable(path: os.PathLike[str]) -> str:
    """Whether new models can be written under ``path``: "ok", or why not."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return f"{path} is on a read-only filesystem"
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable by this user"
    return "ok"
