"""The commands for publisher keys: this node's own (key) and those it trusts (trust)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from sovnet.cli.context import Context, json_option, pass_context, use_json
from sovnet.cli.output import emit_json, say, table
from sovnet.errors import InvalidInputError

if TYPE_CHECKING:
    from sovnet.store.rootfiles import PinnedRoot

_use_json = use_json


@click.group()
def key() -> None:
    """This node's publisher key (Ed25519)."""


@key.command("gen")
@click.option("--force", is_flag=True, help="Replace an existing key.")
@json_option
@pass_context
def key_gen(ctx: Context, force: bool, as_json: bool) -> None:
    """Create this node's publisher key (and trust it as "this node")."""
    from sovnet.store.keyfiles import NodeFiles

    _use_json(ctx, as_json)
    files = NodeFiles(ctx.make_node())  # the one command that may start a node here
    private = files.generate_key(force=force)
    public = private.public_key
    if as_json:
        emit_json(
            {"key_id": str(public.key_id), "public_key": str(public), "path": str(files.key_path)}
        )
        return
    click.echo(str(public.key_id))
    say(f"Created a publisher key; its key id is {public.key_id}")
    say(f"  public key: {public}")
    say(f"  stored in:  {files.key_path} (mode 0600)")
    say('This node trusts its own key as "this node".')


@key.command("show")
@click.option(
    "--public",
    "public_only",
    is_flag=True,
    help="Print the public key alone (`> me.pub`, for `sovnet publisher init --key`).",
)
@json_option
@pass_context
def key_show(ctx: Context, public_only: bool, as_json: bool) -> None:
    """Print this node's key id, public key and TUF key id."""
    _use_json(ctx, as_json)
    public = ctx.node_files().load_key().public_key
    if public_only:
        click.echo(str(public))
        return
    from sovnet.trust.publisher_root import tuf_key_id

    if as_json:
        emit_json(
            {
                "key_id": str(public.key_id),
                "public_key": str(public),
                "tuf_key_id": tuf_key_id(public),
            }
        )
        return
    click.echo(f"key id:     {public.key_id}")
    click.echo(f"public key: {public}")
    # Publisher roots (TUF) name keys by another id: both, so that either is found.
    click.echo(f"TUF key id: {tuf_key_id(public)}")


# -- trust ------------------------------------------------------------------------


@click.group()
def trust() -> None:
    """Publisher keys this node trusts, and publisher roots it pinned."""


@trust.command("add")
@click.argument("key_ref", metavar="KEY_ID_OR_PUBLIC_KEY_OR_ROOT_FILE")
@click.option("--name", help="Who this key belongs to, for your eyes (for a key).")
@click.option(
    "--replace", is_flag=True, help="Pin this root instead of the publisher's pinned one."
)
@json_option
@pass_context
def trust_add(ctx: Context, key_ref: str, name: str | None, replace: bool, as_json: bool) -> None:
    """Trust a publisher key, or pin a publisher root.

    KEY_ID_OR_PUBLIC_KEY is the key id as `sovnet key show` prints it (9 groups of
    4; the last is a check, so a typo is refused) or the public key ed25519:HEX;
    its signatures make manifests trusted here. A path to a root file (`sovnet
    publisher init` ... `finish`) pins that publisher's root: compare the
    fingerprint this prints with the publisher, out loud.
    """
    from sovnet.trust.keys import TrustedKey, TrustStore, check_name, parse_key_reference

    _use_json(ctx, as_json)
    if key_ref.endswith(".json"):
        _pin_root(ctx, key_ref, replace, as_json)
        return
    if name is None:
        raise InvalidInputError(
            "--name is required for a key", hint=f"sovnet trust add {key_ref} --name WHO"
        )
    key_id, public = parse_key_reference(key_ref, typed=True)
    entry = TrustedKey(key_id, check_name(name), public)
    before: list[TrustedKey | None] = []

    def change(store: TrustStore) -> TrustStore:
        before.append(store.get(key_id))  # read under the trust file's lock
        return store.with_key(entry)

    ctx.node_files().update_trust(change)
    # Renaming a trusted key is the user's call, but never a silent one.
    renamed_from = before[0].name if before[0] is not None and before[0].name != name else None
    if as_json:
        emit_json(
            {
                "key_id": str(key_id),
                "name": name,
                "public_key": public and str(public),
                "renamed_from": renamed_from,
            }
        )
        return
    if renamed_from is not None:
        say(f'Trusting {key_id}, renamed from "{renamed_from}" to "{name}".')
    else:
        say(f'Trusting {key_id} as "{name}".')


