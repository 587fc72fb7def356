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

from sovnet.errors import InvalidInputError, RunnerError
from sovnet.run.llama_process import DEFAULT_CONTEXT, Generate, Job, Serve
from sovnet.run.template_budget import ChatTemplateError, TemplateRenderer

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


def execute(job: Job, templates: TemplateRenderer) -> None:
    """Load the job's model and do what it says, until done (or stopped). Its chat
    templates are rendered by ``templates`` (template_budget.py), under a budget."""
    if not isinstance(job.task, Generate):
        serve(job.model, templates, label=job.label, task=job.task, n_ctx=job.n_ctx)
        return
    generate = job.task
    llm = load(
        job.model,
        templates,
        label=job.label,
        n_ctx=job.n_ctx,
        seed=generate.seed,
        verbose=job.verbose,
    )
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
    path: Path,
    templates: TemplateRenderer,
    *,
    label: str,
    n_ctx: int = DEFAULT_CONTEXT,
    seed: int | None = None,
    verbose: bool = False,
) -> Llama:
    """Load an admitted GGUF file (the first split of a split model); ``label`` names
    the model in errors. Its chat templates are compiled by ``templates``, as it loads."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise RunnerError(
            f"llama-cpp-python is not installed ({exc.name} is missing)", hint=_INSTALL_HINT
        ) from exc

    try:
        with budgeted_templates(templates, label):
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


@contextlib.contextmanager
def budgeted_templates(templates: TemplateRenderer, label: str) -> Iterator[None]:
    """While llama-cpp-python loads a model, the chat formatter it makes of each of its
    templates compiles and renders it in ``templates``' processes, under their budget,
    never in this one (template_budget.py says why). It looks the class up on its module
    as it loads, so the swap reaches those formatters; this process loads nothing else."""
    from llama_cpp import llama_chat_format

    original: Any = llama_chat_format.Jinja2ChatFormatter

    class BudgetedChatFormatter(original):  # type: ignore[misc]  # llama_cpp: untyped
        def __init__(
            self,
            template: str,
            eos_token: str,
            bos_token: str,
            add_generation_prompt: bool = True,
            stop_token_ids: list[int] | None = None,
        ) -> None:
            # Not the original's __init__: it compiles the template here, without a bound.
            self.template = template
            self.eos_token = eos_token
            self.bos_token = bos_token
            self.add_generation_prompt = add_generation_prompt
            self.stop_token_ids = set(stop_token_ids) if stop_token_ids is not None else None
            templates.check(template, label)
            # The original's __call__ renders with self._environment.render(**variables).
            self._environment = _RemoteTemplate(templates, template, label)

    llama_chat_format.Jinja2ChatFormatter = BudgetedChatFormatter  # type: ignore[misc]
    try:
        yield
    finally:
        llama_chat_format.Jinja2ChatFormatter = original  # type: ignore[misc]


class _RemoteTemplate:
    """A compiled template as Jinja2ChatFormatter uses one, rendered by the renderer."""

    # Functions the formatter hands the template: the renderer has its own.
    _ITS_OWN = frozenset({"raise_exception", "strftime_now"})

    def __init__(self, templates: TemplateRenderer, source: str, label: str) -> None:
        self._templates = templates
        self._source = source
        self._label = label

    def render(self, **variables: Any) -> str:
        values = {k: v for k, v in variables.items() if k not in self._ITS_OWN}
        return self._templates.render(self._source, self._label, values)


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
    """Stream the assistant's reply to ``messages`` with the model's chat template;
    ChatTemplateError when the template breaks its budget, fails or refuses."""
    stream = cast(
        Iterator[Any],
        llm.create_chat_completion(
            messages=cast(Any, messages), max_tokens=max_tokens, stream=True
        ),
    )
    return _pump(stream, out, lambda choice: choice.get("delta", {}).get("content"))


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
        except ChatTemplateError as exc:
            if exc.kind in ("budget", "sandbox"):
                if prompt is not None and not sys.stdin.isatty():
                    sys.stderr.write("\n")  # no Enter on a terminal ended the prompt's line
                raise  # it would again, for every conversation: the session ends, exit 10
            print(f"sovnet: {exc.message}", file=sys.stderr)
            history.clear()
            print("sovnet: the conversation was reset", file=sys.stderr)
        except (ValueError, RunnerError) as exc:  # too long for the context
            print(f"sovnet: {getattr(exc, 'message', exc)}", file=sys.stderr)
            if use_chat:
                history.clear()
                print("sovnet: the conversation was reset", file=sys.stderr)
        except UnicodeError:
            print("sovnet: that line is not valid UTF-8", file=sys.stderr)
            if use_chat and history and history[-1]["role"] == "user":
                history.pop()


def serve(
    path: Path,
    templates: TemplateRenderer,
    *,
    label: str,
    task: Serve,
    n_ctx: int = DEFAULT_CONTEXT,
) -> None:
    """llama-cpp-python's OpenAI-compatible server for one admitted model, until stopped,
    with what serve_app.py adds. The port is bound first: one in use fails at once."""
    alias, host, port = task.alias, task.host, task.port
    try:
        import uvicorn
        from llama_cpp.server.app import create_app
        from llama_cpp.server.settings import ModelSettings, ServerSettings
    except ImportError as exc:
        raise RunnerError(
            f"`sovnet serve` needs llama-cpp-python's server ({exc.name} is missing)",
            hint=_INSTALL_HINT,
        ) from exc
    from sovnet.run import serve_app

    sockets = serve_app.listen(host, port)
    # create_app() loads the models listed in $CONFIG_FILE instead of the ones it
    # is given: a model that never passed the gate. This process serves ours only.
    os.environ.pop("CONFIG_FILE", None)
    model = explicit_settings(
        ModelSettings, model=str(path), model_alias=alias, n_ctx=n_ctx, verbose=False
    )
    server = explicit_settings(ServerSettings, host=host, port=port)
    with budgeted_templates(templates, label):
        app = create_app(server_settings=server, model_settings=[model])  # loads the model
    serve_app.add_routes(app, alias)
    _answer_template_errors()
    _answer_validation_errors()
    where = f"[{host}]" if ":" in host else host
    print(f"Serving {label} on http://{where}:{port}/v1", file=sys.stderr)
    print(f'  clients name the model "{alias}"; Ctrl-C stops the server', file=sys.stderr)
    config = uvicorn.Config(app, host=host, port=port, log_level="info")
    # Ctrl-C is how a server is stopped: uvicorn shuts down, then raises it again (its
    # own uvicorn.run() swallows it, as here), so the stop is exit 0, not 130.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=sockets)


def _answer_template_errors() -> None:
    """llama-cpp-python's server words an exception as an OpenAI error by a pattern on
    its message (its own ``RouteErrorHandler.pattern_and_formatters``), else as a 500
    with a traceback in the log. A chat template's error gets its own words."""
    from re import Match

    from llama_cpp.server.errors import ErrorResponse, RouteErrorHandler

    from sovnet.run.serve_app import ErrorAnswer, template_error

    def logged(answer: ErrorAnswer) -> tuple[int, ErrorResponse]:
        print(f"sovnet: {answer.error['message']}", file=sys.stderr)
        return answer.status, ErrorResponse(**answer.error)  # type: ignore[typeddict-item]

    def refused(body: Any, match: Match[str]) -> tuple[int, ErrorResponse]:
        return logged(template_error(match.string, refused=True))

    def failed(body: Any, match: Match[str]) -> tuple[int, ErrorResponse]:
        return logged(template_error(match.string, refused=False))

    patterns = RouteErrorHandler.pattern_and_formatters
    # Dicts keep their order, and the first pattern that matches wins.
    patterns[re.compile(r"^the chat template of .* refused the conversation: ")] = refused
    patterns[re.compile(r"^the chat template of ")] = failed


def _answer_validation_errors() -> None:
    """A request whose fields are wrong (``max_tokens: -5``, ``model: ["x"]``) is
    OpenAI's 400 naming the field, in one log line. llama-cpp-python's route handler
    catches FastAPI's RequestValidationError with every other exception and answers
    500 with its text, which names the server's source file and line, and a traceback
    in the log."""
    from fastapi.exceptions import RequestValidationError
    from llama_cpp.server.errors import ErrorResponse, RouteErrorHandler

    from sovnet.run.serve_app import validation_error

    wrapped = RouteErrorHandler.error_message_wrapper

    def wrapper(
        self: RouteErrorHandler, error: Exception, body: Any = None
    ) -> tuple[int, ErrorResponse]:
        if not isinstance(error, RequestValidationError):
            return wrapped(self, error, body)
        answer = validation_error(error.errors())
        print(f"sovnet: invalid request: {answer.error['message']}", file=sys.stderr)
        return answer.status, ErrorResponse(**answer.error)  # type: ignore[typeddict-item]

    RouteErrorHandler.error_message_wrapper = wrapper  # type: ignore[method-assign]


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
