"""sovnet.run.runner's own decisions: what reaches the terminal, the context size, and
that llama-cpp-python's server settings take nothing from the environment."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sovnet.run.llama_process import DEFAULT_CONTEXT, context_size
from sovnet.run.runner import Output, explicit_settings
from tests.conftest import Runner, write_gguf


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_control_characters_are_replaced_on_a_terminal_only() -> None:
    text = "ok\x1b[2J\x07\tline\n\x9b31m"
    terminal, pipe = Terminal(), io.StringIO()
    Output(terminal).write(text)
    Output(pipe).write(text)
    assert terminal.getvalue() == "ok\ufffd[2J\ufffd\tline\n\ufffd31m"
    assert pipe.getvalue() == text


def test_output_ends_the_line_once() -> None:
    stream = io.StringIO()
    out = Output(stream)
    out.end_line()
    out.write("a")
    out.end_line()
    out.end_line()
    out.write("b\n")
    out.end_line()
    assert stream.getvalue() == "a\nb\n"


def test_context_size() -> None:
    assert context_size(None, None) == DEFAULT_CONTEXT
    assert context_size(None, 256) == 256
    assert context_size(None, 131072) == DEFAULT_CONTEXT
    assert context_size(100, 256) == 100  # asked for: as asked


def test_server_settings_ignore_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    for name, value in {
        "LORA_PATH": "/elsewhere/adapter.gguf",
        "CLIP_MODEL_PATH": "/elsewhere/mmproj.gguf",
        "DRAFT_MODEL": "/elsewhere/draft.gguf",
        "HF_MODEL_REPO_ID": "someone/else",
        "N_CTX": "99",
        "HOST": "0.0.0.0",
        "API_KEY": "from-env",
    }.items():
        monkeypatch.setenv(name, value)
    assert ModelSettings(model="m").lora_path == "/elsewhere/adapter.gguf"  # what we avoid
    model = explicit_settings(ModelSettings, model="ours.gguf", n_ctx=256)
    assert (model.model, model.n_ctx) == ("ours.gguf", 256)
    assert model.lora_path is model.clip_model_path is model.draft_model is None
    assert model.hf_model_repo_id is None
    server = explicit_settings(ServerSettings, host="127.0.0.1", port=8123)
    assert (server.host, server.port, server.api_key) == ("127.0.0.1", 8123, None)


def test_a_header_llama_cpp_cannot_load_is_exit_10(sovnet_with_key: Runner, tmp_path: Path) -> None:
    # A well-formed GGUF header (it passes publish and the gate) without the
    # tensors of a llama model: llama.cpp itself refuses it, and says so.
    write_gguf(tmp_path / "m" / "not-a-llama.gguf")
    sovnet_with_key.publish(tmp_path / "m", "acme/broken")
    done = sovnet_with_key("run", "acme/broken", "-p", "Hello")
    assert done.returncode == 10, done.stderr
    assert "llama.cpp could not load not-a-llama.gguf" in done.stderr
