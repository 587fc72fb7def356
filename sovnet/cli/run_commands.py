"""The commands that hand a verified model to the tools that use it: run, serve, export.

Each goes through the gate (sovnet/run/admission.py) first: a trusted signature, files that
are the verified ones, GGUF headers checked by sovnet's parser in a limited child
process. run and serve then hand the admitted file to llama.cpp in a child process
(llama_process.py), whose crash becomes one line and exit 11; llama.cpp is never
loaded in this process, so ``sovnet --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sovnet.cli.context import Context, json_option, pass_context, use_json
from sovnet.cli.output import emit_json, say
from sovnet.errors import InvalidInputError

if TYPE_CHECKING:
    from sovnet.run.llama_process import Generate, Serve

DEFAULT_PORT = 8000  # llama-cpp-python's server's own default

_model_argument = click.argument("model_ref", metavar="MODEL")
_verify_full_option = click.option(
    "--verify-full", is_flag=True, help="Re-hash every file, even those whose stamps match."
)
_file_option = click.option(
    "--file",
    "gguf_file",
    metavar="PATH",
    help="The GGUF file to load, when the model holds several (the first split of a split one).",
)
_allow_revoked_option = click.option(
    "--allow-revoked",
    is_flag=True,
    help="Use a release its publisher revoked (an advisory) all the same "
    '[default: refuse, unless sovnetd.toml says revoked = "allow"].',
)
_ctx_option = click.option(
    "--ctx-size",
    type=click.IntRange(16, 1 << 24),
    help="Context window in tokens [default: 4096, or less if the model was trained on less].",
)


def register(cli: click.Group) -> None:
    cli.add_command(run)
    cli.add_command(serve)
    cli.add_command(export)


def _allowed_revoked(flag: bool) -> bool:
    """``--allow-revoked``, else the node's policy (``revoked`` in sovnetd.toml)."""
    if flag:
        return True
    from sovnet.store.configfile import read_config

    return read_config(os.environ, Path.home(), only=("revoked",)).revoked == "allow"


def _say_advisories(advisories: tuple[str, ...]) -> None:
    for text in advisories:
        say(f"warning: {text}")


def _say_rehashed(rehashed: tuple[str, ...]) -> None:
    if rehashed:
        say(f"Re-verified {len(rehashed)} file(s) whose stamps had changed: {', '.join(rehashed)}")


@click.command()
@_model_argument
@click.option("-p", "--prompt", help="Complete this prompt and exit.")
@click.option(
    "-n",
    "--tokens",
    "max_tokens",
    type=click.IntRange(1, 1 << 20),
    default=256,
    show_default=True,
    help="At most this many tokens per reply.",
)
@click.option("--chat", is_flag=True, help="Talk through the model's chat template.")
@_verify_full_option
@_file_option
@_ctx_option
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), help="Sampling seed [default: random].")
@click.option("--verbose", is_flag=True, help="Show llama.cpp's log on stderr.")
@_allow_revoked_option
@pass_context
def run(
    ctx: Context,
    model_ref: str,
    prompt: str | None,
    max_tokens: int,
    chat: bool,
    verify_full: bool,
    gguf_file: str | None,
    ctx_size: int | None,
    seed: int | None,
    verbose: bool,
    allow_revoked: bool,
) -> None:
    """Run a model with llama.cpp, once it passes the gate.

    With -p, print a completion of the prompt and exit; without, read prompts
    from the terminal until end of input (Ctrl-D). Generated text goes to stdout.

    MODEL is a CID; ORG/MODEL:CHANNEL, ORG/MODEL@VERSION or ORG/MODEL (:latest) as
    a pinned publisher root released it; else ORG/MODEL[@VERSION] among the models
    here signed by a trusted key (a bare name must match exactly one; `sovnet ls`
    lists them).
    """
    from sovnet.run.llama_process import Generate

    if prompt is not None:
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # bytes from the shell that are not UTF-8
            raise InvalidInputError("the prompt is not valid UTF-8") from None
    task = Generate(prompt=prompt, max_tokens=max_tokens, chat=chat, seed=seed)
    gate = _Gate(model_ref, verify_full, gguf_file, _allowed_revoked(allow_revoked))
    _admit_and_hand_over(ctx, gate, ctx_size, verbose, task)


@click.command()
@_model_argument
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on.",
)
@_verify_full_option
@_file_option
@_ctx_option
@_allow_revoked_option
@pass_context
def serve(
    ctx: Context,
    model_ref: str,
    host: str,
    port: int,
    verify_full: bool,
    gguf_file: str | None,
    ctx_size: int | None,
    allow_revoked: bool,
) -> None:
    """Serve a model over an OpenAI-compatible HTTP API, once it passes the gate.

    llama-cpp-python's server: /v1/completions, /v1/chat/completions, /v1/models,
    /v1/models/NAME and /health on http://HOST:PORT. Clients name the model by its
    name (ORG/MODEL); another name gets OpenAI's 404 model_not_found. It listens on
    127.0.0.1 unless told otherwise and has no authentication: anyone who can
    reach the port can use the model.

    MODEL is a CID; ORG/MODEL:CHANNEL, ORG/MODEL@VERSION or ORG/MODEL (:latest) as
    a pinned publisher root released it; else ORG/MODEL[@VERSION] among the models
    here signed by a trusted key (a bare name must match exactly one; `sovnet ls`
    lists them).
    """
    from sovnet.run.llama_process import Serve
    from sovnet.run.serve_app import resolve

    resolve(host, port)  # an address that is none is said before any warning about it
    if not _is_loopback(host):
        say(f"warning: listening on {host}: anyone who can reach port {port} can use the model")
    task = Serve(host=host, port=port, alias="")  # the alias is the model's name, once admitted
    gate = _Gate(model_ref, verify_full, gguf_file, _allowed_revoked(allow_revoked))
    _admit_and_hand_over(ctx, gate, ctx_size, False, task)


