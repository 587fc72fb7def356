"""The offline ceremony of a publisher root: init, sign, status, rotate, finish.

Every command works on one file, passed from holder to holder (a USB stick, an
e-mail): nothing here needs the network, sovnetd or, but for signing with the
node's own key, a state directory. See sovnet/trust/publisher_root.py.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from sovnet.cli.context import Context, json_option, pass_context, use_json
from sovnet.cli.output import emit_json, say
from sovnet.errors import (
    InvalidInputError,
    LocalStateError,
    NotFoundError,
    SovnetError,
    TrustError,
)

if TYPE_CHECKING:
    from sovnet.store.publisherfiles import PublisherFiles
    from sovnet.trust.publisher_root import RootCheck
    from sovnet.trust.publisher_targets import TargetsCheck


_F = TypeVar("_F", bound=Callable[..., Any])


def _path() -> click.Path:
    return click.Path(dir_okay=False, path_type=Path)


_KEY_HELP = (
    "A holder's public key: a PEM file (Ed25519 or ECDSA P-256), or a file holding "
    "the `ed25519:...` line of `sovnet key show`; repeatable."
)
_ROOT_HELP = "the publisher's root [default: the one installed on this node]."
_TARGETS_HELP = (
    "the publisher's releases file that delegates the advisories "
    "[default: the newest installed on this node]."
)


def _against_option(name: str, what: str, for_what: str = "") -> Callable[[_F], _F]:
    """--root or --targets (``name``): the file ``what`` describes, for a command that
    reads one kind of file (``for_what`` empty) or any kind."""
    return click.option(
        f"--{name}",
        f"{name}_path",
        type=click.Path(dir_okay=False, path_type=Path),
        help=f"For {for_what}: {what}" if for_what else what.capitalize(),
    )


def _root_option(for_what: str = "") -> Callable[[_F], _F]:
    return _against_option("root", _ROOT_HELP, for_what)


def _targets_option(for_what: str = "") -> Callable[[_F], _F]:
    return _against_option("targets", _TARGETS_HELP, for_what)


_ROOT_OPTION = _root_option("a release file")
_TARGETS_OPTION = _targets_option("an advisories file")
_OUTPUT_OPTION = click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True
)
_FORCE_OPTION = click.option("--force", is_flag=True, help="Replace an existing output file.")
_PREVIOUS_OPTION = click.option(
    "--previous",
    "previous_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="For a rotation: the root this one replaces.",
)


@click.group()
def publisher() -> None:
    """A publisher root: k of n keys, held by different people, sign for a publisher.

    \b
    1. one holder:  sovnet publisher init ORG --key a.pub --key b.pub --key c.pub \\
                        --threshold 2 --online-key node.pub -o root.json
    2. each holder: sovnet publisher sign root.json [--key their.pem]
    3. anyone:      sovnet publisher finish root.json
    4. the publisher's node (node.pub's): sovnet publisher install root.json
    """


@publisher.command("init")
@click.argument("org")
@click.option("--key", "key_paths", multiple=True, required=True, type=_path(), help=_KEY_HELP)
@click.option("--threshold", type=click.IntRange(1), required=True, help="How many must sign.")
@click.option(
    "--online-key",
    type=_path(),
    help="The public key of the publisher's node, which signs snapshot and timestamp "
    "alone [default: this node's key].",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("root.json"),
    show_default=True,
)
@_FORCE_OPTION
@json_option
@pass_context
def init(
    ctx: Context,
    org: str,
    key_paths: tuple[Path, ...],
    threshold: int,
    online_key: Path | None,
    output: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write ORG's unsigned root: THRESHOLD of the keys must sign it, and releases;
    the publisher's node (this one unless --online-key names another) signs the
    snapshot and timestamp that say which releases are the newest."""
    from sovnet.trust import publisher_root

    use_json(ctx, as_json)
    keys = [publisher_root.public_key(_read(p)) for p in key_paths]
    if online_key is not None:
        online = publisher_root.public_key(_read(online_key))
    else:
        try:
            node_key = ctx.node_files().load_key().public_key
        except SovnetError as exc:
            raise InvalidInputError(
                f"no key for the publisher's node: {exc.message}",
                hint="give --online-key NODE.pub, the public key of the node that will "
                "publish (`sovnet key show --public` there)",
            ) from None
        online = publisher_root.public_key(str(node_key).encode())
    data = publisher_root.new_root(org, keys, threshold, now=_now(), online=online)
    _write_output(ctx, output, data, force=force)
    _show(publisher_root.check(data), output, as_json)
    if online_key is None:
        say(
            f"The publisher's node is this one (key {online.keyid[:16]}): it installs the "
            "root and signs snapshot and timestamp; --online-key names another node"
        )


