"""llama.cpp in a process of its own, whose death ``sovnet run`` and ``sovnet serve`` see.

llama.cpp is native code: a bug in it, or a build for another CPU, kills the process
that runs it with a signal, and a shell then prints a bare "Segmentation fault". So
the CLI process never loads llama.cpp. It starts a child first thing (the child
imports llama-cpp-python's Python dependencies while the gate checks the model on
the other core), hands it one :class:`Job` naming an admitted file once the gate has
passed it, and waits. A child killed by a signal becomes a :class:`RunnerCrashError`
(exit 11): one line naming the model, the signal and what to try, with no core file
and the terminal's settings put back.

The child shares the terminal: it reads prompts from it and writes the generated
text straight to it. Ctrl-C on the terminal reaches both processes; the parent leaves
it to the child (which stops a reply, or exits), and passes on to the child only the
signals someone sent to the parent alone (``kill``), so one keystroke is never
delivered twice.

What crosses the pipes is our own: the job (parent to child, JSON) and, when the
child fails, its error (child to parent, JSON, bounded). The child is forked from
the CLI, which has one thread then: it starts with the interpreter and the CLI's
modules loaded (a new interpreter would cost ``sovnet run`` its start-up, on the
critical path), takes the current directory off its import path (as ``python -P``
would) and dies with its parent (``PR_SET_PDEATHSIG``), so a killed
``sovnet serve`` leaves no server behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sovnet.errors import InternalError, RunnerCrashError, SovnetError, error_from_json
from sovnet.run.parent_death import die_with

DEFAULT_CONTEXT = 4096
MAX_REPORT_BYTES = 64 * 1024
# si_code of a signal the kernel sent, as for the terminal's Ctrl-C (Linux's SI_KERNEL).
_SI_KERNEL = 0x80
# Signals that ask a process to stop: passed on to the child, and not a crash when they end it.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
_REBUILD_HINT = (
    "rebuild llama-cpp-python for this CPU (in a sovnet checkout, ./scripts/setup.sh builds "
    "it for this machine, without AMX); if it still crashes, report it with the model and "
    "`lscpu` at https://github.com/ggml-org/llama.cpp/issues"
)
_ABORT_HINT = (
    "llama.cpp says which check failed on stderr, which sovnet hides unless asked: run "
    "`sovnet run MODEL --verbose` to see it; if the model works with other llama.cpp "
    "builds, report it at https://github.com/ggml-org/llama.cpp/issues"
)
_AMX_HINT = (
    "this CPU has AMX, and llama.cpp's AMX kernels crash on quantised models (llama.cpp "
    "issue #20824): rebuild llama-cpp-python without them (in a sovnet checkout, "
    "./scripts/setup.sh does)"
)
_HINTS: dict[int, str] = {
    signal.SIGILL: (
        "this llama.cpp build uses CPU instructions this machine does not have (was it "
        "built on another machine?): rebuild it here; ./scripts/setup.sh does"
    ),
    signal.SIGKILL: (
        "SIGKILL usually comes from the kernel's out-of-memory killer: try a smaller "
        "--ctx-size, or free memory"
    ),
}


@dataclass(frozen=True)
class Generate:
    """Complete ``prompt`` and exit, or with no prompt, read prompts until end of input."""

    prompt: str | None
    max_tokens: int
    chat: bool
    seed: int | None


@dataclass(frozen=True)
class Serve:
    """llama-cpp-python's OpenAI-compatible server, until stopped."""

    host: str
    port: int
    alias: str


@dataclass(frozen=True)
class Job:
    """One admitted GGUF file and what to do with it."""

    model: Path
    label: str  # how the user knows the model: "acme/tiny 1.0 (bafk...)"
    n_ctx: int
    verbose: bool
    task: Generate | Serve

    def to_bytes(self) -> bytes:
        kind = "generate" if isinstance(self.task, Generate) else "serve"
        value = {
            "model": str(self.model),
            "label": self.label,
            "n_ctx": self.n_ctx,
            "verbose": self.verbose,
            kind: asdict(self.task),
        }
        return json.dumps(value).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Job:
        """The inverse of :meth:`to_bytes`; ValueError (or KeyError, TypeError) otherwise."""
        value = json.loads(data)
        task: Generate | Serve = (
            Generate(**value["generate"]) if "generate" in value else Serve(**value["serve"])
        )
        job = cls(Path(value["model"]), value["label"], value["n_ctx"], value["verbose"], task)
        if not isinstance(job.n_ctx, int) or not isinstance(job.label, str):
            raise ValueError("malformed job")
        return job


