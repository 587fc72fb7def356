"""The commands for the models in this node's store: publish, ls, show, verify, rm.

They work on the store directly, or through sovnetd when it runs (publish and rm,
so that a new model is seeded at once and a removed one no longer).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sovnet.cli.context import Context, json_option, parse_cid, pass_context, use_json
from sovnet.cli.output import ProgressSink, byte_progress, emit_json, say, table
from sovnet.core.sizes import human_size
from sovnet.errors import InvalidInputError, SovnetError

if TYPE_CHECKING:
    from sovnet.api.messages import GcResult, PublishResult
    from sovnet.core.cid import CID
    from sovnet.store.scan import ScanOptions
    from sovnet.trust.gate import OpenedManifest, SignerReport

_use_json = use_json
_parse_cid = parse_cid


def _signer_label(signer: SignerReport, *, released: bool = False) -> str:
    if not signer.valid:
        return f"{signer.key_id} (INVALID signature)"
    if signer.trusted_as is None:
        # A release of a pinned root is trusted whoever signed its manifest.
        why = "not a trusted key: the release vouches" if released else "not trusted"
        return f"{signer.key_id} ({why})"
    return f"{signer.key_id} ({signer.trusted_as})"


def _signers_json(opened: OpenedManifest) -> list[dict[str, object]]:
    return [
        {
            "key_id": str(s.key_id),
            "public_key": str(s.public_key),
            "valid": s.valid,
            "trusted_as": s.trusted_as,
        }
        for s in opened.signers
    ]


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="ORG/MODEL, e.g. acme/llama-7b.")
@click.option("--version", "model_version", help="The model's version, e.g. 1.0.")
@click.option("--license", "license_text", help="Its licence, e.g. apache-2.0.")
@click.option(
    "--copy", is_flag=True, help="Copy files into the store even where a hard link would do."
)
@click.option(
    "--include",
    "include",
    multiple=True,
    metavar="GLOB",
    help="Publish only files matching GLOB (repeatable; as `hf upload`: fnmatch on the "
    "relative path, * also matches /).",
)
@click.option(
    "--exclude",
    "exclude",
    multiple=True,
    metavar="GLOB",
    help="Leave out files matching GLOB, unread (repeatable), e.g. --exclude '*.bin'.",
)
@click.option(
    "--follow-links-within",
    "follow_links_within",
    multiple=True,
    metavar="DIR",
    type=click.Path(path_type=Path),
    help="Follow symbolic links that lead to regular files inside DIR (repeatable). "
    "Links in a Hugging Face cache snapshot are followed within its repository anyway.",
)
@json_option
@pass_context
def publish(
    ctx: Context,
    path: Path,
    name: str,
    model_version: str | None,
    license_text: str | None,
    copy: bool,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    follow_links_within: tuple[Path, ...],
    as_json: bool,
) -> None:
    """Publish a model directory or file: validate, hash, sign, store. Prints the CID.

    Files on the store's filesystem are hard-linked into the store, not copied, and
    made read-only: replace them rather than edit them in place afterwards. A
    Hugging Face cache snapshot (hub/models--ORG--NAME/snapshots/REV) publishes
    as it is: its links are followed within its repository, its file names kept.
    """
    _use_json(ctx, as_json)
    from sovnet.api.messages import PublishHashed, PublishRequest, PublishScanned, to_json
    from sovnet.store.scan import ScanOptions

    # Absolute, but not resolved: a file named in a snapshot keeps its own name,
    # not its blob's (and the daemon's working directory is not ours).
    path = Path(os.path.abspath(path))
    within = tuple(Path(os.path.abspath(d)) for d in follow_links_within)
    options = ScanOptions(include, exclude, within)
    daemon = ctx.daemon()
    with byte_progress("hashing", enabled=not as_json) as bar:
        if daemon is not None:
            # The daemon publishes and starts seeding at once.
            request = PublishRequest(
                str(path),
                name,
                model_version,
                license_text,
                copy,
                include=include,
                exclude=exclude,
                follow_links_within=tuple(map(str, within)),
            )
            hashed = 0
            for event in daemon.publish(request):
                if isinstance(event, PublishScanned):
                    bar.start(event.total)
                elif isinstance(event, PublishHashed):
                    bar.advance(event.bytes - hashed)
                    hashed = event.bytes
                else:
                    summary = event
        else:
            summary = _publish_locally(
                ctx, path, name, model_version, license_text, copy, options, bar
            )
    if as_json:
        emit_json({**to_json(summary), "seeding": daemon is not None})
        return
    click.echo(summary.cid)
    label = f"{summary.name} {summary.version or ''}".rstrip()
    say(f"Published {label}: {summary.files} files, {human_size(summary.size)}")
    say(f"  signed by {summary.signer}")
    if summary.linked:
        say(f"  {summary.linked} file(s) hard-linked into the store and made read-only (no copy)")
    if summary.copied:
        say(f"  {summary.copied} file(s) copied into the store")
    if daemon is not None:
        say("  sovnetd is seeding it to the network.")


def _publish_locally(
    ctx: Context,
    path: Path,
    name: str,
    model_version: str | None,
    license_text: str | None,
    copy: bool,
    options: ScanOptions,
    bar: ProgressSink,
) -> PublishResult:
    from sovnet.api.messages import PublishResult
    from sovnet.store.publish import publish as do_publish

    result = do_publish(
        ctx.store().init(),
        ctx.node_files().load_key(),
        path,
        name=name,
        version=model_version,
        license=license_text,
        copy=copy,
        options=options,
        on_scanned=bar.start,
        progress=bar.advance,
    )
    return PublishResult(**result.summary())  # type: ignore[arg-type]


@click.command("ls")
@click.option(
    "--remote",
    is_flag=True,
    help="List what the pinned publisher roots released (refreshed through the peers, "
    "with sovnetd running) and which peers hold it.",
)
@json_option
@pass_context
def ls(ctx: Context, remote: bool, as_json: bool) -> None:
    """List the models in this node's store."""
    _use_json(ctx, as_json)
    if remote:
        _ls_remote(ctx, as_json)
        return
    from sovnet.store.retention import Retention

    store = ctx.store()
    trust_store = ctx.node_files().load_trust()
    pinned = Retention(store).pinned()
    rows: list[dict[str, object]] = []
    for cid in store.cids():
        try:
            opened = store.open(cid, trust_store, require_trusted=False)
        except SovnetError as exc:
            rows.append({"cid": str(cid), "error": exc.message})
            continue
        m = opened.manifest
        rows.append(
            {
                "cid": str(cid),
                "name": m.name,
                "version": m.version,
                "size": m.total_size,
                "files": len(m.files),
                "trusted": opened.trusted,
                "signers": _signers_json(opened),
                "released_as": opened.released_as,
                "pinned": cid in pinned,
            }
        )
    if as_json:
        emit_json(rows)
        return
    if not rows:
        say(f"The store is empty (state dir {store.root}). `sovnet publish` adds a model.")
        return
    cells = []
    for row in rows:
        if "error" in row:
            cells.append(["(damaged)", "", str(row["cid"]), "", "", str(row["error"])])
            continue
        signers = row["signers"]
        assert isinstance(signers, list)
        labels = [
            (
                s["trusted_as"]
                if s["valid"] and s["trusted_as"]
                else f"{str(s['key_id'])[:9]}… (untrusted)"
            )
            for s in signers
            # A pinned root vouches for a release, whoever signed: the other
            # signers would only read as a doubt.
            if not row["released_as"] or (s["valid"] and s["trusted_as"])
        ]
        if row["released_as"]:
            labels.insert(0, str(row["released_as"]))
        size = row["size"]
        assert isinstance(size, int)
        cells.append(
            [
                str(row["name"]),
                str(row["version"] or "-") + (" (pinned)" if row["pinned"] else ""),
                str(row["cid"]),
                human_size(size),
                str(row["files"]),
                ", ".join(str(label) for label in labels) or "(unsigned)",
            ]
        )
    table(["NAME", "VERSION", "CID", "SIZE", "FILES", "SIGNERS"], cells)


