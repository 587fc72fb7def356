"""Benchmark: a fetch from a node whose peer list a hostile member tried to fill
with dead addresses, against the same fetch from a node it left alone.

Issue #12, defect 7: any member could announce itself with whatever control port
it liked, and the node it announced to kept the address, listed it to others and
asked it in every fetch, waiting ``peer_timeout`` for it. Here a member of the
network (its certificate, no daemon) announces 200 addresses of 127.0.0.1 (by
default) to one of two client nodes. Each address is a listening socket that
never accepts: a connection to it opens and nothing ever answers, the slowest
kind of dead peer (a host behind a firewall that drops). Then both clients fetch
the same model from one seeder, alternating, the model removed after each round;
the ratio is the polluted client's median over the clean one's.

    .venv/bin/python scripts/bench/dead_peers.py [--quick] [--dead 200] [--size-mib 64]

Real sovnetd processes on 127.0.0.1 (common.Cluster); the member's announces go
through sovnet's own control-plane client. Not a test: nothing passes or fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping

from common import (
    MIB,
    Cluster,
    Node,
    Row,
    alternate,
    client_cpu,
    install_signal_handlers,
    log,
    make_gguf,
    pinning_note,
    scratch,
    server_cpu,
    wait_for,
)

NAME = "peers"
CLEAN = "sovnet fetch, no dead peers announced"
POLLUTED = "sovnet fetch, {dead} dead addresses announced by a member"
LISTED = "in the polluted client's peer list"


def sizes(quick: bool) -> tuple[int, int]:
    """Model size and rounds: small, so that the time spent asking peers shows."""
    return (16 * MIB, 3) if quick else (64 * MIB, 5)


@contextlib.contextmanager
def dead_ports(count: int) -> Iterator[list[int]]:
    """``count`` ports of 127.0.0.1 that take connections into their backlog and
    never accept them: whoever connects waits for an answer that never comes."""
    sockets = []
    try:
        for _ in range(count):
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.bind(("127.0.0.1", 0))
            listener.listen(1024)
            sockets.append(listener)
        yield [int(s.getsockname()[1]) for s in sockets]
    finally:
        for listener in sockets:
            listener.close()


def announce_junk(member: Node, target: str, cid: str, ports: list[int]) -> int:
    """As a hostile member: announce ``cid`` to ``target`` once for each of ``ports``,
    each time claiming that port as its control port. How many were accepted (the
    target answers 404 when it does not hold the CID, after it heard the claim)."""
    from sovnet.core.address import PeerAddress
    from sovnet.core.cid import CID
    from sovnet.net.control import PeerRequestError
    from sovnet.net.control_client import PeerClient
    from sovnet.store.networkfiles import NetworkFiles

    async def announce() -> int:
        heard = 0
        tls = NetworkFiles(member.state).tls_files()
        async with PeerClient(tls, timeout=10) as client:
            for port in ports:
                with contextlib.suppress(PeerRequestError):
                    await client.announce(
                        PeerAddress.parse(target), CID.parse(cid), swarm_port=1, control_port=port
                    )
                    heard += 1
        return heard

    return asyncio.run(announce())


def measure(size: int, rounds: int, dead: int) -> tuple[list[Row], dict[str, int]]:
    client, server = client_cpu(), server_cpu()
    polluted_case = POLLUTED.format(dead=dead)
    with scratch() as work, Cluster() as cluster, dead_ports(dead) as ports:
        model_dir = work / "model"
        log(NAME, f"writing a {size / MIB:.0f} MiB GGUF ...")
        make_gguf(model_dir / "model.gguf", size)
        seeder = cluster.node("seeder")
        clean, polluted = cluster.node("clean"), cluster.node("polluted")
        member = cluster.node("mallory")  # a certificate of the network; no daemon
        seeder.start(cpu=server)
        clean.start(cpu=client)
        polluted.start(cpu=client)
        cid = seeder.publish(model_dir, "bench/peers", "--copy")
        for node in (clean, polluted):
            node.sovnet("peers", "add", seeder.control)
        log(NAME, f"announcing {dead} dead addresses to the polluted client ...")
        announce_junk(member, polluted.control, cid, ports)
        known = {"announced": dead}

        def fetch(node: Node) -> float:
            seconds = node.fetch_timed(cid, cpu=client)["total"]
            node.remove(cid)
            # The seeder drops the closed connection only after a while; the next
            # round's fetch (from either client) must not wait for that.
            wait_for("the seeder to drop the connection", lambda: seeder.seeding_peers(cid) == 0)
            return seconds

        cases: Mapping[str, Callable[[], float]] = {
            CLEAN: lambda: fetch(clean),
            polluted_case: lambda: fetch(polluted),
        }
        samples = alternate(NAME, cases, rounds)
        listed = polluted.json("peers", "ls")
        known[LISTED] = sum(
            1 for p in listed if int(str(p["address"]).rsplit(":", 1)[1]) in set(ports)
        )
        seeder_lists = seeder.json("peers", "ls")
        known["in the seeder's peer list"] = sum(
            1 for p in seeder_lists if int(str(p["address"]).rsplit(":", 1)[1]) in set(ports)
        )
    note = f"{size / MIB:.0f} MiB model over 127.0.0.1, {pinning_note()}"
    rows = [
        Row(NAME, CLEAN, CLEAN, samples[CLEAN], "s", note),
        Row(
            NAME,
            polluted_case,
            CLEAN,
            samples[polluted_case],
            "s",
            f"{known[LISTED]} of them in its peer list afterwards",
        ),
    ]
    return rows, known


def run(quick: bool) -> list[Row]:
    size, rounds = sizes(quick)
    rows, _ = measure(size, rounds, 200)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 MiB, 3 rounds")
    parser.add_argument("--size-mib", type=int, help="model size [64, quick 16]")
    parser.add_argument("--rounds", type=int, help="rounds [5, quick 3]")
    parser.add_argument("--dead", type=int, default=200, help="dead addresses announced [200]")
    args = parser.parse_args()
    install_signal_handlers()
    size, rounds = sizes(args.quick)
    started = time.monotonic()
    rows, known = measure(
        args.size_mib * MIB if args.size_mib else size, args.rounds or rounds, args.dead
    )
    clean, polluted = rows
    for row in rows:
        low, high = min(row.samples), max(row.samples)
        print(f"{row.case:60s} median {row.median:7.2f} s  ({low:.2f}-{high:.2f}, n={row.n})")
    print(f"ratio (polluted / clean): {polluted.median / clean.median:.2f}")
    for label, count in known.items():
        print(f"dead addresses {label}: {count}")
    print(f"took {time.monotonic() - started:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
