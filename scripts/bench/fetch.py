"""Benchmark: fetch, one seeder to one client over loopback.

`sovnet fetch CID` of a single-file GGUF model from one sovnetd to another,
against curl and aria2c downloading the same file from nginx on 127.0.0.1.

What is compared:
- sovnet's whole command, from its start to a verified model in the client's store
  (the command returns only after every file is re-hashed against the signed
  manifest and committed); and, from its event stream, the time until the last
  byte had arrived ("transfer part");
- curl and aria2c downloads alone, and download + b3sum of the file: the nearest
  thing to "verified" a plain HTTP user can have. sovnet's check is BLAKE3 too,
  plus the piece layers, made from the leaf hashes libtorrent checked every block
  against, checked against the signed roots.

The seeding side (the seeder sovnetd, nginx) is pinned to one core and the client
side (the client sovnetd, `sovnet fetch`, curl, aria2c, b3sum) to the other, so
that no round has both ends fighting for one core. Between rounds the client
removes what it fetched (`sovnet rm`, downloaded files deleted), so every round
downloads everything again. Baseline: curl.

    .venv/bin/python scripts/bench/fetch.py [--quick] [--size-mib 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import libtorrent as lt
from common import (
    GIB,
    MIB,
    Cluster,
    Row,
    alternate,
    client_cpu,
    install_signal_handlers,
    log,
    make_gguf,
    median,
    pinning_note,
    rate_note,
    run_command,
    scratch,
    server_cpu,
    spawn,
    stop,
    timed,
    wait_for,
)
from common import free_port as pick_port

from sovnet.core import network, torrent
from sovnet.core.cid import CID
from sovnet.core.manifest import Manifest

NAME = "fetch"
BASELINE = "curl from nginx (download)"
CURL_VERIFIED = "curl from nginx (download + b3sum)"
B3SUM = "b3sum of the downloaded file"
SOVNET_TOTAL = "sovnet fetch (start to verified model in the store)"
SOVNET_VERIFY = "sovnet fetch (verify and commit part)"
SOVNET_TRANSFER = "sovnet fetch (transfer part, until the last byte arrived)"
LT_PLAIN = "libtorrent alone, plain TCP (add to last piece on disk)"
LT_SSL = "libtorrent alone, SSL torrent (add to last piece on disk)"
LT_PEER = Path(__file__).with_name("lt_peer.py")
NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    # What a static file server does by default: the kernel sends the file.
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    client_body_temp_path {work}/client_body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen {host}:{port};
        root {root};
    }}
}}
"""


def nginx_binary() -> str | None:
    # Debian puts nginx in /usr/sbin, which an ordinary user's PATH may lack.
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")


