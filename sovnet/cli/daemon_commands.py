"""The commands that work with sovnetd and the network: status, fetch, peers, network.

``status``, ``fetch`` and ``peers`` talk to the running daemon through its
local API (client.py); when it is not running they say so and how to start
it. ``network`` manages this node's certificates on disk (networkfiles.py);
the daemon reads them when it starts.
"""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sovnet.cli.context import Context, json_option, parse_cid, pass_context, use_json
from sovnet.cli.output import emit_json, say, table, transfer_progress
from sovnet.core.sizes import human_size

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sovnet.api.messages import FetchEvent, FetchResult, Limits
    from sovnet.core.address import PeerAddress

# The API's messages are imported where a command uses them: ``sovnet --help`` and
# the commands that need none of them stay fast (their dataclasses cost ~15 ms).


def _restart_note(ctx: Context) -> None:
    if ctx.daemon() is not None:
        say("sovnetd is running: restart it to use this network.")


@click.command()
@json_option
@pass_context
def status(ctx: Context, as_json: bool) -> None:
    """Show the running daemon: network, ports, seeding, fetches, bans."""
    use_json(ctx, as_json)
    from sovnet.api.messages import to_json

    info = ctx.client().status()
    if as_json:
        emit_json(to_json(info))
        return
    click.echo(f"node:        {info.node} ({info.node_id})")
    click.echo(f"network:     {info.network} ({info.network_id})")
    click.echo(f"swarm port:  {info.swarm_port}   control port: {info.control_port}")
    if info.swarm_problem:
        click.echo(f"NOT READY:   {info.swarm_problem} (trying again)")
    if info.metrics:
        click.echo(f"metrics:     http://{info.metrics}/metrics (/healthz, /readyz)")
    waiting = ""
    if info.in_swarm is not None and info.in_swarm < info.seeding:
        waiting = f" ({info.in_swarm} in the swarm now, the others join when a peer asks)"
    click.echo(
        f"seeding:     {info.seeding} model(s){waiting}, {human_size(info.uploaded)} uploaded"
    )
    click.echo(f"peers:       {info.peers} known")
    for fetch in info.fetches:
        where = f"{human_size(fetch.done or 0)} of {human_size(fetch.total)}" if fetch.total else ""
        click.echo(f"fetching:    {fetch.cid} {fetch.state} {where}".rstrip())
    for done in info.recent_fetches[-5:]:  # the latest, oldest first
        named = done.name + (f"@{done.version}" if done.version else "")
        how = "already here" if done.already_here else f"{human_size(done.downloaded)} downloaded"
        click.echo(f"fetched:     {named} ({done.cid}), {how}, in {done.seconds:.1f} s")
    if info.hash_failures:
        click.echo(f"hash fails:  {info.hash_failures} piece(s) failed their hash check")
    for ban in info.banned_peers:
        click.echo(f"banned:      {ban.peer} ({ban.reason})")
    for cid, problem in info.damaged.items():
        click.echo(f"DAMAGED:     {cid}: {problem}")
    for alert in info.publisher_alerts:
        click.echo(f"ALERT:       {alert}")
    listeners = {
        "control": "the control plane",
        "swarm": "the swarm",
        "metrics": "the metrics listener",
    }
    for refused in info.rejected:
        listener = listeners.get(refused.plane, refused.plane)
        click.echo(
            f"rejected:    {refused.count} connection(s) to {listener}: {refused.reason}"
            f" (latest from {refused.last_from})"
        )