@dataclasses.dataclass(frozen=True)
class _Gate:
    """What run and serve ask of the gate."""

    model_ref: str
    verify_full: bool
    gguf_file: str | None
    allow_revoked: bool


def _admit_and_hand_over(
    ctx: Context,
    gate: _Gate,
    ctx_size: int | None,
    verbose: bool,
    task: Generate | Serve,
) -> None:
    """The gate, then llama.cpp in a child process (llama_process.py) for ``task``.

    The child starts first: it imports llama-cpp-python's Python dependencies (never
    llama.cpp itself) while the gate, forked from this process, checks the model on
    the other core. On two cores most of the gate then costs no time.
    """
    from sovnet.run.gate_child import admit_in_child
    from sovnet.run.llama_process import Job, LlamaProcess, Serve, context_size

    with LlamaProcess() as child:
        pending = admit_in_child(
            ctx.state_dir,
            gate.model_ref,
            verify_full=gate.verify_full,
            gguf_file=gate.gguf_file,
            allow_revoked=gate.allow_revoked,
        )
        try:
            admission = pending.result()
        finally:
            pending.close()
        _say_advisories(admission.advisories)
        _say_rehashed(admission.rehashed)
        label = f"{admission.label} ({admission.cid})"
        if isinstance(task, Serve):  # the child says "Serving" once it has the port
            task = dataclasses.replace(task, alias=admission.name)
        n_ctx = context_size(ctx_size, admission.context_length)
        job = Job(admission.entry_path, label, n_ctx, verbose, task)
        code = child.run(job)
    if code == 130:
        raise KeyboardInterrupt
    if code:
        raise SystemExit(code)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.command()
@_model_argument
@click.option(
    "--hf-cache",
    "hf_cache",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[DIR]",
    help="Export into a Hugging Face hub cache (default: huggingface_hub's).",
)
@_verify_full_option
@_allow_revoked_option
@json_option
@pass_context
def export(
    ctx: Context,
    model_ref: str,
    hf_cache: str | None,
    verify_full: bool,
    allow_revoked: bool,
    as_json: bool,
) -> None:
    """Export a model for other tools, once it passes the gate.

    --hf-cache [DIR] writes the Hugging Face hub cache layout (models--ORG--NAME
    with blobs/, snapshots/REVISION/ and refs/main) into DIR, by default the cache
    huggingface_hub uses ($HF_HUB_CACHE, else $HF_HOME/hub, else
    ~/.cache/huggingface/hub). Its files are hard links to the verified ones
    (symbolic links across filesystems): no second copy. With HF_HUB_OFFLINE=1,
    hf_hub_download("ORG/NAME", FILE) and transformers find them. Put MODEL
    before --hf-cache, or write --hf-cache=DIR. Prints the snapshot directory.

    MODEL is a CID; ORG/MODEL:CHANNEL, ORG/MODEL@VERSION or ORG/MODEL (:latest) as
    a pinned publisher root released it; else ORG/MODEL[@VERSION] among the models
    here signed by a trusted key (a bare name must match exactly one; `sovnet ls`
    lists them).
    """
    use_json(ctx, as_json)
    if hf_cache is None:
        raise click.UsageError("say what to export to: --hf-cache [DIR]")
    from sovnet.core.cid import CID
    from sovnet.run import hfexport
    from sovnet.run.admission import admit

    if hf_cache:
        cache_dir = Path(hf_cache).expanduser()
    else:
        cache_dir = hfexport.default_cache_dir(os.environ, Path.home())
    store = ctx.store()
    trust = ctx.node_files().load_trust()
    admission = admit(
        store,
        trust,
        model_ref,
        verify_full=verify_full,
        runnable=False,
        allow_revoked=_allowed_revoked(allow_revoked),
    )
    _say_advisories(admission.advisories)
    cid = CID.parse(admission.cid)
    manifest = store.open(cid, trust).manifest
    result = hfexport.export_hf_cache(admission.model_dir, cid, manifest, cache_dir)
    if as_json:
        emit_json(
            {
                "cid": admission.cid,
                "repo_id": result.repo_id,
                "revision": result.revision,
                "snapshot": str(result.snapshot),
                "hard_linked": result.hard_linked,
                "symlinked": result.symlinked,
                "already": result.already,
            }
        )
        return
    click.echo(str(result.snapshot))
    _say_rehashed(admission.rehashed)
    how = f"{result.hard_linked} hard-linked, {result.symlinked} symlinked"
    if result.already:
        how += f", {result.already} already there"
    say(f"Exported {admission.label} as {result.repo_id} revision {result.revision} ({how}).")
    say(f'  HF_HUB_OFFLINE=1: hf_hub_download("{result.repo_id}", FILENAME) finds it')
