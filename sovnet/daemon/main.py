"""``sovnetd``: the node daemon's entry point.

Reads flags, environment and the config file (config.py) once, then runs a
:class:`~sovnet.daemon.node.Node` until SIGTERM or SIGINT. Under systemd
(``Type=notify``) it reports READY=1 once the local API, the swarm and the
control plane all listen, STATUS= lines while it runs, and STOPPING=1 when it
shuts down. Logs go to stderr, which journald collects.

On SIGTERM, fetches stop where they are (their resume data saved), the swarm
is closed, and nothing half-written is left where it could be taken for
verified data: downloads live in ``partial/`` until they are verified and
committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sovnet.errors import LocalStateError, SovnetError, unexpected

if TYPE_CHECKING:  # imported where the daemon starts: `sovnetd --help` stays light
    from sovnet.daemon.node import Node

log = logging.getLogger("sovnet.daemon.main")


def notify(message: str) -> None:
    """Tell systemd (sd_notify protocol); nothing to do when not under systemd."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    address = "\0" + target[1:] if target.startswith("@") else target
    with (
        contextlib.suppress(OSError),
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
    ):
        sock.sendto(message.encode(), address)


async def serve(config_overrides: dict[str, object], config_path: str | None) -> None:
    from sovnet.api.server import ApiServer, claim_socket
    from sovnet.daemon.logs import configure as configure_logs
    from sovnet.daemon.logs import stderr_is_journal
    from sovnet.daemon.metrics import OperatorEndpoints
    from sovnet.daemon.node import Node, swarm_settings
    from sovnet.daemon.supervisor import Supervisor
    from sovnet.errors import InternalError
    from sovnet.net.libtorrent.swarm import LibtorrentSwarm
    from sovnet.net.rejections import Rejections
    from sovnet.store.configfile import read_config
    from sovnet.store.nodedir import require_node

    config = read_config(dict(os.environ), Path.home(), config_path, config_overrides)
    configure_logs(config.log_format, journal=stderr_is_journal(os.environ))
    logging.getLogger().setLevel(config.log_level.upper())
    # python-tuf logs each signature it did not need ("No signature for keyid ...") at
    # INFO: sovnet says what a refresh decided, at its own levels.
    for noisy in ("tuf", "securesystemslib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # A mistyped --state-dir is refused before anything is made there. sovnetd never
    # makes a node: it needs the network files that only `sovnet network create` or
    # `join` write, and those make the node.
    require_node(config.state_dir)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    claim_socket(config.socket)  # before anything else: one daemon per state
    supervisor = Supervisor()
    rejections = Rejections(config.rejection_log_interval)
    # First, so that /readyz says "starting" while the store and its models open.
    endpoints = OperatorEndpoints(config.metrics_listen, rejections)
    await endpoints.start()
    swarm = LibtorrentSwarm(swarm_settings(config), rejections)
    try:
        node = await Node.start(config, swarm, supervisor, rejections=rejections)
    except BaseException:
        await endpoints.close()
        raise
    node.metrics_address = endpoints.address
    endpoints.node = node
    api = ApiServer(node, config.socket)
    try:
        await api.start()
        notify("READY=1\nSTATUS=" + _summary(node))
        log.info("ready; API on %s", config.socket)
        supervisor.spawn(_report(node), "status")
        stopping = asyncio.create_task(stop.wait())
        failing = asyncio.create_task(supervisor.failed.wait())
        await asyncio.wait({stopping, failing}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        failing.cancel()
        notify("STOPPING=1")
        log.info("stopping")
    finally:
        node.stopping = True
        await api.close()
        await node.close()
        await endpoints.close()
        log.info("stopped")
    if supervisor.failure is not None:
        raise InternalError(supervisor.failure, hint="see the traceback above in sovnetd's log")


def _summary(node: Node) -> str:
    status = node.status()
    return (
        f"seeding {status.seeding} model(s), {len(status.fetches)} fetch(es), "
        f"{status.peers} peer(s)"
    )


async def _report(node: Node) -> None:
    while True:
        await asyncio.sleep(10)
        notify("STATUS=" + _summary(node))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", help="Config file [default: see README].")
@click.option("--state-dir", help="Where the store, keys and network files are.")
@click.option("--socket", "socket_path", help="The local API's Unix socket.")
@click.option("--swarm-listen", help="HOST:PORT for BitTorrent over TLS [0.0.0.0:6881].")
@click.option("--control-listen", help="HOST:PORT for HTTPS between peers [0.0.0.0:6880].")
@click.option(
    "--metrics-listen",
    help="HOST:PORT for /metrics, /healthz and /readyz, or off [127.0.0.1:9680].",
)
@click.option("--peer", "peers", multiple=True, help="A peer's HOST:PORT (repeatable).")
@click.option("--log-level", help="debug, info, warning or error [info].")
@click.option("--log-format", help="text, or json: one object a line [text].")
@click.version_option(package_name="sovnet")
def cli(
    config_path: str | None,
    state_dir: str | None,
    socket_path: str | None,
    swarm_listen: str | None,
    control_listen: str | None,
    metrics_listen: str | None,
    peers: tuple[str, ...],
    log_level: str | None,
    log_format: str | None,
) -> None:
    """sovnetd: seed the models in this node's store, fetch from trusted peers,
    and serve the local API that the `sovnet` command uses."""
    overrides: dict[str, object] = {
        "state_dir": state_dir,
        "socket": socket_path,
        "swarm_listen": swarm_listen,
        "control_listen": control_listen,
        "metrics_listen": metrics_listen,
        "peers": list(peers) if peers else None,
        "log_level": log_level,
        "log_format": log_format,
    }
    # Everything the daemon creates is private to its user unless made otherwise.
    os.umask(0o077)
    from sovnet.daemon.logs import configure as configure_logs
    from sovnet.daemon.logs import stderr_is_journal

    # Until the config is read (a bad setting is said in the format asked for, if the
    # flag or the environment asked for one); serve() applies the config's.
    early = log_format or os.environ.get("SOVNET_LOG_FORMAT", "")
    configure_logs(
        "json" if early.lower() == "json" else "text", journal=stderr_is_journal(os.environ)
    )
    logging.getLogger().setLevel(logging.INFO)
    try:
        try:
            asyncio.run(serve(overrides, config_path))
        except OSError as exc:  # a full disk is said as such; anything else is a bug
            error = unexpected(exc)
            if not isinstance(error, LocalStateError):
                raise
            raise error from exc
    except SovnetError as exc:
        log.error("%s", exc.message)
        if exc.hint:
            log.error("hint: %s", exc.hint)
        notify(f"STATUS=failed: {exc.message}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def main() -> None:
    cli()
