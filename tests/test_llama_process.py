"""sovnet.run.llama_process's own decisions: what a child's death means to the user, and
the job that crosses the pipe. (The real child, crashing and being stopped, is
tested through the CLI in tests/test_run.py.)"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sovnet.errors import RunnerCrashError
from sovnet.run.llama_process import Generate, Job, Serve, explain_death

LABEL = "acme/tiny 1.0 (bafkr4i...)"


@pytest.mark.parametrize(
    ("number", "words", "hint"),
    [
        (signal.SIGSEGV, "SIGSEGV (segmentation fault)", "rebuild llama-cpp-python for this CPU"),
        (signal.SIGBUS, "SIGBUS (bus error)", "llama.cpp/issues"),
        (signal.SIGILL, "SIGILL (illegal instruction)", "instructions this machine does not have"),
        (signal.SIGKILL, "SIGKILL (killed)", "out-of-memory killer"),
    ],
)
def test_a_crash_names_the_model_the_signal_and_what_to_try(
    number: int, words: str, hint: str
) -> None:
    error = explain_death(-number, LABEL)
    assert isinstance(error, RunnerCrashError)
    assert error.exit_code == 11
    assert error.message.startswith(f"llama.cpp crashed with {words} while running {LABEL}; ")
    assert "the model itself was verified" in error.message
    assert "\n" not in error.message
    assert error.hint is not None and hint in error.hint


def test_on_a_cpu_with_amx_the_hint_names_amx() -> None:
    error = explain_death(-signal.SIGSEGV, LABEL, cpu_has_amx=True)
    assert error is not None and error.hint is not None
    assert "this CPU has AMX" in error.hint and "#20824" in error.hint
    illegal = explain_death(-signal.SIGILL, LABEL, cpu_has_amx=True)
    assert illegal is not None and illegal.hint is not None
    assert "instructions this machine does not have" in illegal.hint


def test_an_abort_is_llama_cpp_s_own_check_and_points_to_verbose() -> None:
    error = explain_death(-signal.SIGABRT, LABEL, cpu_has_amx=True)
    assert isinstance(error, RunnerCrashError) and error.exit_code == 11
    assert error.message.startswith(
        f"llama.cpp stopped on one of its own checks (SIGABRT) while running {LABEL}; "
    )
    assert error.hint is not None and "--verbose" in error.hint and "AMX" not in error.hint


def test_a_child_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # middle forks a child that asks to die with middle, then middle is killed.
    script = (
        "import os, sys, time\n"
        "from sovnet.run.parent_death import die_with\n"
        "parent = os.getpid()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    die_with(parent)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(60)\n"
    )
    middle = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert middle.stdout is not None
    child = int(middle.stdout.readline())
    time.sleep(0.2)  # let the child ask before its parent goes
    middle.kill()
    middle.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and _state(child) != "Z":
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.02)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


@pytest.mark.parametrize("returncode", [0, 1, 10, 130, -signal.SIGINT, -signal.SIGTERM])
def test_an_exit_or_a_stop_request_is_not_a_crash(returncode: int) -> None:
    assert explain_death(returncode, LABEL) is None


def test_an_unknown_signal_number_is_still_explained() -> None:
    error = explain_death(-63, LABEL)
    assert error is not None
    assert "llama.cpp crashed with" in error.message


@given(
    prompt=st.none() | st.text(),
    label=st.text(),
    n_ctx=st.integers(16, 1 << 24),
    seed=st.none() | st.integers(0, 2**32 - 1),
    chat=st.booleans(),
)
def test_a_job_crosses_the_pipe_unchanged(
    prompt: str | None, label: str, n_ctx: int, seed: int | None, chat: bool
) -> None:
    generate = Job(Path("/s/models/x/m.gguf"), label, n_ctx, chat, Generate(prompt, 8, chat, seed))
    serve = Job(Path("/m.gguf"), label, n_ctx, False, Serve("::1", 8000, label))
    for job in (generate, serve):
        assert Job.from_bytes(job.to_bytes()) == job