def _facts_summary(facts: object) -> str:
    from sovnet.formats.gguf import GGUFFacts
    from sovnet.formats.safetensors import SafetensorsFacts

    if isinstance(facts, GGUFFacts):
        parts = [
            facts.architecture or "?",
            f"file_type {facts.file_type}",
            f"{facts.tensor_count} tensors",
        ]
        if facts.split_no is not None and facts.split_count is not None:
            parts.append(f"split {facts.split_no + 1}/{facts.split_count}")
        return ", ".join(parts)
    if isinstance(facts, SafetensorsFacts):
        return f"{facts.tensor_count} tensors, {'/'.join(facts.dtypes) or 'no dtypes'}"
    return ""


def _ls_remote(ctx: Context, as_json: bool) -> None:
    from sovnet.api.messages import to_json
    from sovnet.errors import DaemonError

    daemon = ctx.daemon()
    if daemon is None:
        raise DaemonError(
            "`sovnet ls --remote` asks the peers through sovnetd, which is not running",
            hint="start it: `sovnetd &` (or `systemctl --user start sovnetd`)",
        )
    listed = daemon.releases()
    if as_json:
        emit_json(to_json(listed))
        return
    for problem in listed.problems:
        say(f"warning: {problem}")
    if not listed.releases:
        say("No releases. `sovnet trust add root.json` pins a publisher's root.")
        return
    table(
        ["NAME", "VERSION", "CHANNELS", "HERE", "HELD BY", "ADVISORY", "CID"],
        [
            [r.name, r.version, ",".join(r.channels), "yes" if r.here else "",
             ",".join(r.holders) or "-", r.advisory or "", r.cid]
            for r in listed.releases
        ],
    )  # fmt: skip
    for r in listed.releases:
        if r.advisory_text:
            say(f"advisory: {r.advisory_text}")


