"""A model's chat template, rendered under a budget of time and memory.

A GGUF's ``tokenizer.chat_template`` is Jinja2 written by the publisher, rendered by
llama-cpp-python in jinja2's sandbox. The sandbox keeps a template from Python's
internals, not from running for hours or taking all memory: its ``range`` cap
(100,000) is per call and nested loops multiply, and ``'x' * n``, ``~`` in a loop or
a growing list allocate in C without a bound. Neither a bounded ``range`` nor an
operation counter sees everything a template can do in one step (one ``str.__mul__``
allocates gigabytes); a watchdog in the rendering process (SIGALRM) interrupts Python
only between bytecodes, not an allocation, only in the main thread (``serve`` renders
in a worker thread), and could not bound memory there without bounding llama.cpp.

So every rendering happens in a process of its own, given an address-space limit
(``RLIMIT_AS``) and killed at its deadline: a real bound on both, whatever the
template does, for ``run``, interactive ``run --chat`` and ``serve`` alike. Those
processes are forked from a small renderer process that the llama.cpp child starts
first thing, while it still has one thread (numpy's import starts one, llama.cpp and
uvicorn more, and a fork copies only the caller's); the renderer stays single-threaded,
so each fork from it is safe and takes a millisecond or two.

Between the llama.cpp child and the renderer: length-prefixed frames; a request is our
own JSON, an answer the renderer's ``P`` + prompt or ``E`` + JSON error, bounded.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from sovnet.errors import RunnerError, quoted
from sovnet.run.parent_death import die_with

TIME_BUDGET_SECONDS = 5.0
MEMORY_BUDGET_BYTES = 256 * 1024 * 1024
MAX_PROMPT_BYTES = 32 * 1024 * 1024
# The renderer answers within its budget; longer means it is wedged.
_ANSWER_SLACK_SECONDS = 30.0
_MAX_ERROR_BYTES = 64 * 1024
_LENGTH = struct.Struct(">I")

Kind = Literal["budget", "sandbox", "refused", "syntax", "failed"]
_HINTS: dict[Kind, str] = {
    "budget": "the publisher's template (tokenizer.chat_template) loops or allocates "
    "without bound; run without --chat to complete plain text",
    "sandbox": "the publisher's template (tokenizer.chat_template) reaches for what "
    "jinja2's sandbox forbids; run without --chat to complete plain text",
    "refused": "the template's own check: see what it asks of the conversation",
    "syntax": "the publisher's template (tokenizer.chat_template) is broken",
    "failed": "the publisher's template (tokenizer.chat_template) fails on this "
    "conversation; run without --chat to complete plain text",
}


class ChatTemplateError(RunnerError):
    """A chat template that broke its budget, that the sandbox refused, that does not
    compile, or that turned the conversation down (``raise_exception``): exit 10."""

    def __init__(self, kind: Kind, label: str, detail: str) -> None:
        self.kind: Kind = kind
        self.detail = detail
        what = {
            "budget": f"went over its budget ({detail}) and was stopped",
            "sandbox": f"did something its sandbox refused: {quoted(detail)}",
            "refused": f"refused the conversation: {quoted(detail)}",
            "syntax": f"is not one llama-cpp-python can use: {quoted(detail)}",
            "failed": f"failed: {quoted(detail)}",
        }[kind]
        super().__init__(f"the chat template of {label} {what}", hint=_HINTS[kind])


@dataclass(frozen=True)
class _Verdict:
    prompt: str | None
    kind: Kind | None = None
    detail: str = ""


class TemplateRenderer:
    """The llama.cpp child's side of the renderer process; safe to share among threads."""

    def __init__(self, pid: int, requests: int, answers: int) -> None:
        self._pid = pid
        self._requests = requests
        self._answers = answers
        self._lock = threading.Lock()

    @classmethod
    def start(cls) -> TemplateRenderer:
        """Fork the renderer. Call it while this process has one thread."""
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # the renderer: never returns
            try:
                _keep_only(request_read, answer_write)  # the child's job and report pipes too
                die_with(parent)
                _renderer_main(request_read, answer_write)
            finally:
                os._exit(0)
        os.close(request_read)
        os.close(answer_write)
        return cls(pid, request_write, answer_read)

    def check(self, template: str, label: str) -> None:
        """Compile ``template`` under the budget; ChatTemplateError if it cannot be."""
        self._ask({"template": template, "compile_only": True}, label)

    def render(self, template: str, label: str, variables: dict[str, Any]) -> str:
        """``template`` rendered with ``variables`` (JSON values), under the budget."""
        prompt = self._ask({"template": template, "variables": variables}, label)
        assert prompt is not None
        return prompt

    def close(self) -> None:
        """The renderer reads end of input and exits. Idempotent."""
        with self._lock:
            self._close_pipes()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)

    def _stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for fd in (self._requests, self._answers):
            if fd >= 0:
                os.close(fd)
        self._requests = self._answers = -1

    def _ask(self, request: dict[str, Any], label: str) -> str | None:
        try:
            data = json.dumps(request).encode()
        except (TypeError, ValueError) as exc:
            raise ChatTemplateError("failed", label, f"a value it was given: {exc}") from exc
        # One exchange at a time, and not cut in two by Ctrl-C (which would leave an
        # answer in the pipe for the next question): the signal waits for its end.
        with self._lock:
            if self._requests < 0:
                raise ChatTemplateError("failed", label, "the template renderer was closed")
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                _write_frame(self._requests, data)
                answer = _read_frame(
                    self._answers,
                    MAX_PROMPT_BYTES + _MAX_ERROR_BYTES,
                    time.monotonic() + TIME_BUDGET_SECONDS + _ANSWER_SLACK_SECONDS,
                )
            except OSError as exc:
                raise ChatTemplateError("failed", label, f"the template renderer: {exc}") from exc
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            if answer is None:  # its answer may still come: no question can follow it
                self._stop()
                raise ChatTemplateError("failed", label, "the template renderer stopped answering")
        verdict = _decode(answer)
        if verdict.kind is not None:
            raise ChatTemplateError(verdict.kind, label, verdict.detail)
        return verdict.prompt


