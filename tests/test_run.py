"""``sovnet run`` and ``sovnet serve``, as a user runs them: the real CLI in a
subprocess, real llama.cpp on the tiny GGUF, real HTTP on 127.0.0.1.

"llama.cpp never started" is checked from outside the process tree: with
``LD_DEBUG=files`` the dynamic loader reports every shared library any process
loads, on stderr. A run that llama.cpp took part in lists libllama/libggml (the
positive control in the first test); a refused run must list neither.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    SOVNET,
    Runner,
    cli_env,
    flip_byte,
    write_safetensors,
    write_tiny_gguf,
)
from tests.signed_store import commit_signed
from tests.test_gate import HOSTILE, tiny_bytes

PROMPT = "Hello world"
LLAMA_LIBRARIES = ("libllama", "libggml")


def _loaded_llama(stderr: str) -> bool:
    return any(name in stderr for name in LLAMA_LIBRARIES)


def _errors_only(stderr: str) -> str:
    """stderr without the dynamic loader's LD_DEBUG lines ("  1234:\tfile=...")."""
    return "\n".join(
        line for line in stderr.splitlines() if not line.lstrip().split(":")[0].isdigit()
    )


@pytest.fixture
def tiny_cid(sovnet_with_key: Runner, tmp_path: Path) -> str:
    model = tmp_path / "tiny"
    write_tiny_gguf(model)
    (model / "README.md").write_text("# tiny\n")
    return sovnet_with_key.publish(model, "acme/tiny", "--version", "1.0")


# -- it runs -------------------------------------------------------------------------------