def _model_cid(ctx: Context, text: str) -> CID:
    """MODEL: a CID; ORG/MODEL[@VERSION] among the trusted models here; or ORG/MODEL,
    :CHANNEL or @VERSION as the root pinned for ORG released it."""
    if "/" not in text:
        return _parse_cid(text)
    from sovnet.run.admission import open_model

    return open_model(ctx.store(), ctx.node_files().load_trust(), text).cid


@click.command()
@click.argument("cid_text", metavar="MODEL")
@click.option("--raw", is_flag=True, help="Write the exact canonical manifest bytes to stdout.")
@json_option
@pass_context
def show(ctx: Context, cid_text: str, raw: bool, as_json: bool) -> None:
    """Show a stored model's manifest and signers.

    MODEL is a CID, ORG/MODEL[@VERSION] among the trusted models here, or ORG/MODEL,
    ORG/MODEL:CHANNEL, ORG/MODEL@VERSION as a pinned publisher root released it.
    """
    _use_json(ctx, as_json)
    if raw and as_json:
        raise InvalidInputError("--raw and --json do not go together")
    cid = _model_cid(ctx, cid_text)
    store = ctx.store()
    if raw:
        data = store.manifest_bytes(cid)
        if not cid.matches(data):
            from sovnet.errors import IntegrityError

            raise IntegrityError(f"the stored manifest of {cid} does not match its CID")
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    opened = store.open(cid, ctx.node_files().load_trust(), require_trusted=False)
    m = opened.manifest
    from sovnet.run.admission import advisories_of

    advised = [a.describe() for a in advisories_of(store, opened)]
    if as_json:
        emit_json(
            {
                "cid": str(cid),
                "manifest": m.to_json(),
                "trusted": opened.trusted,
                "released_as": opened.released_as,
                "advisories": advised,
                "signers": _signers_json(opened),
            }
        )
        return
    click.echo(f"name:       {m.name}")
    click.echo(f"version:    {m.version or '-'}")
    click.echo(f"license:    {m.license or '-'}")
    click.echo(f"cid:        {cid}")
    click.echo(f"size:       {human_size(m.total_size)} in {len(m.files)} files")
    click.echo(f"piece size: {human_size(m.piece_size)}")
    click.echo(f"trusted:    {'yes' if opened.trusted else 'NO'}")
    if opened.released_as:
        click.echo(f"release:    {opened.released_as}")
    for advisory in advised:  # run, serve and export act on them; show says them
        click.echo(f"ADVISORY:   {advisory}")
    for signer in opened.signers:
        click.echo(f"signed by:  {_signer_label(signer, released=bool(opened.released_as))}")
    click.echo("")
    table(
        ["PATH", "SIZE", "FORMAT", "BLAKE3", "FACTS"],
        [
            [
                f.path,
                human_size(f.size),
                f.format.value,
                f.blake3.hex()[:16] + "…",
                _facts_summary(f.facts),
            ]
            for f in m.files
        ],
    )


