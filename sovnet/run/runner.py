"""Hand an admitted model to llama.cpp (llama-cpp-python): generate, chat or serve.

The only module of sovnet that imports ``llama_cpp``, and only inside functions,
so ``import sovnet.run.runner`` loads nothing of llama.cpp. Every path given here must
come from an :class:`~sovnet.run.admission.Admission`; this module checks nothing itself.
It runs in the child process that ``sovnet run`` / ``sovnet serve`` start for it
(llama_process.py), never in the CLI's own process and never in sovnetd.

Model output is untrusted text: on a terminal, control characters other than
newline and tab are replaced before printing, so a model cannot move the cursor
or rewrite the screen. Piped output is passed on as generated.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

from sovnet.errors import InvalidInputError, RunnerError, quoted
from sovnet.run.llama_process import DEFAULT_CONTEXT, Generate, Job

if TYPE_CHECKING:
    from llama_cpp import Llama
    from pydantic_settings import BaseSettings

# llama-cpp-python's Python dependencies: importing them runs no llama.cpp code
# and reads no model, so `sovnet run` may import them while the gate still works.
PREWARM = (
    "ctypes",
    "numpy",
    "jinja2",
    "jinja2.sandbox",
    "diskcache",
    "typing_extensions",
    "multiprocessing",
    "logging",
    "uuid",
    "pprint",
    "traceback",
)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_INSTALL_HINT = "install it with `pip install 'sovnet[run]'`"


def execute(job: Job) -> None:
    """Load the job's model and do what it says, until done (or stopped)."""
    if not isinstance(job.task, Generate):
        task = job.task
        serve(job.model, alias=task.alias, host=task.host, port=task.port, n_ctx=job.n_ctx)
        return
    generate = job.task
    llm = load(job.model, n_ctx=job.n_ctx, seed=generate.seed, verbose=job.verbose)
    out = Output(sys.stdout)
    try:
        if generate.prompt is not None:
            try:
                if generate.chat:
                    messages = [{"role": "user", "content": generate.prompt}]
                    chat(llm, messages, out, max_tokens=generate.max_tokens)
                else:
                    complete(llm, generate.prompt, out, max_tokens=generate.max_tokens)
            except ValueError as exc:  # llama-cpp-python: the prompt exceeds the context
                raise InvalidInputError(
                    f"{exc}", hint="a larger --ctx-size, or a shorter prompt"
                ) from exc
            return
        print(f"{job.label} is verified and loaded.", file=sys.stderr)
        print("Type a prompt and press Enter; Ctrl-D quits, Ctrl-C stops a reply.", file=sys.stderr)

        def show_prompt() -> None:
            sys.stderr.write("> ")
            sys.stderr.flush()

        interactive(
            llm, out, max_tokens=generate.max_tokens, use_chat=generate.chat, prompt=show_prompt
        )
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # end of input left the cursor after the prompt
    except BrokenPipeError:
        # The reader went away (`sovnet run ... | head`): stop quietly, as cat does,
        # and keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def prewarm() -> None:
    """Import llama-cpp-python's dependencies, but neither llama_cpp nor libllama."""
    for name in PREWARM:
        with contextlib.suppress(ImportError):  # load() says what is missing
            importlib.import_module(name)


def load(
    path: Path, *, n_ctx: int = DEFAULT_CONTEXT, seed: int | None = None, verbose: bool = False
) -> Llama:
    """Load an admitted GGUF file (the first split of a split model)."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise RunnerError(
            f"llama-cpp-python is not installed ({exc.name} is missing)", hint=_INSTALL_HINT
        ) from exc
    from jinja2 import TemplateError  # llama-cpp-python's dependency: here once it is there

    try:
        if seed is None:
            return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, verbose=verbose)
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, seed=seed, verbose=verbose)
    except ValueError as exc:
        if "llama_context" in str(exc):
            hint = (
                "llama.cpp could not allocate the context: try a smaller --ctx-size "
                "(run with --verbose to see llama.cpp's log)"
            )
        else:
            hint = (
                "the file passed sovnet's checks; llama.cpp may not support its architecture "
                "or quantisation (run with --verbose to see llama.cpp's log)"
            )
        raise RunnerError(f"llama.cpp could not load {path.name}: {exc}", hint=hint) from exc
    except TemplateError as exc:  # the model's chat template, compiled as it loads
        raise RunnerError(
            f"the chat template of {path.name} is not one llama-cpp-python can use: "
            f"{quoted(str(exc))}",
            hint="the publisher's template (tokenizer.chat_template) is broken",
        ) from exc


class Output:
    """Where generated text goes; control characters are replaced on a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._clean = stream.isatty()
        self.at_line_start = True

    def write(self, text: str) -> None:
        if not text:
            return
        if self._clean:
            text = _CONTROL.sub("\ufffd", text)
        self._stream.write(text)
        self._stream.flush()
        self.at_line_start = text.endswith("\n")

    def end_line(self) -> None:
        if not self.at_line_start:
            self.write("\n")