def context_size(requested: int | None, trained: int | None) -> int:
    """The context to ask for: as requested, else the default capped by what the
    model was trained with (more only makes llama.cpp warn and the output worse)."""
    if requested is not None:
        return requested
    return min(DEFAULT_CONTEXT, trained) if trained else DEFAULT_CONTEXT


def explain_death(returncode: int, label: str, *, cpu_has_amx: bool = False) -> SovnetError | None:
    """The error for a child that ended with ``returncode`` (Popen's: -N for signal N),
    or None when it ended of its own accord or because it was asked to stop."""
    if returncode >= 0:
        return None
    number = -returncode
    if number in _STOP_SIGNALS:
        return None
    name = _signal_name(number)
    what = signal.strsignal(number) or "unknown signal"
    if number == signal.SIGABRT:
        return RunnerCrashError(
            f"llama.cpp stopped on one of its own checks ({name}) while running {label}; the "
            "model was verified (trusted signature, every byte checked), but llama.cpp may "
            "not accept a value in it, or this is a bug in llama.cpp",
            hint=_ABORT_HINT,
        )
    return RunnerCrashError(
        f"llama.cpp crashed with {name} ({what.lower()}) while running {label}; the model "
        "itself was verified (trusted signature, every byte checked), so the fault is in "
        "llama.cpp or in its build for this CPU",
        hint=_HINTS.get(number, _AMX_HINT if cpu_has_amx else _REBUILD_HINT),
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class LlamaProcess:
    """The child that will run llama.cpp: start it early, then :meth:`run` one job, or
    :meth:`abandon` it when the gate refused the model."""

    def __init__(self) -> None:
        job_read, self._job_write = os.pipe()
        self._report_read, report_write = os.pipe()
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing of ours is written twice
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = InternalError.exit_code
            try:
                os.close(self._job_write)
                os.close(self._report_read)
                code = _child_main(job_read, report_write, parent)
            finally:
                with contextlib.suppress(OSError, ValueError):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)  # never into the CLI's code (click, atexit, buffers)
        os.close(job_read)
        os.close(report_write)
        self._child = _Child(pid)

    def run(self, job: Job) -> int:
        """Hand ``job`` over and wait for the child: its exit status, 128+N when a stop
        signal N ended it; its error raised here; RunnerCrashError when it crashed."""
        saved_terminal = _terminal_settings()
        with contextlib.suppress(BrokenPipeError):  # the child is gone: its status says why
            _write_all(self._job_write, job.to_bytes())
        self._close_job()
        returncode = self._wait()
        report = _read_bounded(self._report_read)
        if report:
            with contextlib.suppress(ValueError):
                value = json.loads(report)
                if isinstance(value, dict) and "error" in value:
                    raise error_from_json(value["error"])
        crash = explain_death(returncode, job.label, cpu_has_amx=returncode < 0 and _has_amx())
        if crash is not None:
            _restore_terminal(saved_terminal)
            interactive = isinstance(job.task, Generate) and job.task.prompt is None
            if interactive or sys.stderr.isatty():
                sys.stderr.write("\n")  # the crash cut a line short: its prompt, or text
            raise crash
        return 128 - returncode if returncode < 0 else returncode

    def abandon(self) -> None:
        """No job will come (the gate refused, or we were interrupted): the child reads
        end of input and exits; it is killed if it does not. Idempotent."""
        self._close_job()
        try:
            self._child.wait(timeout=5)
        except TimeoutError:
            self._child.send_signal(signal.SIGKILL)
            self._child.wait(timeout=60)
        self._close_report()

    def _wait(self) -> int:
        # Blocked signals wait in the queue for sigtimedwait, which says who sent each.
        watched = {*_STOP_SIGNALS, signal.SIGCHLD}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        try:
            while (returncode := self._child.poll()) is None:
                info = signal.sigtimedwait(watched, 0.5)
                if info is None or info.si_signo == signal.SIGCHLD:
                    continue
                if self._passes_on(info):
                    with contextlib.suppress(ProcessLookupError):
                        self._child.send_signal(info.si_signo)
            return returncode
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    @staticmethod
    def _passes_on(info: signal.struct_siginfo) -> bool:
        """Whether a signal the parent got is one the child has not seen.

        The terminal's (Ctrl-C, Ctrl-\\, a hang-up) reach the whole foreground group,
        the child included: never twice. A ``kill`` is passed on, except SIGINT while
        the child reads prompts from a terminal: there a second SIGINT, as from
        ``kill -INT`` of the whole group, would end the session where one stops a
        reply, and such a kill cannot be told from one aimed at the parent alone.
        """
        if info.si_code == _SI_KERNEL:
            return False
        return not (info.si_signo == signal.SIGINT and sys.stdin.isatty())

    def _close_job(self) -> None:
        if self._job_write >= 0:
            os.close(self._job_write)
            self._job_write = -1

    def _close_report(self) -> None:
        if self._report_read >= 0:
            os.close(self._report_read)
            self._report_read = -1

    def __enter__(self) -> LlamaProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abandon()