@click.command()
@click.argument("cid_text", metavar="MODEL", required=False)
@click.option("--all", "every", is_flag=True, help="Every model in the store, one line each.")
@json_option
@pass_context
def verify(ctx: Context, cid_text: str | None, every: bool, as_json: bool) -> None:
    """Re-hash every file of a stored model and check its signatures.

    Exits 0 only if every file matches and a trusted key signed (or a pinned
    publisher root released it). MODEL is a CID or a name, as for `sovnet show`.
    With --all, every model in the store: exit 5 if any differs, 6 if any is not
    trusted.
    """
    from sovnet.errors import IntegrityError, TrustError
    from sovnet.store.verify import verify as do_verify
    from sovnet.trust.gate import UNTRUSTED_HINT, untrusted_reason

    _use_json(ctx, as_json)
    if every == (cid_text is not None):
        raise InvalidInputError("give a MODEL or --all", hint="`sovnet verify --all`")
    if every:
        _verify_all(ctx, as_json)
        return
    assert cid_text is not None
    cid = _model_cid(ctx, cid_text)
    store = ctx.store()
    trust_store = ctx.node_files().load_trust()
    with byte_progress("verifying", enabled=not as_json) as bar:
        opened_size = store.open(cid, trust_store, require_trusted=False).manifest.total_size
        bar.start(opened_size)
        report = do_verify(store, cid, trust_store, progress=bar.advance)
    m = report.opened.manifest
    if as_json:
        emit_json(
            {
                "cid": str(cid),
                "ok": report.ok,
                "intact": report.intact,
                "trusted": report.opened.trusted,
                "released_as": report.opened.released_as,
                "files": [{"path": f.path, "ok": f.ok, "problem": f.problem} for f in report.files],
                "signers": _signers_json(report.opened),
            }
        )
    else:
        for check in report.files:
            click.echo(
                f"{'ok  ' if check.ok else 'FAIL'}  {check.path}"
                + (f": {check.problem}" if check.problem else "")
            )
        released = report.opened.released_as
        if released:
            click.echo(f"ok    {released}")
        from sovnet.run.admission import advisories_of

        for advisory in advisories_of(ctx.store(), report.opened):  # intact, and advised
            click.echo(f"NOTE  {advisory.describe()}")
        for signer in report.opened.signers:
            mark = "ok  " if signer.counts else "--  " if released and signer.valid else "FAIL"
            click.echo(f"{mark}  signed by {_signer_label(signer, released=bool(released))}")
        if not report.opened.signers and not released:
            click.echo("FAIL  no signatures")
    bad = [f for f in report.files if not f.ok]
    if bad:
        error: SovnetError = IntegrityError(
            f"{len(bad)} of {len(report.files)} files of {m.name} differ from the manifest: "
            + ", ".join(f.path for f in bad),
            hint=f"`sovnet fetch {cid}` downloads the damaged files again from peers "
            "(with sovnetd running); a publisher whose own file changed publishes it again",
        )
    elif not report.opened.trusted:
        error = TrustError(untrusted_reason(cid, report.opened.signers), hint=UNTRUSTED_HINT)
    else:
        if not as_json:
            if report.opened.released_as:
                say(f"Intact: {report.opened.released_as}.")
            else:
                say(f"{m.name} is intact and signed by a trusted key.")
        return
    if as_json:
        sys.exit(error.exit_code)  # the report above already says why, as JSON
    raise error


