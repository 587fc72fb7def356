"""What every ``sovnet`` command shares: where the node's state is, how to reach
its daemon, and the ``--json`` switch. Read from argv and the environment once,
at the entry point; nothing heavy is imported until a command needs it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from sovnet.api.client import Client
    from sovnet.core.cid import CID
    from sovnet.store.keyfiles import NodeFiles
    from sovnet.store.store import Store


@dataclass
class Context:
    state_override: str | None = None
    socket_override: str | None = None
    json: bool = False

    @property
    def state_location(self) -> Path:
        """Where this node's state is to be, whether or not there is a node there yet."""
        from sovnet.core.locations import state_dir

        return state_dir(os.environ, Path.home(), self.state_override)

    @property
    def state_dir(self) -> Path:
        """This node's state directory, which must be a node: a mistyped --state-dir is
        an error naming it, never taken for a new, empty node (store/nodedir.py)."""
        from sovnet.store.nodedir import require_node

        return require_node(self.state_location)

    def check_output(self, path: Path, *, force: bool) -> None:
        """Refuse an output file (``-o``) that exists, unless ``force``, and always one
        inside this node's state directory: ``--force`` must never let a command write
        over the node's own keys, certificates or store."""
        from sovnet.errors import InvalidInputError

        state = self.state_location.resolve()
        if path.resolve().is_relative_to(state):  # through links too: where it lands
            raise InvalidInputError(
                f"{path} is inside this node's state directory {state}",
                hint="write it elsewhere: the node's own files are never replaced, "
                "not even with --force",
            )
        if not force and (path.exists() or path.is_symlink()):
            raise InvalidInputError(f"{path} exists", hint="choose another -o, or --force")

    def write_output(self, path: Path, data: bytes, *, force: bool, mode: int = 0o644) -> None:
        """Write an output file the rules of :meth:`check_output` allow, as a new file
        of exactly ``mode`` (0600 for a secret, whatever the file it replaces had)."""
        from sovnet.errors import LocalStateError
        from sovnet.store.atomicfile import write_atomic_new

        self.check_output(path, force=force)
        try:
            write_atomic_new(path, data, mode=mode, replace=force)
        except FileExistsError:
            self.check_output(path, force=False)  # made meanwhile: the same error
            raise
        except OSError as exc:
            raise LocalStateError(f"cannot write {path}: {exc.strerror}") from None

    def make_node(self) -> Path:
        """The state directory, made a node if it is not one (key gen, network create,
        request and join: the commands that start a node)."""
        from sovnet.store.nodedir import make_node

        return make_node(self.state_location)

    @property
    def socket_path(self) -> Path:
        from sovnet.core.config import default_socket

        if self.socket_override:
            return Path(self.socket_override).expanduser()
        if os.environ.get("SOVNET_SOCKET"):  # a socket named apart needs no state dir
            return default_socket(os.environ, Path.home(), self.state_location)
        return default_socket(os.environ, Path.home(), self.state_dir)

    def store(self) -> Store:
        from sovnet.store.store import Store

        return Store(self.state_dir)

    def node_files(self) -> NodeFiles:
        from sovnet.store.keyfiles import NodeFiles

        return NodeFiles(self.state_dir)

    def client(self) -> Client:
        from sovnet.api.client import Client

        client = Client(self.socket_path)
        if self._named_apart():
            self._check_same_node(client)
        return client

    def _named_apart(self) -> bool:
        """Whether the socket and the state dir were both named, so they may disagree
        (a SOVNET_SOCKET left in the environment, a --state-dir typed for another node)."""
        socket = self.socket_override or os.environ.get("SOVNET_SOCKET")
        state = self.state_override or os.environ.get("SOVNET_STATE_DIR")
        return bool(socket and state)

    def _check_same_node(self, client: Client) -> None:
        """The daemon on the socket must serve this node: a command must never act, or
        publish and sign, as another node than the one it was told of."""
        from sovnet.errors import DaemonError, InvalidInputError

        if not client.running():
            return  # the command itself says there is no daemon
        try:
            serves = Path(client.status().state_dir).resolve()
        except DaemonError:
            return
        if serves != self.state_location.resolve():
            raise InvalidInputError(
                f"the sovnetd on {client.socket_path} serves the node in {serves}, not "
                f"{self.state_location}",
                hint="name the state dir that sovnetd serves, or drop --socket "
                "(and SOVNET_SOCKET) to reach this node's own",
            )

    def daemon(self) -> Client | None:
        """The daemon's client if one runs for this node, else None."""
        client = self.client()
        return client if client.running() else None


pass_context = click.make_pass_decorator(Context)
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def use_json(ctx: Context, as_json: bool) -> None:
    """Errors are printed as JSON too once a command knows it was asked for JSON."""
    ctx.json = as_json


def parse_cid(text: str) -> CID:
    from sovnet.core.cid import CID

    return CID.parse(text)
