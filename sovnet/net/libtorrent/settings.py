"""sovnetd's libtorrent session: its settings, each with why.

One session per daemon, listening only on a TLS socket (``HOST:PORTs``): every
torrent is an SSL torrent of the node's network, so there is nothing to say to a
peer without a certificate. DHT, local peer discovery, UPnP, NAT-PMP and uTP are
off: peers come from the control plane, and uTP is about 40 times slower than TCP
on loopback here.
"""

from __future__ import annotations

import os

import libtorrent as lt

from sovnet.net.swarm import SwarmSettings

ALERTS = (
    lt.alert_category.error
    | lt.alert_category.status
    | lt.alert_category.storage
    | lt.alert_category.peer
    | lt.alert_category.ip_block
    | lt.alert_category.connect  # peer_connect_alert: bytes by peer class (peerbytes.py)
)


def session_settings(settings: SwarmSettings) -> lt.settings_pack:
    """sovnetd's libtorrent settings (the fetch benchmark's bare peers use them too)."""
    # Measured on loopback (design notes): these buffers take a 2 GiB v2 transfer
    # from 0.39 to 0.49 GB/s.
    return {
        "listen_interfaces": f"{settings.listen}s",
        # The swarm listens on the port it was given, or says it cannot: by default
        # libtorrent takes the next ten ports, then any, without a word, and a mirror's
        # firewall rule or port forward for its swarm_listen port would miss it.
        "max_retry_port_bind": 0,
        "listen_system_port_fallback": False,
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        # Several nodes of one machine (tests, the demo) or behind one NAT.
        "allow_multiple_connections_per_ip": True,
        "send_buffer_watermark": 8 * 1024 * 1024,
        "max_out_request_queue": 1500,
        # Ask each peer for about one second of what it delivers, not three: a
        # seeder behind a slow uplink then has fewer pieces in flight to every
        # downloader at once, so fewer go out twice. Fan-out benchmark, N = 8,
        # 400 Mbit/s: the seeder uploaded 2.07-2.22x the model instead of
        # 2.34-2.47x, makespan unchanged; a fast peer's queue stays at the cap.
        "request_queue_time": 1,
        "max_allowed_in_request_queue": 4000,
        # Blocks that passed their hash check but still wait in memory to be written
        # do not survive a crash: the smaller this queue, the less a restarted fetch
        # downloads again. 1 GiB fetch on loopback,
        # SIGKILL at half (scripts/bench/resume.py): 22-25% of the model downloaded
        # twice with 256 MiB here, 13% with 64 MiB, 3-8% with 16 MiB. Speed: A/B of
        # 1 GiB, 4 rounds, medians 4.39 s (256), 4.41 (64), 4.34 (16); two A/B runs
        # at 256 MiB disagreed (256: 0.93 and 1.39 s, 16: 1.48 and 1.42 s), which
        # is this VM's noise, not a trend.
        "max_queued_disk_bytes": 16 * 1024 * 1024,
        "hashing_threads": 2,
        # One disk thread a core: libtorrent's default of 10 spends a third of a
        # 2-core seeder in futex hand-offs (perf); measured here, a 256 MiB fetch
        # took 1.4-1.6 s with 2 threads against 1.8-2.2 s with 10.
        "aio_threads": max(2, os.cpu_count() or 2),
        # libtorrent connects to new peers on its tick: every 100 ms, not 500, starts
        # a fetch about 0.6 s sooner (measured: first byte 0.9 s -> 0.3 s after the
        # manifest arrived).
        "tick_interval": 100,
        # Peers come from the control plane and are few and known: retry a failed
        # one after seconds, not libtorrent's default minute.
        "min_reconnect_time": 2,
        # The global peer class: everyone not on a local network (peer_class_filter).
        "upload_rate_limit": settings.limits.upload,
        "download_rate_limit": settings.limits.download,
        # A mirror seeds hundreds of models: no queueing of torrents.
        "active_limit": 100_000,
        "active_seeds": 100_000,
        "active_downloads": 100_000,
        "user_agent": "sovnet",
        "alert_mask": ALERTS,
        "alert_queue_size": 10_000,
    }


def peer_class_filter(local_networks: tuple[str, ...]) -> lt.ip_filter:
    """Every peer in one class: the local class (its own limits) for the networks
    named local, the global class for everyone else. libtorrent's own default exempts
    the local network from limits, which would leave a LAN mirror unlimited."""
    import ipaddress

    classes = lt.ip_filter()
    everyone = 1 << lt.session.global_peer_class_id
    classes.add_rule("0.0.0.0", "255.255.255.255", everyone)
    classes.add_rule("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", everyone)
    for cidr in local_networks:
        network = ipaddress.ip_network(cidr, strict=False)
        classes.add_rule(
            str(network.network_address),
            str(network.broadcast_address),
            1 << lt.session.local_peer_class_id,
        )
    return classes