def _has_amx() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return any(line.startswith("flags") and "amx_int8" in line.split() for line in cpuinfo)
    except OSError:
        return False


def _terminal_settings() -> list[Any] | None:
    if not sys.stdin.isatty():
        return None
    import termios

    try:
        return termios.tcgetattr(sys.stdin.fileno())
    except termios.error:
        return None


def _restore_terminal(saved: list[Any] | None) -> None:
    if saved is None:
        return
    import termios

    with contextlib.suppress(termios.error, OSError):
        termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _read_bounded(fd: int) -> bytes:
    chunks, total = [], 0
    while chunk := os.read(fd, 65536):
        total += len(chunk)
        if total > MAX_REPORT_BYTES:
            return b""  # not our child's doing: no report
        chunks.append(chunk)
    return b"".join(chunks)


# -- the child ----------------------------------------------------------------------------


def _child_main(job_fd: int, report_fd: int, parent: int) -> int:
    import resource
    import traceback

    # A crash is reported by the parent in one line: no core file, no dump of it.
    _, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    die_with(parent)
    # Nothing is imported from wherever the user happens to run `sovnet run`.
    sys.path[:] = [entry for entry in sys.path if entry not in ("", os.getcwd())]
    templates = None
    try:
        from sovnet.run import runner
        from sovnet.run.template_budget import TemplateRenderer

        # Chat templates are rendered in processes forked from this one's renderer: fork
        # it now, while this process has one thread (numpy's import starts another).
        templates = TemplateRenderer.start()
        runner.prewarm()
        with os.fdopen(job_fd, "rb") as source:
            data = source.read()
        if not data:
            return 0  # abandoned: the gate refused the model
        job = Job.from_bytes(data)
        if not job.verbose:
            os.environ["GGML_NO_BACKTRACE"] = "1"  # ggml's abort would run gdb on the terminal
        runner.execute(job, templates)
        return 0
    except KeyboardInterrupt:
        return 130
    except SovnetError as exc:
        report: dict[str, object] = {"error": exc.to_json()}
        code = exc.exit_code
    except BaseException as exc:
        traceback.print_exc()  # a bug: the traceback once, here; the parent says one line
        report = {
            "error": InternalError(
                f"the llama.cpp process failed: {exc!r}",
                hint="this is a bug in sovnet: please report it with the traceback above",
            ).to_json()
        }
        code = InternalError.exit_code
    finally:
        if templates is not None:
            templates.close()
    with contextlib.suppress(OSError):
        _write_all(report_fd, json.dumps(report).encode())
    return code


class _Child:
    """The forked child, as a parent watches it (Popen's conventions: -N for signal N)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while (returncode := self.poll()) is None:
            if time.monotonic() > deadline:
                raise TimeoutError
            time.sleep(0.01)
        return returncode

    def send_signal(self, number: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, number)