@click.command()
@click.argument("cid_text", metavar="CID_OR_NAME")
@click.option(
    "--peer",
    "peers",
    multiple=True,
    help="Also ask this peer (HOST:PORT of its control plane); repeatable.",
)
@json_option
@pass_context
def fetch(ctx: Context, cid_text: str, peers: tuple[str, ...], as_json: bool) -> None:
    """Fetch a model from trusted peers, verify it, and start seeding it.

    CID_OR_NAME is a CID, whose manifest a publisher this node trusts must have
    signed, or ORG/MODEL, ORG/MODEL:CHANNEL or ORG/MODEL@VERSION, a release of a
    publisher whose root this node pinned (`sovnet trust add root.json`), looked up in
    its metadata through the peers. With --json, prints one JSON object a line: the manifest,
    progress events, then the result.
    """
    from sovnet.core.address import PeerAddress

    use_json(ctx, as_json)
    cid = cid_text if "/" in cid_text else str(parse_cid(cid_text))
    addresses = [str(PeerAddress.parse(p)) for p in peers]
    try:
        _follow_fetch(ctx.client().fetch(cid, addresses), as_json)
    except KeyboardInterrupt:
        # The fetch is sovnetd's: it goes on without this terminal.
        say(
            f"Interrupted: sovnetd carries on fetching {cid}; run `sovnet fetch {cid}` "
            f"again to follow it, or `sovnet rm {cid}` to stop it."
        )
        raise SystemExit(130) from None


def _follow_fetch(events: Iterator[FetchEvent | FetchResult], as_json: bool) -> None:
    from sovnet.api.messages import (
        FetchProgress,
        FetchResult,
        FetchVerifying,
        ManifestAccepted,
        event_json,
        to_json,
    )

    if as_json:
        for event in events:
            line = event_json(event) if not isinstance(event, FetchResult) else to_json(event)
            if isinstance(event, FetchResult):
                line = {"event": "result", **line}
            click.echo(json.dumps(line, sort_keys=True))
        return
    result: FetchResult | None = None
    with transfer_progress(enabled=True) as bar:
        for event in events:
            if isinstance(event, ManifestAccepted):
                vouched = [f"signed by {s.trusted_as}" for s in event.signers]
                if event.released_as:
                    vouched.append(str(event.released_as))
                say(
                    f"{event.name} {event.version or ''}: {event.files} files, "
                    f"{human_size(event.size)}, {'; '.join(vouched)}"
                )
            elif isinstance(event, FetchProgress):
                bar.update(event.done, event.total, event.peers)
            elif isinstance(event, FetchVerifying):
                bar.verifying()
            elif isinstance(event, FetchResult):
                result = event
    assert result is not None  # the stream ends with the result, or raises
    click.echo(result.cid)
    if result.already_here and result.repaired:
        say(
            f"{result.name} was already here, verified; {result.repaired} file(s) of its "
            f"view were missing or replaced and are put back: {result.path}"
        )
    elif result.already_here:
        say(f"{result.name} was already here, verified: {result.path}")
    else:
        say(
            f"Fetched and verified {result.name}: {human_size(result.size)} "
            f"({human_size(result.downloaded)} downloaded); seeding it now."
        )
        say(f"  files: {result.path}")


# -- peers -------------------------------------------------------------------------


@click.group()
def peers() -> None:
    """The peers sovnetd asks for models (HOST:PORT of their control plane)."""


@peers.command("add")
@click.argument("address", metavar="HOST:PORT")
@json_option
@pass_context
def peers_add(ctx: Context, address: str, as_json: bool) -> None:
    """Add a peer; it is kept across restarts."""
    from sovnet.api.messages import to_json
    from sovnet.core.address import PeerAddress

    use_json(ctx, as_json)
    result = ctx.client().add_peer(str(PeerAddress.parse(address)))
    if as_json:
        emit_json(to_json(result))
        return
    say(f"Added peer {result.address}.")


@peers.command("ls")
@json_option
@pass_context
def peers_ls(ctx: Context, as_json: bool) -> None:
    """List known peers: configured, added, and learned from other peers."""
    from sovnet.api.messages import to_json

    use_json(ctx, as_json)
    known = ctx.client().peers()
    if as_json:
        emit_json([to_json(p) for p in known])
        return
    if not known:
        say("No peers yet. `sovnet peers add HOST:PORT` adds one.")
        return
    table(
        ["ADDRESS", "SOURCE", "NODE", "STATE"],
        [[p.address, p.source, p.name or "-", p.state or "-"] for p in known],
    )


