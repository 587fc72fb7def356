"""Parse GGUF headers in a child process that may crash, run out of memory or time.

llama.cpp's own GGUF parser has had heap overflows on crafted headers, so the run
gate parses every GGUF file it is about to hand over with sovnet's bounded parser
(formats/gguf.py) first. That parser is pure Python and checks every count and
length against the file before using it; it still runs in a child process under
resource limits, so that even a bug of ours, or of the runtime, on hostile bytes
costs a refused model and never the calling process:

* ``RLIMIT_AS`` and ``RLIMIT_DATA``: the child may map, and make writable, at most
  ``memory_bytes`` more than it inherited (it may also reuse heap its parent had
  freed but kept mapped: a few MiB for the CLI, which is what forks it);
* ``RLIMIT_CPU``: ``cpu_seconds`` of CPU time (then the kernel kills it);
* a wall-clock deadline, after which the parent kills it;
* ``RLIMIT_CORE`` 0: no core file of a crash on hostile input.

Why ``fork`` and not a fresh interpreter: the child starts with the parser already
imported. Measured on the 2-core dev VM: fork and exit about 1-2 ms;
``python -I -S -c 'import sovnet.formats.gguf'`` 25-30 ms, which ``sovnet run``
would pay on every start. Forking is only safe in a process with one thread (the
others would vanish in the child, possibly holding locks), so :func:`check_headers`
refuses to fork from a threaded process. The CLI has one thread here; the daemon
never parses for a runner.

The child reports on a pipe, one JSON line per event: ``{"file": i}`` before it
parses file ``i``, then ``{"ok": facts}`` or ``{"error": {...}}``. A child that
dies mid-file is thereby blamed on the file it was parsing.
"""

from __future__ import annotations

import json
import os
import resource
import select
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sovnet.errors import MalformedFileError
from sovnet.formats.gguf import GGUFFacts, parse_gguf

MAX_REPORT_BYTES = 1024 * 1024
_REFUSE_HINT = (
    "sovnet will not hand this file to llama.cpp; `sovnet verify CID` shows whether it "
    "is the file the publisher signed"
)


@dataclass(frozen=True)
class Limits:
    """What one header check may use. A real model's header (a 262k-token
    vocabulary, a few thousand tensors) takes well under a second and a few tens
    of MiB; these bounds leave room for that on a slow machine, and no more."""

    memory_bytes: int = 1024 * 1024 * 1024
    cpu_seconds: int = 30
    wall_seconds: float = 60.0


@dataclass(frozen=True)
class HeaderReport:
    """What the runner needs from a checked header."""

    facts: GGUFFacts
    context_length: int | None


def check_headers(
    files: Sequence[tuple[str, Path]], limits: Limits = Limits()
) -> list[HeaderReport]:
    """What the header of each ``(name, path)`` GGUF file says, parsed in a limited child.

    Raises MalformedFileError naming the first file whose header is refused, or
    whose check crashed, ran out of memory or time.
    """
    if not files:
        return []
    if threading.active_count() > 1:
        raise RuntimeError("check_headers forks, which is unsafe with other threads running")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(write_fd, [path for _, path in files], limits)
    os.close(write_fd)
    finished = False
    try:
        report, timed_out = _read_report(read_fd, limits.wall_seconds)
        finished = not timed_out
    finally:
        os.close(read_fd)
        if not finished:  # out of time, or we are interrupted: the child goes too
            os.kill(pid, 9)  # SIGKILL (the signal module costs ms to import; see below)
        _, status = os.waitpid(pid, 0)
    return _interpret(files, report, status, timed_out, limits)


# -- the child --------------------------------------------------------------------