def _decode(answer: bytes) -> _Verdict:
    if answer[:1] == b"P":
        return _Verdict(answer[1:].decode("utf-8", "surrogatepass"))
    try:
        value = json.loads(answer[1:])
        kind, detail = value["kind"], str(value["detail"])
    except (ValueError, KeyError, TypeError):
        return _Verdict(None, "failed", "the template renderer's answer is malformed")
    if kind not in _HINTS:
        return _Verdict(None, "failed", "the template renderer's answer is malformed")
    return _Verdict(None, kind, detail)


def _error(kind: Kind, detail: str) -> bytes:
    return b"E" + json.dumps({"kind": kind, "detail": detail[:4096]}).encode()


# -- the renderer process ------------------------------------------------------------------


def _keep_only(*kept: int) -> None:
    """Close every descriptor but stdin, stdout, stderr and ``kept``."""
    low = 3
    for fd in sorted(kept):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


def _renderer_main(requests: int, answers: int) -> None:
    # Ctrl-C on the terminal reaches the whole process group: it is for the llama.cpp
    # child (which stops a reply). The renderer ends when that child closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import resource  # noqa: F401  # imported once here, not in every worker

    _environment()  # likewise jinja2
    while (request := _read_frame(requests, None, None)) is not None:
        _write_frame(answers, _render_in_worker(request))