@peers.command("rm")
@click.argument("address", metavar="HOST:PORT")
@json_option
@pass_context
def peers_rm(ctx: Context, address: str, as_json: bool) -> None:
    """Forget a peer."""
    from sovnet.api.messages import to_json
    from sovnet.core.address import PeerAddress

    use_json(ctx, as_json)
    result = ctx.client().remove_peer(str(PeerAddress.parse(address)))
    if as_json:
        emit_json(to_json(result))
        return
    say(f"Removed peer {result.removed}.")


# -- network ----------------------------------------------------------------------


def _node_name(name: str | None) -> str:
    if name:
        return name
    host = socket.gethostname().split(".")[0]
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in host)[:63] or "node"


def _membership_json(membership: Any, owner: bool) -> dict[str, Any]:
    return {
        "network": membership.network,
        "network_id": membership.network_id,
        "node": membership.node_name,
        "node_id": str(membership.node_id),
        "valid_until": membership.not_after.isoformat(),
        "owner": owner,
    }


@click.group()
def network() -> None:
    """This node's network of trusted peers (a CA and node certificates)."""


@network.command("create")
@click.argument("name")
@click.option("--node-name", help="This node's name in the network [host name].")
@click.option("--force", is_flag=True, help="Leave the current network for a new one.")
@json_option
@pass_context
def network_create(
    ctx: Context, name: str, node_name: str | None, force: bool, as_json: bool
) -> None:
    """Create a network: its CA stays on this node, which joins it at once."""
    from sovnet.store.networkfiles import NetworkFiles

    use_json(ctx, as_json)
    files = NetworkFiles(ctx.make_node())
    membership = files.create(name, _node_name(node_name), force=force)
    if as_json:
        emit_json(_membership_json(membership, True))
        return
    say(f"Created network {membership.network!r} (id {membership.network_id}).")
    say(f"This node is {membership.node_name!r} in it; the CA key is {files.ca_key}.")
    say("Invite another node: it runs `sovnet network request -o node.req`, you run")
    say("`sovnet network invite node.req -o node.invite`, it runs")
    say("`sovnet network join node.invite`.")
    _restart_note(ctx)


_force_output_option = click.option(
    "--force", is_flag=True, help="Replace an existing output file (never one of this node's)."
)


@network.command("request")
@click.option("--node-name", help="This node's name in the network [host name].")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File.")
@_force_output_option
@pass_context
def network_request(ctx: Context, node_name: str | None, output: Path | None, force: bool) -> None:
    """Ask to join a network: write a certificate request for this node's key.

    Send the request to the network's owner; the private key stays here.
    """
    from sovnet.store.networkfiles import NetworkFiles

    if output is not None:  # refused before the node is made or its key written
        ctx.check_output(output, force=force)
    request = NetworkFiles(ctx.make_node()).request(_node_name(node_name))
    if output is None:
        sys.stdout.write(request.decode("ascii"))
        return
    ctx.write_output(output, request, force=force)
    say(f"Wrote {output}. Send it to the network's owner, who runs `sovnet network invite`.")


@network.command("invite")
@click.argument("request_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--new-node", help="Make a key for a node NAME too (the invite then holds it).")
@click.option("--peer", "peers", multiple=True, help="A peer to start from (HOST:PORT).")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the invite.",
)
@_force_output_option
@pass_context
def network_invite(
    ctx: Context,
    request_file: str | None,
    new_node: str | None,
    peers: tuple[str, ...],
    output: Path,
    force: bool,
) -> None:
    """Admit a node: sign its request (or make its key with --new-node) into an invite."""
    from sovnet.core.address import PeerAddress
    from sovnet.store.inputfile import read_input
    from sovnet.store.networkfiles import MAX_REQUEST_BYTES, NetworkFiles

    files = NetworkFiles(ctx.state_dir)
    ctx.check_output(output, force=force)
    addresses = [PeerAddress.parse(p) for p in peers]
    where = None
    if not addresses:
        try:
            info = ctx.client().status() if ctx.daemon() is not None else None
        except Exception:  # the invite works without; peers are a convenience
            info = None
        if info is not None:
            address, where = inviter_address(info.control_host, info.control_port)
            addresses = [address]
    request = None
    if request_file:
        request = read_input(Path(request_file), MAX_REQUEST_BYTES, what="certificate request")
    invite = files.invite(request=request, new_node=new_node, peers=tuple(addresses))
    # Any invite is written 0600: one with a key in it is a secret, and a file it
    # replaces must not lend it wider permissions.
    ctx.write_output(output, invite.to_bytes(), force=force, mode=0o600)
    say(f"Wrote {output}: the new node runs `sovnet network join {output.name}`.")
    if where is not None:
        say(f"It names {addresses[0]} as this node's address: {where}.")
    if invite.key_pem is not None:
        say("It holds the new node's private key: hand it over privately, then delete it.")