def test_run_generates_what_llama_cpp_generates(
    sovnet_with_key: Runner, tiny_cid: str, tmp_path: Path
) -> None:
    done = sovnet_with_key(
        "run", "acme/tiny", "-p", PROMPT, "-n", "16", "--seed", "7", env={"LD_DEBUG": "files"}
    )
    assert done.returncode == 0, done.stderr
    assert _loaded_llama(done.stderr)  # the probe sees llama.cpp when it does run
    assert "error" not in _errors_only(done.stderr)
    generated = done.stdout.removesuffix("\n")
    assert generated

    # The same file, seed and settings through llama-cpp-python directly.
    [source] = write_tiny_gguf(tmp_path / "again")
    script = (
        "import sys, llama_cpp\n"
        "llm = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=256, seed=7, verbose=False)\n"
        "out = llm.create_completion(sys.argv[2], max_tokens=16)\n"
        "sys.stdout.write(out['choices'][0]['text'])\n"
    )
    direct = subprocess.run(
        [sys.executable, "-c", script, str(source), PROMPT],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert generated == direct.stdout


def test_run_by_cid_with_chat_template(sovnet_with_key: Runner, tiny_cid: str) -> None:
    done = sovnet_with_key("run", tiny_cid, "-p", "Hello", "-n", "8", "--chat", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_run_without_prompt_reads_prompts_until_end_of_input(
    sovnet_with_key: Runner, tiny_cid: str
) -> None:
    done = subprocess.run(
        [str(SOVNET), "run", "acme/tiny@1.0", "-n", "6", "--seed", "3", "--chat"],
        input="Hello\nthe model\n",
        capture_output=True,
        text=True,
        env=cli_env(sovnet_with_key.state_dir),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "is verified and loaded" in done.stderr
    assert done.stderr.count("> ") == 3  # two prompts answered, then end of input
    assert done.stdout.strip() and done.stdout.endswith("\n")


@pytest.fixture(params=["Q8_0", "Q4_0", "Q4_K"])
def quantised_cid(request: pytest.FixtureRequest, sovnet_with_key: Runner, tmp_path: Path) -> str:
    """A published tiny model whose weight matrices are quantised: llama.cpp computes
    with its quantised kernels (as for real models), not the F32 ones."""
    model = tmp_path / "quantised"
    write_tiny_gguf(model, quant=request.param)
    return sovnet_with_key.publish(model, f"acme/tiny-{request.param.lower()}")


def test_quantised_models_run(sovnet_with_key: Runner, quantised_cid: str) -> None:
    done = sovnet_with_key("run", quantised_cid, "-p", PROMPT, "-n", "24", "--seed", "7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_split_model_runs_from_its_first_split(sovnet_with_key: Runner, tmp_path: Path) -> None:
    model = tmp_path / "split"
    write_tiny_gguf(model, split=3)
    sovnet_with_key.publish(model, "acme/split")
    done = sovnet_with_key("run", "acme/split", "-p", PROMPT, "-n", "8", "--seed", "7")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


# -- it refuses, before llama.cpp starts ---------------------------------------------------


def test_flipped_byte_refuses_with_exit_5_naming_the_file_before_llama_cpp(
    sovnet_with_key: Runner, tiny_cid: str, state_dir: Path
) -> None:
    flip_byte(state_dir / "models" / tiny_cid / "sovnet-tiny.gguf", 300_000)
    done = sovnet_with_key("run", "acme/tiny", "-p", PROMPT, env={"LD_DEBUG": "files"})
    assert done.returncode == 5, done.stderr
    errors = _errors_only(done.stderr)
    assert "sovnet-tiny.gguf of acme/tiny differs from the manifest" in errors
    assert "Traceback" not in errors
    assert not _loaded_llama(done.stderr)
    assert done.stdout == ""


def test_tampered_file_with_a_forged_stamp_is_caught_by_verify_full(
    sovnet_with_key: Runner, tiny_cid: str, state_dir: Path
) -> None:
    view = state_dir / "models" / tiny_cid / "sovnet-tiny.gguf"
    [stamp_file] = [
        p
        for p in (state_dir / "stamps").iterdir()
        if os.path.samefile(state_dir / "blobs" / p.name, view)
    ]
    flip_byte(view, 300_000)
    # Someone who can write the store can also rewrite the stamp to match...
    info = os.stat(view)
    stamp = json.loads(stamp_file.read_bytes())
    stamp.update(mtime_ns=info.st_mtime_ns, ctime_ns=info.st_ctime_ns)
    stamp_file.write_text(json.dumps(stamp))
    forged = sovnet_with_key("run", "acme/tiny", "-p", PROMPT, "-n", "1")
    assert forged.returncode == 0  # stamps are a cache against accidents, not a signature
    # ...which is what --verify-full is for.
    done = sovnet_with_key("run", "acme/tiny", "-p", PROMPT, "--verify-full")
    assert done.returncode == 5, done.stderr
    assert "sovnet-tiny.gguf" in done.stderr


@pytest.mark.parametrize(("corrupt", "phrase"), HOSTILE, ids=lambda v: getattr(v, "__name__", ""))
def test_hostile_header_is_refused_by_the_pre_check_before_llama_cpp(
    sovnet_with_key: Runner, state_dir: Path, tmp_path: Path, corrupt: Any, phrase: str
) -> None:
    cid = commit_signed(state_dir, {"model.gguf": corrupt(tiny_bytes(tmp_path))})
    assert sovnet_with_key("verify", cid).returncode == 0  # signed, trusted and intact
    done = sovnet_with_key("run", cid, "-p", PROMPT, env={"LD_DEBUG": "files"})
    assert done.returncode == 4, done.stderr
    errors = _errors_only(done.stderr)
    assert errors.startswith("sovnet: error: model.gguf: "), errors
    assert phrase in errors
    assert "Traceback" not in errors
    assert not _loaded_llama(done.stderr)


def test_untrusted_manifest_is_refused_with_exit_6(sovnet_with_key: Runner, tiny_cid: str) -> None:
    key_id = sovnet_with_key.json("key", "show")["key_id"]
    sovnet_with_key("trust", "rm", key_id, check=True)
    for ref in ("acme/tiny", tiny_cid):
        done = sovnet_with_key("run", ref, "-p", PROMPT, env={"LD_DEBUG": "files"})
        assert done.returncode == 6, done.stderr
        assert "no trusted key signed" in done.stderr or "no valid signature" in done.stderr
        assert "sovnet trust add" in done.stderr
        assert not _loaded_llama(done.stderr)


def test_safetensors_only_model_explains_and_points_to_export(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    model = tmp_path / "st"
    write_safetensors(model / "model.safetensors")
    sovnet_with_key.publish(model, "acme/st")
    done = sovnet_with_key("run", "acme/st", "-p", PROMPT)
    assert done.returncode == 10
    assert "acme/st holds safetensors weights; llama.cpp runs GGUF files only" in done.stderr
    assert "hint: `sovnet export acme/st --hf-cache`" in done.stderr


def test_ambiguous_and_unknown_names(sovnet_with_key: Runner, tmp_path: Path) -> None:
    for version, seed in (("1.0", 1), ("2.0", 2)):
        write_tiny_gguf(tmp_path / version, seed=seed)
        sovnet_with_key.publish(tmp_path / version, "acme/tiny", "--version", version)
    ambiguous = sovnet_with_key("run", "acme/tiny", "-p", PROMPT)
    assert ambiguous.returncode == 4
    assert "names 2 trusted models" in ambiguous.stderr
    unknown = sovnet_with_key("run", "acme/nothing", "-p", PROMPT)
    assert unknown.returncode == 3
    assert "`sovnet fetch CID`" in unknown.stderr  # how to get it, not only where to look
    done = sovnet_with_key("run", "acme/tiny@2.0", "-p", PROMPT, "-n", "4")
    assert done.returncode == 0, done.stderr


# -- llama.cpp crashes, or is stopped --------------------------------------------------------


class Interactive:
    """``sovnet run MODEL`` at its prompt, its stdin a pipe kept open."""

    def __init__(self, runner: Runner, model: str, tmp_path: Path) -> None:
        self.log = tmp_path / "run.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(SOVNET), "run", model, "-n", "4"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=cli_env(runner.state_dir),
            )
        _wait_for(lambda: "is verified and loaded" in self.log.read_text(), self.process)

    def llama_child(self) -> int:
        return _llama_child(self.process.pid)

    def finish(self) -> tuple[int, str]:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=60), self.log.read_text()


def _llama_child(sovnet_pid: int) -> int:
    """The pid of the child that runs llama.cpp: sovnet's one child once the model is
    loaded (the gate's child has ended by then)."""
    children = Path(f"/proc/{sovnet_pid}/task/{sovnet_pid}/children")
    [pid] = [int(p) for p in children.read_text().split()]
    return pid


def _wait_for(condition: Any, process: subprocess.Popen[Any], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"exited {process.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("crash", "hint"),
    [
        # (on a CPU with AMX, the hint names AMX: both say what to rebuild)
        (signal.SIGSEGV, "rebuild llama-cpp-python"),
        (signal.SIGILL, "instructions this machine does not have"),
    ],
)
def test_a_crash_of_llama_cpp_is_one_line_and_exit_11(
    sovnet_with_key: Runner, tiny_cid: str, tmp_path: Path, crash: signal.Signals, hint: str
) -> None:
    run = Interactive(sovnet_with_key, "acme/tiny", tmp_path)
    os.kill(run.llama_child(), crash)
    code, stderr = run.finish()
    assert code == 11, stderr
    [line] = [line for line in stderr.splitlines() if line.startswith("sovnet: error:")]
    assert line.startswith(f"sovnet: error: llama.cpp crashed with {crash.name} (")
    assert f"while running acme/tiny 1.0 ({tiny_cid})" in line
    assert "the model itself was verified" in line
    assert hint in stderr
    assert "core dumped" not in stderr.lower()
    assert "Traceback" not in stderr
    # the child had no core file to write
    assert not list(Path.cwd().glob("core*"))


def test_a_model_llama_cpp_aborts_on_is_exit_11_and_points_to_verbose(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    # Signed, intact and within sovnet's header limits, but llama.cpp checks its
    # expert count against its own maximum with GGML_ASSERT, which aborts.
    write_tiny_gguf(tmp_path / "m", extra_uint32={"llama.expert_count": 100_000})
    sovnet_with_key.publish(tmp_path / "m", "acme/experts")
    done = sovnet_with_key("run", "acme/experts", "-p", PROMPT, "-n", "4")
    assert done.returncode == 11, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("sovnet: error:")]
    assert "llama.cpp stopped on one of its own checks (SIGABRT) while running acme/experts" in line
    assert "--verbose" in done.stderr
    assert "Traceback" not in done.stderr and "gdb" not in done.stderr
    verbose = sovnet_with_key("run", "acme/experts", "-p", PROMPT, "-n", "4", "--verbose")
    assert "GGML_ASSERT" in verbose.stderr  # llama.cpp's own reason, when asked for


def test_a_chat_template_llama_cpp_python_cannot_compile_is_exit_10(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    write_tiny_gguf(tmp_path / "m", chat_template="{% for %}")
    sovnet_with_key.publish(tmp_path / "m", "acme/template")
    for args in (["-p", PROMPT], ["-p", PROMPT, "--chat"]):
        done = sovnet_with_key("run", "acme/template", *args, "-n", "4")
        assert done.returncode == 10, done.stderr
        [line] = [line for line in done.stderr.splitlines() if line.startswith("sovnet: error:")]
        assert line.startswith("sovnet: error: the chat template of acme/template (")
        assert "is not one llama-cpp-python can use" in line
        assert "Traceback" not in done.stderr


def test_a_prompt_too_long_or_not_utf8_is_exit_4(sovnet_with_key: Runner, tiny_cid: str) -> None:
    long = sovnet_with_key("run", "acme/tiny", "-p", "Hello world " * 400, "-n", "4")
    assert long.returncode == 4, long.stderr
    assert "exceed context window" in long.stderr and "--ctx-size" in long.stderr
    assert "Traceback" not in long.stderr
    done = subprocess.run(
        [str(SOVNET), "run", "acme/tiny", "-p", b"Hi\xff\xfe", "-n", "4"],
        capture_output=True,
        text=True,
        env=cli_env(sovnet_with_key.state_dir),
        timeout=60,
    )
    assert done.returncode == 4, done.stderr
    assert "the prompt is not valid UTF-8" in done.stderr


def test_a_stopped_run_stops_llama_cpp_quietly(
    sovnet_with_key: Runner, tiny_cid: str, tmp_path: Path
) -> None:
    run = Interactive(sovnet_with_key, "acme/tiny", tmp_path)
    child = run.llama_child()
    run.process.terminate()  # SIGTERM to sovnet alone: it passes it on
    # With stdin still open: closed at once, the child could read its end and exit 0
    # before a loaded machine let sovnet pass the signal on.
    run.process.wait(timeout=60)
    code, stderr = run.finish()
    assert code == 128 + signal.SIGTERM
    assert "error" not in stderr
    assert not Path(f"/proc/{child}").exists()


def test_llama_cpp_dies_with_a_killed_sovnet(
    sovnet_with_key: Runner, tiny_cid: str, tmp_path: Path
) -> None:
    run = Interactive(sovnet_with_key, "acme/tiny", tmp_path)
    child = run.llama_child()
    run.process.kill()
    run.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists()


# -- serve ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _http(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        value: dict[str, Any] = json.loads(response.read())
        return value


class Serving:
    """``sovnet serve MODEL`` on a free port of 127.0.0.1, answering."""

    def __init__(self, runner: Runner, model: str, tmp_path: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}/v1"
        env = cli_env(runner.state_dir)
        # llama-cpp-python's server would load these instead of, or beside, our model.
        env.update(CONFIG_FILE=str(tmp_path / "none.json"), LORA_PATH=str(tmp_path / "no.gguf"))
        self.log = tmp_path / "serve.log"
        with open(self.log, "wb") as log_file:
            self.process = subprocess.Popen(
                [str(SOVNET), "serve", model, "--port", str(self.port)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.models: dict[str, Any] | None = None

        def answers() -> bool:
            try:
                self.models = _http(f"{self.base}/models")
            except (urllib.error.URLError, ConnectionError):
                return False
            return True

        try:
            _wait_for(answers, self.process)
        except AssertionError:
            self.stop()
            raise AssertionError(self.log.read_text()) from None

    def stop(self) -> int:
        """Ctrl-C, as a user stops it; its exit status."""
        self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def test_serve_answers_openai_completions_and_chat(
    sovnet_with_key: Runner, tiny_cid: str, tmp_path: Path
) -> None:
    server = Serving(sovnet_with_key, "acme/tiny", tmp_path)
    try:
        assert server.models is not None
        assert [m["id"] for m in server.models["data"]] == ["acme/tiny"]

        completion = _http(
            f"{server.base}/completions",
            {"model": "acme/tiny", "prompt": PROMPT, "max_tokens": 8, "seed": 7},
        )
        assert completion["object"] == "text_completion"
        assert isinstance(completion["choices"][0]["text"], str)
        assert completion["usage"]["completion_tokens"] >= 1

        chat = _http(
            f"{server.base}/chat/completions",
            {
                "model": "acme/tiny",
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 8,
                "seed": 7,
            },
        )
        assert chat["object"] == "chat.completion"
        assert chat["choices"][0]["message"]["role"] == "assistant"
        assert isinstance(chat["choices"][0]["message"]["content"], str)
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
    assert (
        f"Serving acme/tiny 1.0 ({tiny_cid}) on http://127.0.0.1:{server.port}/v1"
        in server.log.read_text()
    )


def test_quantised_models_serve(
    sovnet_with_key: Runner, quantised_cid: str, tmp_path: Path
) -> None:
    server = Serving(sovnet_with_key, quantised_cid, tmp_path)
    try:
        assert server.models is not None
        [name] = [m["id"] for m in server.models["data"]]
        completion = _http(
            f"{server.base}/completions",
            # the end-of-text token barred, so that text always comes back
            {
                "model": name,
                "prompt": PROMPT,
                "max_tokens": 16,
                "seed": 7,
                "logit_bias": {"2": -100},
            },
        )
        assert completion["choices"][0]["text"].strip()
        assert completion["usage"]["completion_tokens"] == 16
    finally:
        server.stop()


def test_a_crash_of_llama_cpp_under_serve_is_exit_11(
    sovnet_with_key: Runner, tiny_cid: str, tmp_path: Path
) -> None:
    server = Serving(sovnet_with_key, "acme/tiny", tmp_path)
    try:
        os.kill(_llama_child(server.process.pid), signal.SIGSEGV)
        code = server.process.wait(timeout=30)
    finally:
        if server.process.poll() is None:
            server.stop()
    log = server.log.read_text()
    assert code == 11, log
    assert "llama.cpp crashed with SIGSEGV (segmentation fault) while running acme/tiny 1.0" in log
    assert "Traceback" not in log


def test_serve_refuses_a_tampered_model_without_listening(
    sovnet_with_key: Runner, tiny_cid: str, state_dir: Path
) -> None:
    flip_byte(state_dir / "models" / tiny_cid / "sovnet-tiny.gguf", 300_000)
    port = _free_port()
    done = sovnet_with_key("serve", "acme/tiny", "--port", str(port), env={"LD_DEBUG": "files"})
    assert done.returncode == 5
    assert "sovnet-tiny.gguf" in _errors_only(done.stderr)
    assert not _loaded_llama(done.stderr)