@contextlib.contextmanager
def nginx(root: Path, work: Path, cpu: int | None) -> Iterator[int]:
    """nginx serving ``root`` on a free 127.0.0.1 port (yielded), stopped at the end."""
    binary = nginx_binary()
    if binary is None:
        raise RuntimeError("nginx is not installed (scripts/bench/run.sh installs it)")
    work.mkdir(parents=True, exist_ok=True)
    # As root, nginx's workers would switch to "nobody", who cannot read our 0700
    # temp dirs: keep them as root (the directive is only allowed as root).
    user = "user root;\n" if os.geteuid() == 0 else ""
    for _ in range(5):  # another process may take the port before nginx binds it
        started = _start_nginx(binary, work, root, cpu, user)
        if started is not None:
            process, port = started
            break
    else:
        error = (work / "error.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"nginx did not start:\n{error}")
    try:
        yield port
    finally:
        stop(process)


def _start_nginx(
    binary: str, work: Path, root: Path, cpu: int | None, user: str
) -> tuple[subprocess.Popen[bytes], int] | None:
    port = pick_port()
    conf = work / "nginx.conf"
    conf.write_text(NGINX_CONF.format(user=user, work=work, host="127.0.0.1", port=port, root=root))
    process = spawn(
        [binary, "-p", work, "-c", conf, "-e", work / "error.log"],
        log_path=work / "nginx.out",
        cpu=cpu,
    )
    try:
        wait_for("nginx to listen", lambda: _listening(port) or process.poll() is not None, 10)
    except BaseException:
        stop(process)
        raise
    if process.poll() is None:
        return process, port
    stop(process)
    return None


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def bare_seeders(
    work: Path, seeder_state: Path, cid: str, model_dir: Path, cpu: int | None
) -> Iterator[dict[str, tuple[Path, int, list[str]]]]:
    """Two bare libtorrent seeders of the model (scripts/bench/lt_peer.py, sovnetd's
    settings): one for sovnet's own SSL torrent, one for the same torrent without
    its certificate, over plain TCP. Yields, by case, what a downloader needs: the
    torrent (without piece layers, as a sovnet client starts), the port and its
    certificate files."""
    ca_pem = (seeder_state / "network" / "ca.pem").read_bytes()
    ca = network.CertificateAuthority(
        key_pem=(seeder_state / "network" / "ca.key").read_bytes(), cert_pem=ca_pem
    )
    manifest = Manifest.from_bytes((seeder_state / "manifests" / cid).read_bytes())
    spec = torrent.derive(CID.parse(cid), manifest, ca_pem)
    layers = {
        f.pieces_root: (
            seeder_state / "layers" / f"{f.blake3.hex()}.{manifest.piece_size}"
        ).read_bytes()
        for f in manifest.files
        if f.size > manifest.piece_size
    }
    info = lt.bdecode(spec.info)
    del info[b"ssl-cert"]
    plain_info = lt.bencode(info)
    files = work / "bare"
    files.mkdir()
    now = datetime.datetime.now(datetime.UTC)
    dh = files / "dh.pem"
    dh.write_bytes(network.dh_params_pem())
    tls = {}
    for side in ("seed", "get"):
        key = network.new_key()
        cert = network.issue_node_certificate(ca, network.node_request(key, side), now)
        (files / f"{side}.key").write_bytes(key)
        (files / f"{side}.pem").write_bytes(cert)
        tls[side] = [str(files / f"{side}.pem"), str(files / f"{side}.key"), str(dh)]
    variants = {
        LT_SSL: (spec.info, tls),
        LT_PLAIN: (plain_info, {"seed": [], "get": []}),
    }
    processes = []
    found = {}
    try:
        for case, (info_bytes, certs) in variants.items():
            name = "ssl" if certs["seed"] else "plain"
            layer_dict = {b"piece layers": layers}
            for which, extra in (("seed", layer_dict), ("get", {})):
                body = lt.bencode({b"info": lt.bdecode(info_bytes), **extra})
                (files / f"{name}-{which}.torrent").write_bytes(body)
            port_file = files / f"{name}.port"
            argv = [sys.executable, LT_PEER, "seed", files / f"{name}-seed.torrent", model_dir]
            processes.append(
                spawn(
                    [*argv, port_file, *certs["seed"]],
                    log_path=files / f"{name}-seed.log",
                    cpu=cpu,
                )
            )
            wait_for(f"the bare {name} seeder", lambda f=port_file: f.exists(), 120)
            found[case] = (files / f"{name}-get.torrent", int(port_file.read_text()), certs["get"])
        yield found
    finally:
        for process in processes:
            stop(process)


def bare_download(
    torrent_file: Path, port: int, certs: list[str], into: Path, size: int, cpu: int | None
) -> float:
    """One bare libtorrent download of the model; its seconds (lt_peer's own clock)."""
    into.mkdir(exist_ok=True)
    argv = [sys.executable, LT_PEER, "get", torrent_file, into, f"127.0.0.1:{port}", *certs]
    result = json.loads(run_command(argv, cpu=cpu).stdout)
    if result["bytes"] < size:
        raise RuntimeError(f"a bare libtorrent download received {result['bytes']} bytes")
    shutil.rmtree(into)
    return float(result["seconds"])


def measure(size: int, rounds: int) -> list[Row]:
    client, server = client_cpu(), server_cpu()
    with scratch() as work, Cluster() as cluster:
        model_dir = work / "model"
        model = model_dir / "model.gguf"
        log(NAME, f"writing a {size / MIB:.0f} MiB GGUF ...")
        make_gguf(model, size)
        real_size = model.stat().st_size
        model_dir.chmod(0o755)
        work.chmod(0o755)

        seeder = cluster.node("seeder")
        fetcher = cluster.node("client")
        seeder.start(cpu=server)
        fetcher.start(cpu=client)
        # --copy keeps the served file independent of the store (hard-linking would
        # make it read-only, which is harmless here, but a copy mirrors a real seeder).
        cid = seeder.publish(model_dir, "bench/fetch", "--copy")
        fetcher.sovnet("peers", "add", seeder.control)
        drop_waits: list[float] = []
        downloads = work / "downloads"
        downloads.mkdir()
        target = downloads / "model.gguf"

        with (
            nginx(work, work / "nginx", server) as port,
            bare_seeders(work, seeder.state, cid, model_dir, server) as bare,
        ):
            url = f"http://127.0.0.1:{port}/model/model.gguf"
            has_b3sum = shutil.which("b3sum") is not None

            def verified(
                download: Callable[[], float], label: str, keep_hash: bool
            ) -> dict[str, float]:
                target.unlink(missing_ok=True)
                seconds = download()
                if target.stat().st_size != real_size:
                    raise RuntimeError(f"{label} wrote {target.stat().st_size} bytes")
                found = {f"{label} (download)": seconds}
                if has_b3sum:
                    hashed = timed(["b3sum", target], cpu=client)
                    found[f"{label} (download + b3sum)"] = seconds + hashed
                    if keep_hash:
                        found[B3SUM] = hashed
                target.unlink()
                return found

            def curl() -> float:
                return timed(["curl", "-sS", "--fail", "-o", target, url], cpu=client)

            def aria2c() -> float:
                # What an aria2 user types for a big file: several connections, and
                # falloc, so the file is not first filled with zeros.
                argv = ["aria2c", "-q", "-x", "4", "-s", "4", "--file-allocation=falloc"]
                argv += ["--allow-overwrite=true", "--auto-file-renaming=false"]
                argv += ["-d", str(downloads), "-o", target.name, url]
                return timed(argv, cpu=client)

            def sovnet() -> Mapping[str, float]:
                found = fetcher.fetch_timed(cid, cpu=client)
                fetcher.remove(cid)  # so that the next round downloads it all again
                # The seeder notices the closed TLS connection only ~3 s later; a new
                # connection from the same node before that is refused as a duplicate
                # peer-id and retried 2 s later: a cost of rounds run back to back
                # between the same two nodes, not of a fetch.
                waited = time.perf_counter()
                wait_for(
                    "the seeder to drop the last connection",
                    lambda: seeder.seeding_peers(cid) == 0,
                    30,
                    every=0.1,
                )
                # Counted from the end of `sovnet rm`, which follows the fetch.
                drop_waits.append(time.perf_counter() - waited)
                return {
                    SOVNET_TOTAL: found["total"],
                    SOVNET_TRANSFER: found["transfer"],
                    SOVNET_VERIFY: found["verify"],
                }

            def bare_case(case: str) -> Callable[[], float]:
                torrent_file, peer_port, certs = bare[case]
                into = work / "bare-download"
                return lambda: bare_download(
                    torrent_file, peer_port, certs, into, real_size, client
                )

            cases: dict[str, Callable[[], float | Mapping[str, float]]] = {
                "curl": lambda: verified(curl, "curl from nginx", keep_hash=True),
                "sovnet": sovnet,
                LT_SSL: bare_case(LT_SSL),
                LT_PLAIN: bare_case(LT_PLAIN),
            }
            missing = []
            if shutil.which("aria2c"):
                cases["aria2c"] = lambda: verified(aria2c, "aria2c -x4 from nginx", False)
            else:
                missing.append("aria2c")
            if not has_b3sum:
                missing.append("b3sum")
            log(NAME, f"{real_size / MIB:.0f} MiB, {rounds} rounds, {pinning_note()}")
            samples = alternate(NAME, cases, rounds)
        uploaded = seeder.status()["uploaded"]

    fetches = rounds + 1  # the warm-up round fetched too
    verified_base = CURL_VERIFIED if has_b3sum else BASELINE
    plan = [
        (BASELINE, BASELINE),
        (CURL_VERIFIED, BASELINE),
        ("aria2c -x4 from nginx (download)", BASELINE),
        ("aria2c -x4 from nginx (download + b3sum)", verified_base),
        # The like-for-like comparison: each ends with a checked file.
        (SOVNET_TOTAL, verified_base),
        (LT_PLAIN, BASELINE),
        (LT_SSL, LT_PLAIN),
        # How far sovnet's transfer is from libtorrent's own over the same SSL torrent.
        (SOVNET_TRANSFER, LT_SSL),
        (B3SUM, B3SUM),
        (SOVNET_VERIFY, B3SUM if has_b3sum else SOVNET_VERIFY),
    ]
    rows = []
    for case, baseline in plan:
        if case in samples:
            row = Row(NAME, case, baseline, samples[case], "s")
            row.note = rate_note(real_size, row.median)
            rows.append(row)
    for row in rows:
        if row.case == BASELINE:
            row.note += f"; {real_size / MIB:.0f} MiB GGUF over 127.0.0.1, {pinning_note()}"
            if missing:
                row.note += f"; not installed: {', '.join(missing)}"
        elif row.case == SOVNET_TOTAL:
            row.note += (
                f"; the seeder uploaded {uploaded / real_size / fetches:.2f}x per fetch"
                f"; after each round it took {median(drop_waits):.1f} s (median) to drop the"
                " connection, waited for before the next round"
            )
        elif row.case == SOVNET_VERIFY:
            row.note += "; BLAKE3 re-hash, layers from libtorrent's leaves, fsync, commit"
        elif row.case == LT_PLAIN:
            row.note += (
                "; two bare libtorrent processes (scripts/bench/lt_peer.py) with sovnetd's"
                " settings, pinned as sovnet's; the same torrent without its certificate"
            )
        elif row.case == LT_SSL:
            row.note += "; sovnet's own torrent and network certificates, no sovnet code"
        elif row.case == B3SUM:
            row.note += "; on the client's core, file just written (cached)"
    return rows


def sizes(quick: bool) -> tuple[int, int]:
    return (256 * MIB, 3) if quick else (GIB, 5)


def run(quick: bool) -> list[Row]:
    size, rounds = sizes(quick)
    return measure(size, rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB, 3 rounds")
    parser.add_argument("--size-mib", type=int, help="model size [1024, quick 256]")
    parser.add_argument("--rounds", type=int, help="rounds [5, quick 3]")
    args = parser.parse_args()
    install_signal_handlers()
    size, rounds = sizes(args.quick)
    started = time.monotonic()
    rows = measure(args.size_mib * MIB if args.size_mib else size, args.rounds or rounds)
    from suite import render_text

    print(render_text(rows))
    print(f"took {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