def _render_in_worker(request: bytes) -> bytes:
    """Fork a worker for ``request``; its answer, or why it gave none in time."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker: never returns
        try:
            _keep_only(write_fd)
            # No die_with() (10 ms of dlopen a rendering): RLIMIT_CPU ends a worker
            # whose renderer is gone, as a closed pipe does one that writes.
            _limit_memory()
            answer = _render(request)
            with contextlib.suppress(OSError):
                _write_all(write_fd, answer)
        finally:
            os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    chunks: list[bytes] = []
    total, over = 0, ""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                over = f"{TIME_BUDGET_SECONDS:g} seconds"
                break
            if not select.select([read_fd], [], [], left)[0]:
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_PROMPT_BYTES + _MAX_ERROR_BYTES:
                over = f"a prompt of {MAX_PROMPT_BYTES // (1024 * 1024)} MiB"
                break
            chunks.append(chunk)
    finally:
        if over:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if over:
        return _error("budget", over)
    if not chunks:
        code = os.waitstatus_to_exitcode(status)
        how = f"signal {-code}" if code < 0 else f"status {code}"
        return _error("failed", f"the renderer died ({how})")
    return b"".join(chunks)


def _limit_memory() -> None:
    import resource

    with open("/proc/self/statm", encoding="ascii") as statm:
        size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = size + MEMORY_BUDGET_BYTES
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # The renderer kills a worker at its deadline; this bounds one that outlives it.
    seconds = int(TIME_BUDGET_SECONDS) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds))


class _Refused(Exception):
    """The template's ``raise_exception(message)``: it turns the conversation down."""


def _render(request: bytes) -> bytes:
    from jinja2 import TemplateSyntaxError
    from jinja2.exceptions import SecurityError

    budget = f"{MEMORY_BUDGET_BYTES // (1024 * 1024)} MiB of memory"
    try:
        value = json.loads(request)
        template = _environment().from_string(value["template"])
        if value.get("compile_only"):
            return b"P"

        def raise_exception(message: object) -> None:
            raise _Refused(str(message))

        def strftime_now(form: str) -> str:
            import datetime

            return datetime.datetime.now().strftime(form)

        prompt: str = template.render(
            **value["variables"], raise_exception=raise_exception, strftime_now=strftime_now
        )
        data = prompt.encode("utf-8", "surrogatepass")
        if len(data) > MAX_PROMPT_BYTES:
            return _error("budget", f"a prompt of {MAX_PROMPT_BYTES // (1024 * 1024)} MiB")
        return b"P" + data
    except MemoryError:
        return _error("budget", budget)
    except _Refused as exc:
        return _error("refused", str(exc))
    except TemplateSyntaxError as exc:
        return _error("syntax", str(exc))
    except (SecurityError, OverflowError) as exc:  # OverflowError: the sandbox's range cap
        return _error("sandbox", str(exc))
    except RecursionError:
        return _error("failed", "it recurses too deeply")
    except Exception as exc:  # TemplateError (undefined values...), TypeError, ...
        try:
            return _error("failed", f"{type(exc).__name__}: {exc}")
        except MemoryError:
            return _error("budget", budget)


_environments: list[Any] = []


def _environment() -> Any:
    """llama-cpp-python's chat-template environment (``Jinja2ChatFormatter``), made
    here: importing llama_cpp would load llama.cpp into the renderer."""
    if _environments:
        return _environments[0]
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class IgnoreGenerationTags(jinja2.ext.Extension):
        """Hugging Face's ``{% generation %}`` tag, passed through (as llama-cpp-python)."""

        tags = {"generation"}  # noqa: RUF012  # jinja2's Extension declares it so

        def parse(self, parser: Any) -> Any:
            parser.stream.skip(1)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    environment = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    environment.filters["tojson"] = _tojson
    _environments.append(environment)
    return environment


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Transformers' ``tojson`` for chat templates, as llama-cpp-python has it."""
    return json.dumps(
        x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


# -- frames --------------------------------------------------------------------------------


def _write_frame(fd: int, data: bytes) -> None:
    _write_all(fd, _LENGTH.pack(len(data)) + data)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_frame(fd: int, limit: int | None, deadline: float | None) -> bytes | None:
    """One frame; None at end of input, at the deadline, or past ``limit``."""
    header = _read_exactly(fd, _LENGTH.size, deadline)
    if header is None:
        return None
    (length,) = _LENGTH.unpack(header)
    if limit is not None and length > limit:
        return None
    return _read_exactly(fd, length, deadline)


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes | None:
    chunks: list[bytes] = []
    while size:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