def inviter_address(listen_host: str, port: int) -> tuple[PeerAddress, str]:
    """The address an invite names for this node's control plane, and why: one the
    control plane listens on. A daemon that does not say where it listens (``""``,
    an older sovnetd) is taken to listen on all addresses."""
    from sovnet.cli.run_commands import _is_loopback  # serve's test of the same
    from sovnet.core.address import PeerAddress

    if listen_host in ("", "0.0.0.0", "::"):
        return (
            PeerAddress(socket.gethostname(), port),
            f"this host's name, as sovnetd's control plane listens on all addresses "
            f"({listen_host or '0.0.0.0'}); --peer HOST:PORT names another",
        )
    if _is_loopback(listen_host):
        return (
            PeerAddress(listen_host, port),
            f"sovnetd's control plane listens on {listen_host} only, so only nodes on "
            "this machine reach it (SOVNET_CONTROL_LISTEN=0.0.0.0:PORT opens it)",
        )
    return (
        PeerAddress(listen_host, port),
        f"the address sovnetd's control plane listens on ({listen_host})",
    )


@network.command("join")
@click.argument("invite_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Leave the current network for this one.")
@json_option
@pass_context
def network_join(ctx: Context, invite_file: Path, force: bool, as_json: bool) -> None:
    """Join a network with the invite its owner wrote for this node."""
    from sovnet.core.network import MAX_INVITE_BYTES, Invite
    from sovnet.store.inputfile import read_input
    from sovnet.store.networkfiles import NetworkFiles
    from sovnet.store.peerfile import read_added, write_added

    use_json(ctx, as_json)
    invite = Invite.from_bytes(read_input(invite_file, MAX_INVITE_BYTES, what="invite"))
    files = NetworkFiles(ctx.make_node())
    membership = files.join(invite, force=force)
    daemon = ctx.daemon()
    if daemon is not None:  # peers.json is the running daemon's: it adds them
        for peer in invite.peers:
            daemon.add_peer(str(peer))
    elif invite.peers:
        path = ctx.state_dir / "peers.json"
        write_added(path, [*read_added(path), *invite.peers])
    if as_json:
        emit_json(_membership_json(membership, files.is_owner()))
        return
    say(
        f"Joined network {membership.network!r} (id {membership.network_id}) "
        f"as {membership.node_name!r}."
    )
    if invite.peers:
        say("Peers to start from: " + ", ".join(str(p) for p in invite.peers))
    _restart_note(ctx)


@network.command("show")
@json_option
@pass_context
def network_show(ctx: Context, as_json: bool) -> None:
    """Show this node's network and certificate."""
    from sovnet.store.networkfiles import NetworkFiles

    use_json(ctx, as_json)
    files = NetworkFiles(ctx.state_dir)
    membership = files.membership()
    if as_json:
        emit_json(_membership_json(membership, files.is_owner()))
        return
    click.echo(f"network:     {membership.network} (id {membership.network_id})")
    click.echo(f"node:        {membership.node_name} ({membership.node_id})")
    click.echo(f"valid until: {membership.not_after:%Y-%m-%d}")
    click.echo(f"owner:       {'yes (this node holds the CA key)' if files.is_owner() else 'no'}")


@click.group()
def mirror() -> None:
    """A mirror: the publishers sovnetd follows (`follow` in sovnetd.toml), fetching
    and seeding their releases unasked."""