@publisher.command("sign")
@click.argument("path", type=_path())
@click.option(
    "--key",
    "key_path",
    type=_path(),
    help="Your private key (PEM, Ed25519 or ECDSA P-256) [default: this node's publisher key].",
)
@_PREVIOUS_OPTION
@_ROOT_OPTION
@_TARGETS_OPTION
@json_option
@pass_context
def sign(
    ctx: Context,
    path: Path,
    key_path: Path | None,
    previous_path: Path | None,
    root_path: Path | None,
    targets_path: Path | None,
    as_json: bool,
) -> None:
    """Add your signature to the root, release or advisories file at PATH (in place)."""
    from sovnet.store.lockfile import file_locked
    from sovnet.trust import publisher_advisories, publisher_root, publisher_targets

    use_json(ctx, as_json)
    pem = _read(key_path) if key_path else _read(ctx.node_files().key_path)
    holder = publisher_root.signer(pem)
    ctx.check_output(path, force=True)  # a node's served repository is installed, not edited
    with file_locked(path):  # holders signing at once each add theirs
        data = _read(path)
        if _kind(data) == "advisories":
            targets = _targets_for(ctx, _publisher_of_advisories(data), targets_path)
            signed = publisher_advisories.sign(data, holder, targets=targets)
            _write(path, signed, replace=True)
            checked = publisher_advisories.check(signed, targets=targets)
            _show_targets(checked, path, as_json, what="advisories")
            return
        if _kind(data) == "targets":
            root = _root_for(ctx, data, root_path)
            signed = publisher_targets.sign(data, holder, root=root)
            _write(path, signed, replace=True)
            _show_targets(publisher_targets.check(signed, root=root), path, as_json)
            return
        previous = _read(previous_path) if previous_path else None
        _refuse_broken_root(data, path, "signing it")
        signed = publisher_root.sign(data, holder, previous=previous)
        _write(path, signed, replace=True)
    _show(publisher_root.check(signed, previous=previous), path, as_json)


def _refuse_broken_root(data: bytes, path: Path, doing: str) -> None:
    """A root that is not what `publisher status` shows, or can never work, is refused
    before a holder signs it or anyone finishes it."""
    from sovnet.trust import publisher_root

    wrong = [w for w in publisher_root.problems(data, now=_now()) if not w.startswith("it expired")]
    if wrong:
        raise TrustError(
            f"{path} is not a root sovnet makes, so {doing} is refused: " + "; ".join(wrong[:5]),
            hint="ask whoever drafted it; `sovnet publisher init` and `rotate` make sound ones",
        )


