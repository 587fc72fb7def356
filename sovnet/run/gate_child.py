"""The run gate in a forked child: ``sovnet run`` and ``serve`` start it first thing.

:func:`admit_in_child` runs :func:`~sovnet.run.admission.admit` in a forked child
and hands back its verdict, while the CLI's other child (llama_process.py)
imports llama-cpp-python's Python dependencies on the other core; the modules the
gate needs are imported in the child, after the fork (admission.py says why).
Fork only from a process with one thread: the others would not be in the child.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from sovnet.errors import IntegrityError, RunnerError, SovnetError, error_from_json
from sovnet.run.admission import Admission, admit
from sovnet.run.parent_death import die_with

MAX_VERDICT_BYTES = 4 * 1024 * 1024


class PendingAdmission:
    """A gate running in a forked child; :meth:`result` waits for its verdict."""

    def __init__(self, pid: int, read_fd: int) -> None:
        self._pid = pid
        self._fd = read_fd
        self._status: int | None = None

    def result(self) -> Admission:
        """The admission, or the gate's error raised here."""
        chunks = []
        total = 0
        while chunk := os.read(self._fd, 65536):
            total += len(chunk)
            if total > MAX_VERDICT_BYTES:  # not our child's doing: stop it, refuse below
                self.close()
                break
            chunks.append(chunk)
        else:
            _, self._status = os.waitpid(self._pid, 0)
        assert self._status is not None
        return _verdict(b"".join(chunks) if total <= MAX_VERDICT_BYTES else b"", self._status)

    def close(self) -> None:
        """Stop the child if it is still working (we were interrupted); idempotent."""
        if self._status is None:
            import signal

            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signal.SIGKILL)
            _, self._status = os.waitpid(self._pid, 0)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def admit_in_child(
    state_dir: Path,
    ref: str,
    *,
    verify_full: bool = False,
    gguf_file: str | None = None,
    allow_revoked: bool = False,
) -> PendingAdmission:
    """Start :func:`admit` for a runnable model in a forked child.

    Call it from a process with one thread (fork copies only the caller's).
    """
    read_fd, write_fd = os.pipe()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        die_with(parent)
        _child(write_fd, state_dir, ref, verify_full, gguf_file, allow_revoked)
    os.close(write_fd)
    return PendingAdmission(pid, read_fd)


def _child(
    write_fd: int,
    state_dir: Path,
    ref: str,
    verify_full: bool,
    gguf_file: str | None,
    allow_revoked: bool,
) -> None:
    code = 70
    try:
        try:
            from sovnet.store.keyfiles import NodeFiles
            from sovnet.store.store import Store

            admission = admit(
                Store(state_dir),
                NodeFiles(state_dir).load_trust(),
                ref,
                verify_full=verify_full,
                gguf_file=gguf_file,
                allow_revoked=allow_revoked,
            )
            verdict: dict[str, object] = {"admitted": admission.to_json()}
        except SovnetError as exc:
            verdict = {"error": exc.to_json()}
        except BaseException:
            import traceback

            verdict = {"bug": traceback.format_exc()[-4000:]}
        data = json.dumps(verdict).encode()
        while data:
            data = data[os.write(write_fd, data) :]
        code = 0
    finally:
        os._exit(code)  # never return into the parent's code (click, atexit, buffers)


def _verdict(data: bytes, status: int) -> Admission:
    import signal

    try:
        verdict = json.loads(data) if data else None
    except ValueError:
        verdict = None
    if isinstance(verdict, dict):
        if "admitted" in verdict:
            return Admission.from_json(verdict["admitted"])
        if "error" in verdict:
            raise error_from_json(verdict["error"])
        if "bug" in verdict:
            raise RuntimeError(f"the gate process failed:\n{verdict['bug']}")
    if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGBUS:
        raise IntegrityError(
            "a file of the model was truncated while it was being re-hashed; refusing to run it",
            hint="run `sovnet verify CID` once nothing is changing the store",
        )
    how = (
        f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
        if os.WIFSIGNALED(status)
        else f"exited with status {os.WEXITSTATUS(status)}"
    )
    raise RunnerError(f"the gate process {how} without a verdict; refusing to run the model")