@mirror.command("status")
@json_option
@pass_context
def mirror_status(ctx: Context, as_json: bool) -> None:
    """Each followed publisher: its releases metadata version, when it was last
    refreshed (STALE: the last refresh failed, and nothing new is fetched until one
    works), and its releases held, fetching and missing."""
    use_json(ctx, as_json)
    from sovnet.api.messages import to_json

    found = ctx.client().mirror_status()
    if as_json:
        emit_json(to_json(found))
        return
    if not found.followed:
        say('This node follows no publisher. In sovnetd.toml: follow = ["ORG"] (its root pinned).')
        return
    table(
        ["PUBLISHER", "RELEASES", "REFRESHED", "HELD", "FETCHING", "MISSING"],
        [
            [
                f.publisher
                + (f" ({', '.join(f.models)})" if f.models else "")
                + (f" :{',:'.join(f.channels)}" if f.channels else "")
                + (f" newest {f.versions}" if f.versions else ""),
                f"version {f.releases_version}" if f.releases_version else "-",
                (f.refreshed or "not yet") + (" STALE" if f.stale else ""),
                f"{f.held} of {f.wanted}",
                str(f.fetching),
                str(f.missing),
            ]
            for f in found.followed
        ],
    )
    for f in found.followed:
        if f.problem:
            say(f"{f.publisher}: {f.problem}")
        for failed in f.failed:
            say(f"{f.publisher}: fetch failed: {failed}")


_RATE_HELP = "bytes/s, or with a unit (2MiB); 0 = no limit"


@click.group(invoke_without_command=True)
@json_option
@pass_context
@click.pass_context
def limits(click_ctx: click.Context, ctx: Context, as_json: bool) -> None:
    """The swarm's rate limits on the running sovnetd: for peers on the local
    networks (loopback, local_networks) and for everyone else."""
    if click_ctx.invoked_subcommand is None:
        use_json(ctx, as_json)
        _show_limits(ctx.client().limits(), as_json)


@limits.command("set")
@click.option("--upload", help=f"To everyone else: {_RATE_HELP}.")
@click.option("--download", help=f"From everyone else: {_RATE_HELP}.")
@click.option("--local-upload", help=f"To peers on the local networks: {_RATE_HELP}.")
@click.option("--local-download", help=f"From peers on the local networks: {_RATE_HELP}.")
@json_option
@pass_context
def limits_set(
    ctx: Context,
    upload: str | None,
    download: str | None,
    local_upload: str | None,
    local_download: str | None,
    as_json: bool,
) -> None:
    """Change rate limits on the running sovnetd at once, without a restart; kept
    (over sovnetd.toml's) until changed again."""
    from sovnet.core.config import parse_size
    from sovnet.errors import InvalidInputError

    use_json(ctx, as_json)
    given = {
        "upload": upload,
        "download": download,
        "local_upload": local_upload,
        "local_download": local_download,
    }
    changes: dict[str, object] = {}
    for name, text in given.items():
        if text is None:
            continue
        try:
            changes[name] = parse_size(text)
        except ValueError as exc:
            raise InvalidInputError(f"--{name.replace('_', '-')} {text!r}: {exc}") from None
    if not changes:
        raise InvalidInputError(
            "nothing to change",
            hint="give --upload, --download, --local-upload or --local-download",
        )
    _show_limits(ctx.client().set_limits(changes), as_json)


def _show_limits(found: Limits, as_json: bool) -> None:
    from sovnet.api.messages import to_json

    if as_json:
        emit_json(to_json(found))
        return

    def rate(value: int) -> str:
        return f"{human_size(value)}/s" if value else "no limit"

    click.echo(f"everyone else:   up {rate(found.upload)}, down {rate(found.download)}")
    click.echo(
        f"local networks:  up {rate(found.local_upload)}, down {rate(found.local_download)}"
        f"  ({', '.join(found.local_networks)})"
    )
    if found.persisted:
        say("Set by `sovnet limits set` (kept over sovnetd.toml's).")


def register(cli: click.Group) -> None:
    for command in (status, fetch, peers, network, mirror, limits):
        cli.add_command(command)
