"""The ``sovnet`` command line: its entry point and the group every command is in.

This package reads argv and the environment (once, here) and calls the library;
it holds no logic of its own beyond presenting results. Heavy modules are
imported inside the commands that need them, so ``sovnet --help`` stays fast.
Exit codes are those of sovnet.errors (README.md, "Exit codes"). The commands
are in key_commands (key, trust), publisher_commands (publisher roots),
model_commands (publish, ls, show, verify, rm), daemon_commands (status, fetch,
peers, network) and run_commands (run, serve, export).
"""

from __future__ import annotations

import sys

import click

from sovnet.cli import (
    daemon_commands,
    key_commands,
    model_commands,
    publisher_commands,
    run_commands,
)
from sovnet.cli.context import Context
from sovnet.cli.output import report_error, say
from sovnet.errors import LocalStateError, SovnetError, unexpected


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Where this node keeps its store and keys "
    "[default: $SOVNET_STATE_DIR, $STATE_DIRECTORY or ~/.local/share/sovnet].",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False),
    help="sovnetd's API socket [default: $SOVNET_SOCKET, else sovnetd.sock in the state dir].",
)
@click.version_option(package_name="sovnet")
@click.pass_context
def cli(ctx: click.Context, state_dir: str | None, socket_path: str | None) -> None:
    """sovnet: own and share open model weights.

    Publish a model under a content address (CID), sign it, verify it anywhere;
    with sovnetd running, share it with trusted peers and fetch by CID.
    """
    for option, value in (("--state-dir", state_dir), ("--socket", socket_path)):
        if value is not None and not value.strip():
            # An empty value (an unset shell variable) must not mean the default node.
            raise click.BadParameter(
                "is empty: give a path, or leave the option out for the default",
                param_hint=f"'{option}'",
            )
    context = ctx.ensure_object(Context)
    context.state_override = state_dir
    context.socket_override = socket_path


# -- keys ------------------------------------------------------------------------


for commands in (key_commands, publisher_commands, model_commands, daemon_commands, run_commands):
    commands.register(cli)


def main() -> None:
    ctx = Context()
    try:
        code = cli.main(obj=ctx, standalone_mode=False)
    except click.exceptions.Abort:
        say("Aborted.")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except SovnetError as exc:
        report_error(exc, ctx.json)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        say("Interrupted.")
        sys.exit(130)
    except OSError as exc:  # a full disk: said as such (anything else is a bug: raised)
        error = unexpected(exc)
        if not isinstance(error, LocalStateError):
            raise
        report_error(error, ctx.json)
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