def complete(llm: Llama, prompt: str, out: Output, *, max_tokens: int) -> str:
    """Stream a plain completion of ``prompt``; return the generated text."""
    stream = cast(Iterator[Any], llm.create_completion(prompt, max_tokens=max_tokens, stream=True))
    return _pump(stream, out, lambda choice: choice.get("text"))


def chat(llm: Llama, messages: list[dict[str, str]], out: Output, *, max_tokens: int) -> str:
    """Stream the assistant's reply to ``messages`` with the model's chat template."""
    from jinja2 import TemplateError

    try:
        stream = cast(
            Iterator[Any],
            llm.create_chat_completion(
                messages=cast(Any, messages), max_tokens=max_tokens, stream=True
            ),
        )
        return _pump(stream, out, lambda choice: choice.get("delta", {}).get("content"))
    except TemplateError as exc:  # raise_exception() in the template, or a runtime error
        raise RunnerError(
            f"the model's chat template refused the conversation: {quoted(str(exc))}",
            hint="run without --chat to complete plain text",
        ) from exc


_T = TypeVar("_T")


def _pump(stream: Iterator[Any], out: Output, text_of: Callable[[Mapping[str, Any]], _T]) -> str:
    parts = []
    try:
        for chunk in stream:
            text = text_of(chunk["choices"][0])
            if isinstance(text, str):
                out.write(text)
                parts.append(text)
    finally:
        out.end_line()
    return "".join(parts)


def interactive(
    llm: Llama,
    out: Output,
    *,
    max_tokens: int,
    use_chat: bool,
    read_line: Callable[[], str] | None = None,
    prompt: Callable[[], None] | None = None,
) -> None:
    """A prompt loop until end of input. With ``use_chat`` the conversation is kept."""
    read_line = read_line or sys.stdin.readline
    history: list[dict[str, str]] = []
    while True:
        if prompt is not None:
            prompt()
        try:
            line = read_line()
        except UnicodeDecodeError:
            print("sovnet: that line is not valid UTF-8", file=sys.stderr)
            continue
        if not line:
            return
        text = line.rstrip("\n")
        if not text.strip():
            continue
        try:
            if use_chat:
                history.append({"role": "user", "content": text})
                reply = chat(llm, history, out, max_tokens=max_tokens)
                history.append({"role": "assistant", "content": reply})
            else:
                complete(llm, text, out, max_tokens=max_tokens)
        except KeyboardInterrupt:
            out.end_line()  # Ctrl-C stops this reply, not the session
            if use_chat and history and history[-1]["role"] == "user":
                history.pop()
        except (ValueError, RunnerError) as exc:  # too long for the context; the template
            print(f"sovnet: {getattr(exc, 'message', exc)}", file=sys.stderr)
            if use_chat:
                history.clear()
                print("sovnet: the conversation was reset", file=sys.stderr)
        except UnicodeError:
            print("sovnet: that line is not valid UTF-8", file=sys.stderr)
            if use_chat and history and history[-1]["role"] == "user":
                history.pop()


def serve(path: Path, *, alias: str, host: str, port: int, n_ctx: int = DEFAULT_CONTEXT) -> None:
    """llama-cpp-python's OpenAI-compatible server for one admitted model, until stopped."""
    try:
        import uvicorn
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise RunnerError(
            f"`sovnet serve` needs llama-cpp-python's server ({exc.name} is missing)",
            hint=_INSTALL_HINT,
        ) from exc
    # create_app() loads the models listed in $CONFIG_FILE instead of the ones it
    # is given: a model that never passed the gate. This process serves ours only.
    os.environ.pop("CONFIG_FILE", None)
    model = explicit_settings(
        ModelSettings, model=str(path), model_alias=alias, n_ctx=n_ctx, verbose=False
    )
    server = explicit_settings(ServerSettings, host=host, port=port)
    app = create_app(server_settings=server, model_settings=[model])
    uvicorn.run(app, host=host, port=port, log_level="info")


_S = TypeVar("_S", bound="BaseSettings")


def explicit_settings(cls: type[_S], **values: object) -> _S:
    """A pydantic-settings object with every field given, so none comes from the environment.

    llama-cpp-python's settings read any field from an environment variable of the
    same name: ``LORA_PATH``, ``CLIP_MODEL_PATH``, ``DRAFT_MODEL``,
    ``HF_MODEL_REPO_ID``... would load weights that never passed the gate. Explicit
    values win over the environment, so every field gets one: ours, or its default.
    """
    given: dict[str, Any] = {
        name: field.get_default(call_default_factory=True)
        for name, field in cls.model_fields.items()
        if not field.is_required()
    }
    given.update(values)
    return cls(**given)