def _pin_root(ctx: Context, path: str, replace: bool, as_json: bool) -> None:
    from pathlib import Path

    from sovnet.store.inputfile import read_input
    from sovnet.store.rootfiles import RootFiles
    from sovnet.trust.publisher_root import MAX_ROOT_BYTES

    data = read_input(Path(path), MAX_ROOT_BYTES, what="publisher root file")
    pinned = RootFiles(ctx.state_dir).pin(data, replace=replace)
    checked = pinned.check
    if as_json:
        emit_json(_root_json(pinned))
        return
    say(
        f"Pinned the root of publisher {checked.publisher} (version {checked.version}, "
        f"{checked.threshold} of {len(checked.keys)} keys)."
    )
    say(f"  fingerprint: {pinned.fingerprint}  (compare it with the publisher, out loud)")
    for warning in pinned.warnings:
        say(f"warning: {warning}")


def _root_json(pinned: PinnedRoot) -> dict[str, object]:
    checked = pinned.check
    return {
        "publisher": checked.publisher,
        "version": checked.version,
        "threshold": checked.threshold,
        "keys": list(checked.keys),
        "fingerprint": pinned.fingerprint,
        "expires": checked.expires.isoformat(),
        "warnings": list(pinned.warnings),
    }


@trust.command("roots")
@json_option
@pass_context
def trust_roots(ctx: Context, as_json: bool) -> None:
    """List the publisher roots this node pinned."""
    from sovnet.store.rootfiles import RootFiles

    _use_json(ctx, as_json)
    roots = RootFiles(ctx.state_dir).pinned()
    if as_json:
        emit_json([_root_json(r) for r in roots])
        return
    if not roots and not RootFiles(ctx.state_dir).damaged():
        say("No publisher roots. `sovnet trust add root.json` pins one.")
        return
    table(
        ["PUBLISHER", "VERSION", "KEYS", "FINGERPRINT"],
        [
            [r.publisher, str(r.check.version), f"{r.check.threshold} of {len(r.check.keys)}",
             r.fingerprint]
            for r in roots
        ],
    )  # fmt: skip
    for pinned in roots:
        for warning in pinned.warnings:
            say(f"warning: {warning}")
    for damaged in RootFiles(ctx.state_dir).damaged():
        say(f"warning: {damaged}")


@trust.command("ls")
@json_option
@pass_context
def trust_ls(ctx: Context, as_json: bool) -> None:
    """List trusted publisher keys."""
    _use_json(ctx, as_json)
    keys = ctx.node_files().load_trust().keys
    if as_json:
        emit_json(
            [
                {
                    "key_id": str(k.key_id),
                    "name": k.name,
                    "public_key": k.public_key and str(k.public_key),
                }
                for k in keys
            ]
        )
        return
    if not keys:
        say("No trusted keys. `sovnet key gen` trusts this node's own; `sovnet trust add` others.")
        return
    table(["KEY ID", "NAME"], [[str(k.key_id), k.name] for k in keys])


@trust.command("rm")
@click.argument("key_ref", metavar="KEY_ID_OR_PUBLIC_KEY_OR_NAME_OR_PUBLISHER")
@click.option("--root", is_flag=True, help="Unpin the root of the publisher named.")
@json_option
@pass_context
def trust_rm(ctx: Context, key_ref: str, root: bool, as_json: bool) -> None:
    """Stop trusting a publisher key, or unpin a publisher's root (by its name).

    The models already here stay; what the root released is no longer trusted for
    being its release."""
    from sovnet.errors import NotFoundError
    from sovnet.store.rootfiles import RootFiles
    from sovnet.trust.keys import TrustStore, parse_key_reference

    _use_json(ctx, as_json)
    files = ctx.node_files()
    roots = RootFiles(ctx.state_dir)
    if root:
        roots.unpin(key_ref)
        _say_unpinned(key_ref, as_json)
        return
    try:
        key_id, _ = parse_key_reference(key_ref)
    except InvalidInputError:
        named = [k for k in files.load_trust().keys if k.name == key_ref]
        pinned = roots.is_pinned(key_ref)
        if named and pinned:
            raise InvalidInputError(
                f"{key_ref!r} names both a trusted key and a pinned publisher root",
                hint=f"`sovnet trust rm --root {key_ref}` unpins the root; the key's id "
                "(`sovnet trust ls`) removes the key",
            ) from None
        if pinned:
            roots.unpin(key_ref)
            _say_unpinned(key_ref, as_json)
            return
        if len(named) != 1:
            raise NotFoundError(
                f"no trusted key has the id or the name {key_ref!r}, and no root of that "
                "publisher is pinned"
                if not named
                else f"{len(named)} trusted keys are named {key_ref!r}; give the key id",
                hint="`sovnet trust ls` lists the keys, `sovnet trust roots` the roots",
            ) from None
        key_id = named[0].key_id

    def remove(store: TrustStore) -> TrustStore:
        return store.without(key_id)

    files.update_trust(remove)
    if as_json:
        emit_json({"removed": str(key_id)})
        return
    say(f"No longer trusting {key_id}.")


def _say_unpinned(publisher: str, as_json: bool) -> None:
    if as_json:
        emit_json({"unpinned": publisher})
        return
    say(f"No longer trusting the root of {publisher}.")


def register(cli: click.Group) -> None:
    cli.add_command(key)
    cli.add_command(trust)