def _child(write_fd: int, paths: list[Path], limits: Limits) -> None:
    code = 70  # EX_SOFTWARE, unless we get to the end
    out_of_memory: dict[str, str | None] = {"message": _memory_message(limits)}
    try:
        _apply_limits(limits)
        for index, path in enumerate(paths):
            _send(write_fd, {"file": index})
            error: dict[str, str | None] | None = None
            try:
                report = _parse(path)
            except MalformedFileError as exc:
                error = {"message": exc.message, "hint": exc.hint}
            except MemoryError:
                error = out_of_memory
            except OSError as exc:
                error = {"message": f"cannot be read ({exc.strerror})"}
            # Reported only here, outside the handlers: until they end, the
            # traceback keeps the parser's data alive (all of memory, after a
            # MemoryError).
            if error is not None:
                _send(write_fd, {"error": error})
                break
            _send(write_fd, {"ok": report})
        code = 0
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def _apply_limits(limits: Limits) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # SIGXCPU at the soft limit; SIGKILL a second later if it were ever caught.
    _lower(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1)
    # The child inherits its parent's mappings; it may add memory_bytes to them.
    # RLIMIT_AS alone is not enough: malloc arenas of the parent's former threads
    # are reserved address space the child could fill without mapping anything
    # new. RLIMIT_DATA also counts reserved memory that becomes writable.
    status = _proc_status()
    mapped, data = status["VmSize"], status["VmData"]
    _lower(resource.RLIMIT_AS, mapped + limits.memory_bytes, mapped + limits.memory_bytes)
    _lower(resource.RLIMIT_DATA, data + limits.memory_bytes, data + limits.memory_bytes)


def _proc_status() -> dict[str, int]:
    """The ``kB`` sizes of /proc/self/status, in bytes."""
    sizes = {}
    with open("/proc/self/status", "rb") as handle:
        for line in handle:
            name, _, value = line.decode("ascii", "replace").partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                sizes[name] = int(parts[0]) * 1024
    return sizes


def _lower(which: int, soft: int, hard: int) -> None:
    """Set a limit, never above the hard limit we were given."""
    _, given = resource.getrlimit(which)
    if given != resource.RLIM_INFINITY:
        soft, hard = min(soft, given), min(hard, given)
    resource.setrlimit(which, (soft, hard))


def _parse(path: Path) -> dict[str, object]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MalformedFileError("is not a regular file")

        def read_at(offset: int, n: int) -> bytes:
            return os.pread(fd, n, offset)

        header = parse_gguf(read_at, info.st_size)
        return {"facts": asdict(header.facts), "context_length": header.context_length}
    finally:
        os.close(fd)


def _send(fd: int, event: dict[str, object]) -> None:
    data = json.dumps(event).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


def _memory_message(limits: Limits) -> str:
    memory = limits.memory_bytes // (1024 * 1024)
    return f"the header check needed more than the {memory} MiB it may use"


# -- the parent -------------------------------------------------------------------


def _read_report(fd: int, wall_seconds: float) -> tuple[bytes, bool]:
    """Everything the child wrote, and whether it ran out of wall-clock time."""
    deadline = time.monotonic() + wall_seconds
    chunks: list[bytes] = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        total += len(chunk)
        if total > MAX_REPORT_BYTES:  # not our child's doing; treat it as a hang
            return b"".join(chunks), True
        chunks.append(chunk)


def _interpret(
    files: Sequence[tuple[str, Path]],
    report: bytes,
    status: int,
    timed_out: bool,
    limits: Limits,
) -> list[HeaderReport]:
    reports: list[HeaderReport] = []
    for line in report.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            break  # a line cut short by the child's death; its status says why
        if "ok" in event:
            ok = event["ok"]
            reports.append(HeaderReport(GGUFFacts(**ok["facts"]), ok["context_length"]))
        elif "error" in event:
            error = event["error"]
            raise MalformedFileError(
                f"{files[len(reports)][0]}: {error['message']}",
                hint=error.get("hint") or _REFUSE_HINT,
            )
    if len(reports) == len(files):
        # Every file's verdict arrived whole: the child's work is done, even when
        # the deadline passed between its last line and the end of the pipe.
        return reports
    import signal  # only on this path: its import builds enums, a few ms on every run

    memory = limits.memory_bytes // (1024 * 1024)
    if timed_out:
        why = f"did not finish within {limits.wall_seconds:g} s"
    elif os.WIFSIGNALED(status):
        sig = signal.Signals(os.WTERMSIG(status))
        why = f"was killed by {sig.name}"
        if sig in (signal.SIGXCPU, signal.SIGKILL):
            why += f" (it may use {limits.cpu_seconds} s of CPU time)"
        elif sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT):
            why += f" (it may use {memory} MiB of memory)"
    else:
        why = f"stopped with exit status {os.WEXITSTATUS(status)}"
    raise MalformedFileError(
        f"{files[len(reports)][0]}: the GGUF header check {why}; "
        "refusing to hand this file to llama.cpp",
        hint=_REFUSE_HINT,
    )