def _verify_all(ctx: Context, as_json: bool) -> None:
    """Every model re-hashed: a line each, and the worst outcome as the exit code."""
    from sovnet.errors import IntegrityError, TrustError
    from sovnet.store.verify import verify as do_verify

    store = ctx.store()
    trust_store = ctx.node_files().load_trust()
    rows: list[dict[str, object]] = []
    cids = store.cids()
    with byte_progress("verifying", enabled=not as_json) as bar:
        total = 0
        for cid in cids:  # for the bar only: the manifest, not the trust gate, twice
            with contextlib.suppress(SovnetError, OSError):
                manifest = store.manifest(cid)
                total += manifest.total_size if manifest is not None else 0
        bar.start(total)
        for cid in cids:
            try:
                report = do_verify(store, cid, trust_store, progress=bar.advance)
            except SovnetError as exc:
                rows.append({"cid": str(cid), "ok": False, "intact": False, "trusted": False,
                             "problem": exc.message})  # fmt: skip
                continue
            bad = [f"{f.path}: {f.problem}" for f in report.files if not f.ok]
            rows.append(
                {
                    "cid": str(cid),
                    "name": report.opened.manifest.name,
                    "version": report.opened.manifest.version,
                    "ok": report.ok,
                    "intact": report.intact,
                    "trusted": report.opened.trusted,
                    "problem": "; ".join(bad) or (None if report.opened.trusted else "not trusted"),
                }
            )
    if as_json:
        emit_json(rows)
    else:
        for row in rows:
            mark = "ok  " if row["ok"] else "FAIL"
            label = f"{row.get('name') or ''} {row.get('version') or ''}".strip()
            problem = f": {row['problem']}" if row["problem"] else ""
            click.echo(f"{mark}  {row['cid']}  {label}{problem}")
        bad_count = sum(1 for row in rows if not row["ok"])
        say(f"{len(rows) - bad_count} of {len(rows)} models intact and trusted.")
    if any(not row["intact"] for row in rows):
        error: SovnetError = IntegrityError(
            "some models differ from their manifests (FAIL above)",
            hint="`sovnet fetch CID` repairs one from peers (with sovnetd running)",
        )
    elif any(not row["ok"] for row in rows):
        error = TrustError("some models are not trusted (FAIL above)")
    else:
        return
    if as_json:
        sys.exit(error.exit_code)
    raise error


@click.command()
@click.argument("cid_text", metavar="MODEL")
@json_option
@pass_context
def rm(ctx: Context, cid_text: str, as_json: bool) -> None:
    """Remove a model from the store (blobs other models use are kept).

    MODEL is a CID or a name, as for `sovnet show`.
    """
    _use_json(ctx, as_json)
    cid = _model_cid(ctx, cid_text)
    from sovnet.api.messages import RemoveResult, to_json

    daemon = ctx.daemon()
    if daemon is not None:
        summary = daemon.remove(str(cid))  # it stops seeding first
    else:
        store = ctx.store()
        store.require(cid)  # before the lock, which would create the state directory
        with store.locked():
            result = store.remove(cid)
        from sovnet.store.retention import Retention

        Retention(store).forget(cid)
        summary = RemoveResult(
            str(cid), result.freed_bytes, result.blobs_removed, result.held_bytes
        )
    if as_json:
        emit_json(to_json(summary))
        return
    say(f"Removed {cid}; freed {human_size(summary.freed_bytes)} ({summary.blobs_removed} blobs).")
    if summary.held_bytes:
        say(
            f"  {human_size(summary.held_bytes)} more stay on the disk: other links hold "
            "them (the files it was published from, or a `sovnet export`)"
        )


@click.command()
@click.argument("cid_text", metavar="MODEL")
@json_option
@pass_context
def pin(ctx: Context, cid_text: str, as_json: bool) -> None:
    """Keep a model whatever the store's budget: garbage collection never removes it.

    MODEL is a CID or a name, as for `sovnet show`."""
    _set_pinned(ctx, cid_text, as_json, pinned=True)