@publisher.command("release")
@click.argument("ref", metavar="ORG/MODEL@VERSION")
@click.option(
    "--channel",
    "channels",
    multiple=True,
    help="A channel to point at this release; repeatable [default: latest].",
)
@_root_option()
@_OUTPUT_OPTION
@_FORCE_OPTION
@json_option
@pass_context
def release(
    ctx: Context,
    ref: str,
    channels: tuple[str, ...],
    root_path: Path | None,
    output: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write the next version of the publisher's releases (unsigned): the model
    ORG/MODEL@VERSION of this node's store released, and channels moved to it. The
    root's holders then sign it (`sign OUTPUT`) and this node installs it."""
    from sovnet.store.publisherfiles import PublisherFiles
    from sovnet.trust import publisher_targets

    use_json(ctx, as_json)
    name, _, version = ref.partition("@")
    if not version:
        raise InvalidInputError(f"{ref!r} names no version", hint="ORG/MODEL@VERSION")
    manifest = _held_manifest(ctx, name, version)
    files = PublisherFiles(ctx.state_dir, name.split("/")[0])
    root = _read(root_path) if root_path else _installed_root(files)
    current = files.latest("targets")
    data = publisher_targets.release(
        current[1] if current else None,
        root=root,
        name=name,
        version=version,
        manifest=manifest,
        channels=channels or ("latest",),
        now=_now(),
    )
    _write_output(ctx, output, data, force=force)
    _show_targets(publisher_targets.check(data, root=root), output, as_json)


@publisher.command("advise")
@click.argument("ref", metavar="ORG/MODEL@VERSION")
@click.argument("kind", type=click.Choice(["revoked", "deprecated", "superseded", "withdrawn"]))
@click.option("--reason", default="", help="One line: what is wrong, and what to do.")
@click.option("--superseded-by", metavar="ORG/MODEL@VERSION", help="For superseded: the successor.")
@_targets_option()
@_OUTPUT_OPTION
@_FORCE_OPTION
@json_option
@pass_context
def advise(
    ctx: Context,
    ref: str,
    kind: str,
    reason: str,
    superseded_by: str | None,
    targets_path: Path | None,
    output: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write the next version of the publisher's advisories (unsigned): the release
    ORG/MODEL@VERSION revoked, deprecated or superseded (with a reason), or its
    advisory withdrawn. The advisories role's holders then sign it (`sign OUTPUT`)
    and the publisher's node installs it; nodes that pinned the root hear it through
    any peer, and their operators decide what it does (`sovnet run --allow-revoked`)."""
    from sovnet.store.publisherfiles import PublisherFiles
    from sovnet.trust import publisher_advisories

    use_json(ctx, as_json)
    files = PublisherFiles(ctx.state_dir, ref.split("/")[0])
    root = _installed_root(files)
    targets_data = _targets_for(ctx, files.publisher, targets_path)
    current = files.latest("advisories")
    data = publisher_advisories.advise(
        current[1] if current else None,
        targets=targets_data,
        root=root,
        ref=ref,
        kind=None if kind == "withdrawn" else kind,
        reason=reason,
        superseded_by=superseded_by,
        now=_now(),
    )
    _write_output(ctx, output, data, force=force)
    checked = publisher_advisories.check(data, targets=targets_data)
    _show_targets(checked, output, as_json, what="advisories")


@publisher.command("delegate-advisories")
@click.argument("org")
@click.option("--key", "key_paths", multiple=True, required=True, type=_path(), help=_KEY_HELP)
@click.option("--threshold", type=click.IntRange(1), required=True, help="How many must sign.")
@_root_option()
@_OUTPUT_OPTION
@_FORCE_OPTION
@json_option
@pass_context
def delegate_advisories(
    ctx: Context,
    org: str,
    key_paths: tuple[Path, ...],
    threshold: int,
    root_path: Path | None,
    output: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write the next version of ORG's releases (unsigned) with the advisories role
    delegated to THRESHOLD of the keys given (another institution's, such as a
    national CERT's); the root's holders sign it, as for a release. By default the
    root's own keys sign advisories."""
    from sovnet.store.publisherfiles import PublisherFiles
    from sovnet.trust import publisher_root, publisher_targets

    use_json(ctx, as_json)
    files = PublisherFiles(ctx.state_dir, org)
    root = _read(root_path) if root_path else _installed_root(files)
    current = files.latest("targets")
    if current is None:
        raise NotFoundError(
            f"no releases of {org} are installed on this node",
            hint="release a model first: `sovnet publisher release`",
        )
    data = publisher_targets.delegate_advisories(
        current[1],
        root=root,
        keys=[publisher_root.public_key(_read(p)) for p in key_paths],
        threshold=threshold,
        now=_now(),
    )
    _write_output(ctx, output, data, force=force)
    _show_targets(publisher_targets.check(data, root=root), output, as_json, what="targets")


@publisher.command("install")
@click.argument("path", type=_path())
@json_option
@pass_context
def install(ctx: Context, path: Path, as_json: bool) -> None:
    """Make this node the publisher's: install a complete root (its first version or
    the next), release or advisories file, which it then serves; for releases, this node signs
    the snapshot and timestamp with its key (the root's online key)."""
    from sovnet.store.publisherfiles import PublisherFiles
    from sovnet.trust import publisher_root

    use_json(ctx, as_json)
    data = _read(path)
    if _kind(data) == "advisories":
        org = _publisher_of_advisories(data)
        files = PublisherFiles(ctx.state_dir, org)
        online = publisher_root.signer(_read(ctx.node_files().key_path))
        checked = files.install_advisories(data, online, _now())
        _show_targets(checked, path, as_json, what="advisories")
        say(f"Installed advisories version {checked.version} of {org}; this node serves them.")
        return
    if _kind(data) == "targets":
        org = _publisher_of_targets(data)
        files = PublisherFiles(ctx.state_dir, org)
        online = publisher_root.signer(_read(ctx.node_files().key_path))
        checked = files.install_targets(data, online, _now())
        _show_targets(checked, path, as_json)
        say(f"Installed releases version {checked.version} of {org}; this node serves them.")
        return
    root = publisher_root.check(data)
    own = ctx.node_files().load_key().public_key
    node_key = publisher_root.tuf_key_id(own)
    if not publisher_root.signs_online_alone(data, node_key):
        # Installed here, the root would make this node the publisher's, which it
        # cannot be: refused before anything is written, so nothing is to undo.
        online_ids = ", ".join(root.names.get(k, k[:16]) for k in root.online_keys) or "(none)"
        raise TrustError(
            f"this node's key ({own.key_id}) cannot sign {root.publisher}'s snapshot and "
            f"timestamp alone, as the publisher's node must; the root's online key is "
            f"{online_ids}: install the root on that key's node",
            hint="if this node is meant to be the publisher's node (not a holder's): "
            "`sovnet publisher rotate ROOT --online-key NODE.pub` (NODE.pub: `sovnet key "
            "show --public` here), signed as a rotation",
        )
    installed = PublisherFiles(ctx.state_dir, root.publisher).install_root(data)
    _show(installed, path, as_json)
    say(f"Installed root version {installed.version} of {root.publisher}.")


@dataclasses.dataclass(frozen=True)
class _Against:
    """What a file's signatures are checked against: the files given, else the
    newest installed on this node."""

    previous: Path | None
    root: Path | None
    targets: Path | None


@publisher.command("status")
@click.argument("path", type=_path())
@_PREVIOUS_OPTION
@_ROOT_OPTION
@_TARGETS_OPTION
@json_option
@pass_context
def status(
    ctx: Context,
    path: Path,
    previous_path: Path | None,
    root_path: Path | None,
    targets_path: Path | None,
    as_json: bool,
) -> None:
    """Who signed the root, release or advisories file at PATH, and who still must."""
    against = _Against(previous_path, root_path, targets_path)
    _check_signatures(ctx, path, against, as_json, require=False)


@publisher.command("finish")
@click.argument("path", type=_path())
@_PREVIOUS_OPTION
@_ROOT_OPTION
@_TARGETS_OPTION
@json_option
@pass_context
def finish(
    ctx: Context,
    path: Path,
    previous_path: Path | None,
    root_path: Path | None,
    targets_path: Path | None,
    as_json: bool,
) -> None:
    """Check that enough holders signed the root, release or advisories file at PATH
    (exit 6 if not)."""
    against = _Against(previous_path, root_path, targets_path)
    _check_signatures(ctx, path, against, as_json, require=True)


def _check_signatures(
    ctx: Context, path: Path, against: _Against, as_json: bool, *, require: bool
) -> None:
    from sovnet.trust import publisher_advisories, publisher_root, publisher_targets

    use_json(ctx, as_json)
    data = _read(path)
    hint = (
        f"each missing holder runs `sovnet publisher sign {path}` (with --key THEIR.pem "
        "when their key is not their node's)"
    )
    root_path, previous_path = against.root, against.previous
    kind = _kind(data)
    if kind in ("targets", "advisories"):
        if kind == "advisories":
            targets_data = _targets_for(ctx, _publisher_of_advisories(data), against.targets)
            targets = publisher_advisories.check(data, targets=targets_data)
        else:
            targets = publisher_targets.check(data, root=_root_for(ctx, data, root_path))
        if require and not targets.complete:
            raise TrustError(
                f"{path} is signed by {len(targets.signed_by)} of the keys (needs "
                f"{targets.threshold}): not enough",
                hint=hint,
            )
        _show_targets(targets, path, as_json, what=kind)
        return
    previous = _read(previous_path) if previous_path else None
    checked = publisher_root.check(data, previous=previous)
    if require:
        _refuse_broken_root(data, path, "finishing it")
    else:
        for wrong in publisher_root.problems(data, now=_now()):
            say(f"PROBLEM: {wrong}")
    if require and not checked.complete:
        raise TrustError(f"{path} is signed by {_count(checked)}: not enough", hint=hint)
    if require and checked.version > 1 and previous is None:
        raise TrustError(
            f"{path} is version {checked.version}: it is complete only with the signatures "
            f"of version {checked.version - 1}'s holders too, which only --previous checks",
            hint=f"sovnet publisher finish {path} --previous ROOT (version "
            f"{checked.version - 1}, the root this one replaces)",
        )
    _show(checked, path, as_json)


@publisher.command("rotate")
@click.argument("path", type=_path())
@click.option("--add", "add_paths", multiple=True, type=_path(), help="A key to add; repeatable.")
@click.option(
    "--remove",
    "remove_ids",
    multiple=True,
    help="A key to remove, by its key id (as `publisher status` or `key show` prints it) "
    "or public key; repeatable.",
)
@click.option("--threshold", type=click.IntRange(1), help="A new threshold.")
@click.option(
    "--online-key",
    type=_path(),
    help="A new key for the publisher's node to sign snapshot and timestamp with.",
)
@_OUTPUT_OPTION
@_FORCE_OPTION
@json_option
@pass_context
def rotate(
    ctx: Context,
    path: Path,
    add_paths: tuple[Path, ...],
    remove_ids: tuple[str, ...],
    threshold: int | None,
    online_key: Path | None,
    output: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Write the next version of the root at PATH: keys added or removed (a lost or
    stolen one), another threshold. The old threshold of old keys and the new one of
    new keys sign it (`sign OUTPUT --previous PATH`)."""
    from sovnet.trust import publisher_root

    use_json(ctx, as_json)
    if not add_paths and not remove_ids and threshold is None and online_key is None:
        raise InvalidInputError(
            "nothing to change", hint="give --add, --remove, --threshold or --online-key"
        )
    current = _read(path)
    _refuse_broken_root(current, path, "rotating it")
    data = publisher_root.rotate(
        current,
        add=[publisher_root.public_key(_read(p)) for p in add_paths],
        remove=remove_ids,
        threshold=threshold,
        online=publisher_root.public_key(_read(online_key)) if online_key else None,
        now=_now(),
    )
    _write_output(ctx, output, data, force=force)
    _show(publisher_root.check(data, previous=current), output, as_json)
    if online_key is not None:
        [online_id] = publisher_root.online_keys(data)[0]
        say(
            f"note: snapshot and timestamp are signed by key {online_id[:16]} now: the node "
            "that holds it installs this root and serves the publisher"
        )
    elif publisher_root.online_keys(data) != publisher_root.online_keys(current):
        say(
            "note: snapshot and timestamp are signed by other keys now; if the publisher's "
            "node no longer holds one, give it one with --online-key"
        )
    if remove_ids:
        say(
            "note: a removed key still signs advisories (if the root's keys sign them, the "
            "default) until the next releases are installed: "
            "once this root is, write them (`sovnet publisher release` of the newest, "
            "signed again) so that only the keys kept sign advisories"
        )


def _read(path: Path) -> bytes:
    """A key, root or release file: a regular file (a FIFO would wait for ever), at
    most the size of the largest (a release file); each parser bounds its own kind."""
    from sovnet.store.inputfile import read_input
    from sovnet.trust.publisher_targets import MAX_TARGETS_BYTES

    return read_input(path, MAX_TARGETS_BYTES)


def _write_output(ctx: Context, output: Path, data: bytes, *, force: bool) -> None:
    """A file a command makes (``-o``): never one of this node's, even with --force."""
    ctx.check_output(output, force=force)
    _write(output, data, replace=force)


def _write(path: Path, data: bytes, *, replace: bool) -> None:
    from sovnet.store.atomicfile import write_atomic

    if path.exists() and not replace:
        raise InvalidInputError(f"{path} exists", hint="choose another -o, or --force")
    try:
        write_atomic(path, data, mode=0o644)
    except OSError as exc:
        raise LocalStateError(f"cannot write {path}: {exc.strerror}") from None


def _kind(data: bytes) -> str:
    """root, targets or advisories: what a metadata file says it is (checked again when
    parsed)."""
    import json

    from sovnet.trust.publisher_advisories import ROLE_FIELD

    try:
        value = json.loads(data)
        kind = value["signed"]["_type"]
    except (ValueError, KeyError, TypeError, RecursionError):
        kind = None
    if kind not in ("root", "targets"):
        raise InvalidInputError(
            "not a publisher root, release or advisories file (TUF root or targets)"
        )
    if kind == "targets" and value["signed"].get(ROLE_FIELD) == "advisories":
        return "advisories"
    return str(kind)


def _publisher_of_targets(data: bytes) -> str:
    import json

    targets = json.loads(data)["signed"].get("targets")
    if not isinstance(targets, dict):
        raise InvalidInputError("not a release file: its targets are not a mapping")
    for path in targets:
        return str(path).split("/")[0]
    raise InvalidInputError("this release file releases nothing")


def _publisher_of_advisories(data: bytes) -> str:
    import json

    from sovnet.trust.publisher_root import PUBLISHER_FIELD

    return str(json.loads(data)["signed"].get(PUBLISHER_FIELD, ""))


def _targets_for(ctx: Context, publisher: str, targets_path: Path | None) -> bytes:
    """The releases file given, else the newest installed on this node."""
    from sovnet.store.publisherfiles import PublisherFiles

    if targets_path is not None:
        return _read(targets_path)
    targets = PublisherFiles(ctx.state_dir, publisher).latest("targets")
    if targets is None:
        raise NotFoundError(
            f"no releases of {publisher} are installed on this node",
            hint="give --targets with the publisher's newest releases file (the "
            "release.json the holders signed last)",
        )
    return targets[1]


def _installed_root(files: PublisherFiles) -> bytes:
    root = files.latest("root")
    if root is None:
        raise NotFoundError(
            f"no root of {files.publisher} is installed on this node",
            hint="give --root with the publisher's newest root file (after a rotation, "
            "the newest version)",
        )
    return root[1]


def _root_for(ctx: Context, targets: bytes, root_path: Path | None) -> bytes:
    from sovnet.store.publisherfiles import PublisherFiles

    if root_path is not None:
        return _read(root_path)
    return _installed_root(PublisherFiles(ctx.state_dir, _publisher_of_targets(targets)))


def _held_manifest(ctx: Context, name: str, version: str) -> bytes:
    """The manifest of ``name@version`` in this node's store."""
    from sovnet.core.manifest import Manifest

    store = ctx.store()
    for cid in store.cids():
        raw = store.manifest_bytes(cid)
        manifest = Manifest.from_bytes(raw)
        if manifest.name == name and manifest.version == version:
            return raw
    raise NotFoundError(
        f"{name}@{version} is not in this node's store",
        hint=f"`sovnet publish DIR --name {name} --version {version}` first",
    )


def _show_targets(checked: TargetsCheck, path: Path, as_json: bool, what: str = "releases") -> None:
    """Who signed the releases or advisories file at ``path``, and what it says (a
    holder sees what they sign)."""
    from sovnet.trust import publisher_advisories, publisher_targets

    kind = "releases" if what == "targets" else what
    data = _read(path)
    said = publisher_advisories.said(data) if kind == "advisories" else publisher_targets.said(data)
    if as_json:
        emit_json(
            {
                "path": str(path),
                "kind": kind,
                "version": checked.version,
                "threshold": checked.threshold,
                "signed_by": list(checked.signed_by),
                "holders": _holders(checked.keys, checked.signed_by, checked.names),
                "complete": checked.complete,
                "says": said,
                "expires": checked.expires.isoformat() if checked.expires else None,
            }
        )
        return
    state = "complete" if checked.complete else "not yet"
    say(f"{path}: {kind} version {checked.version}, which says:")
    for line in said[:_SAID_LINES]:
        say(f"    {line}")
    if len(said) > _SAID_LINES:
        say(f"    ... and {len(said) - _SAID_LINES} more (--json lists them all)")
    say("  holders:")
    _say_holders(checked.keys, checked.signed_by, checked.names)
    say(f"  signed by {len(checked.signed_by)} (needs {checked.threshold}): {state}")
    if checked.expires is not None:
        say(
            f"  expires {checked.expires:%Y-%m-%d}: before then the holders sign the next "
            f"{kind} (`sovnet publisher {'advise' if kind == 'advisories' else 'release'}`; "
            "the publisher's node renews only snapshot and timestamp)"
        )


_SAID_LINES = 30


def _holders(
    keys: tuple[str, ...], signed_by: tuple[str, ...], names: Mapping[str, str]
) -> list[dict[str, object]]:
    """Each key of a role: its TUF key id, the key id `sovnet key show` prints (an
    Ed25519 key's), and whether it signed."""
    return [{"key": k, "key_id": names.get(k), "signed": k in signed_by} for k in keys]


def _say_holders(
    keys: tuple[str, ...], signed_by: tuple[str, ...], names: Mapping[str, str]
) -> None:
    from sovnet.trust import publisher_root

    for keyid in keys:
        mark = "signed " if keyid in signed_by else "missing"
        name = names.get(keyid, "(not an Ed25519 key)")
        say(f"  {mark}  {publisher_root.shown_id(keyid)}  {name}".rstrip())


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _count(checked: RootCheck) -> str:
    text = f"{len(checked.signed_by)} of {len(checked.keys)} keys (needs {checked.threshold})"
    if checked.previous_threshold is not None:
        text += (
            f", and {len(checked.previous_signed_by)} of the previous version's "
            f"(needs {checked.previous_threshold})"
        )
    return text


def _show(checked: RootCheck, path: Path, as_json: bool) -> None:
    from sovnet.trust import publisher_root

    if as_json:
        emit_json(
            {
                "path": str(path),
                "publisher": checked.publisher,
                "version": checked.version,
                "threshold": checked.threshold,
                "keys": list(checked.keys),
                "signed_by": list(checked.signed_by),
                "holders": _holders(checked.keys, checked.signed_by, checked.names),
                "previous_threshold": checked.previous_threshold,
                "previous_signed_by": list(checked.previous_signed_by),
                "previous_holders": _holders(
                    checked.previous_keys, checked.previous_signed_by, checked.names
                ),
                "expires": checked.expires.isoformat(),
                "online_keys": list(checked.online_keys),
                "complete": checked.complete,
                # a rotation's previous holders were not checked (no --previous)
                "previous_unchecked": checked.version > 1 and checked.previous_threshold is None,
            }
        )
        return
    from sovnet.store.rootfiles import fingerprint

    say(f"{path}: root of publisher {checked.publisher}, version {checked.version}")
    say(f"  fingerprint {fingerprint(_read(path))}: read it to those who pin this version")
    for keyid in checked.online_keys:
        name = checked.names.get(keyid, "(not an Ed25519 key)")
        shown = publisher_root.shown_id(keyid)
        say(f"  online   {shown}  {name}  (the publisher's node: snapshot, timestamp)")
    say("  holders (TUF key id, sovnet key id):")
    _say_holders(checked.keys, checked.signed_by, checked.names)
    if checked.previous_threshold is not None:
        say(f"  and of version {checked.version - 1}'s keys ({checked.previous_threshold} must):")
        _say_holders(checked.previous_keys, checked.previous_signed_by, checked.names)
    state = "complete" if checked.complete else "not yet"
    if checked.complete and checked.version > 1 and checked.previous_threshold is None:
        state = (
            f"enough of its own keys; version {checked.version - 1}'s holders must sign too "
            "(--previous ROOT checks them)"
        )
    say(f"  signed by {_count(checked)}: {state}")


def register(cli: click.Group) -> None:
    cli.add_command(publisher)