@click.command()
@click.argument("cid_text", metavar="MODEL")
@json_option
@pass_context
def unpin(ctx: Context, cid_text: str, as_json: bool) -> None:
    """Let garbage collection remove a model again, when the store needs room."""
    _set_pinned(ctx, cid_text, as_json, pinned=False)


def _set_pinned(ctx: Context, cid_text: str, as_json: bool, *, pinned: bool) -> None:
    from sovnet.store.retention import Retention

    _use_json(ctx, as_json)
    cid = _model_cid(ctx, cid_text)
    store = ctx.store()
    store.require(cid)
    changed = Retention(store).set_pinned(cid, pinned)
    if as_json:
        emit_json({"cid": str(cid), "pinned": pinned, "changed": changed})
        return
    state = "pinned" if pinned else "not pinned"
    manifest = store.manifest(cid)
    named = ""
    if manifest is not None:
        named = manifest.name + (f"@{manifest.version}" if manifest.version else "") + " "
    say(f"{named}({cid}) is {state}{'' if changed else ' already'}.")


@click.command()
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@json_option
@pass_context
def gc(ctx: Context, dry_run: bool, as_json: bool) -> None:
    """Remove unpinned models, least recently used first, until the store is within
    its budget (max_store_bytes, min_disk_free in sovnetd.toml). Through sovnetd when
    it runs (it stops seeding them first; models being fetched are kept)."""
    from sovnet.api.messages import to_json

    _use_json(ctx, as_json)
    daemon = ctx.daemon()
    result = _gc_here(ctx, dry_run) if daemon is None else daemon.gc(dry_run)
    if as_json:
        emit_json(to_json(result))
        return
    budget = []
    if result.max_store_bytes:
        budget.append(f"a quota of {human_size(result.max_store_bytes)}")
    if result.min_disk_free:
        budget.append(f"{human_size(result.min_disk_free)} kept free on its disk")
    if not budget:
        where = "in sovnetd.toml"
        if daemon is None:  # the CLI read the budget itself: say from where
            where = "as this command read them: $SOVNET_CONFIG, else ~/.config/sovnet/sovnetd.toml"
        say(f"This store has no budget (max_store_bytes, min_disk_free {where}): "
            "nothing to collect.")  # fmt: skip
        return
    say(f"The store holds {human_size(result.store_bytes)}, with {' and '.join(budget)}.")
    for victim in result.planned:
        verb = "would remove" if dry_run else "removed"
        say(f"  {verb} {victim.cid} ({victim.name}, frees {human_size(victim.frees)})")
    if not dry_run:
        say(f"Freed {human_size(result.freed_bytes)}.")
    if not result.enough and result.problem:
        say(f"warning: still over budget: {result.problem}")


def _gc_here(ctx: Context, dry_run: bool) -> GcResult:
    """gc without sovnetd: the same plan, carried out on the store under its lock."""
    from sovnet.api.messages import GcResult, GcVictim, RemoveResult
    from sovnet.store.configfile import read_config
    from sovnet.store.retention import Limits, Retention

    config = read_config(os.environ, Path.home(), only=("max_store_bytes", "min_disk_free"))
    limits = Limits(config.max_store_bytes, config.min_disk_free)
    store = ctx.store()
    retention = Retention(store)
    with store.locked():
        plan = retention.plan(limits)
        removed = []
        for victim in [] if dry_run else plan.victims:
            done = store.remove(victim.cid)
            retention.forget(victim.cid)
            removed.append(
                RemoveResult(str(done.cid), done.freed_bytes, done.blobs_removed, done.held_bytes)
            )
    return GcResult(
        planned=tuple(GcVictim(str(v.cid), v.name, v.frees, v.last_used) for v in plan.victims),
        removed=tuple(removed),
        freed_bytes=sum(r.freed_bytes for r in removed),
        store_bytes=plan.store_bytes,
        max_store_bytes=limits.max_store_bytes,
        min_disk_free=limits.min_disk_free,
        enough=plan.enough,
        problem=plan.problem,
    )


def register(cli: click.Group) -> None:
    for command in (publish, ls, show, verify, rm, pin, unpin, gc):
        cli.add_command(command)
