"""``sovnet serve`` as an OpenAI client sees it (issue #12, serve's rough edges): a model
name it does not serve is OpenAI's 404 ``model_not_found``, ``models.retrieve`` and
``/health`` answer, and a port in use is one line before anything says "Serving"."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Runner, write_tiny_gguf
from tests.test_run import PROMPT, Serving

OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture
def tiny(sovnet_with_key: Runner, tmp_path: Path) -> str:
    write_tiny_gguf(tmp_path / "tiny")
    return sovnet_with_key.publish(tmp_path / "tiny", "acme/tiny", "--version", "1.0")


def _call(url: str, body: dict[str, Any] | bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_serve_answers_only_the_model_it_serves(
    sovnet_with_key: Runner, tiny: str, tmp_path: Path
) -> None:
    server = Serving(sovnet_with_key, "acme/tiny", tmp_path)
    try:
        for path, body in (
            ("completions", {"prompt": PROMPT, "max_tokens": 4}),
            ("chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
            ("embeddings", {"input": "Hi"}),
        ):
            status, answer = _call(f"{server.base}/{path}", {**body, "model": "gpt-4o"})
            assert status == 404, (path, answer)
            assert set(answer["error"]) == OPENAI_ERROR_FIELDS
            assert answer["error"]["code"] == "model_not_found"
            assert answer["error"]["type"] == "invalid_request_error"
            assert "gpt-4o" in answer["error"]["message"]
            assert "acme/tiny" in answer["error"]["message"]
        # its own name, and no name at all (the server's one model), are served
        for named in ({"model": "acme/tiny"}, {}):
            status, answer = _call(
                f"{server.base}/completions", {"prompt": PROMPT, "max_tokens": 4, **named}
            )
            assert status == 200, answer
            assert answer["model"] == "acme/tiny"

        status, model = _call(f"{server.base}/models/acme/tiny")  # models.retrieve
        assert status == 200, model
        assert (model["id"], model["object"]) == ("acme/tiny", "model")
        assert isinstance(model["created"], int) and model["owned_by"]
        status, missing = _call(f"{server.base}/models/gpt-4o")
        assert status == 404
        assert missing["error"]["code"] == "model_not_found"

        status, health = _call(f"http://127.0.0.1:{server.port}/health")
        assert status == 200
        assert health["status"] == "ok"
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


def test_a_port_in_use_is_one_line_before_serving(sovnet_with_key: Runner, tiny: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = sovnet_with_key("serve", "acme/tiny", "--port", str(port))
    assert done.returncode == 10, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("sovnet: error:")]
    assert line == f"sovnet: error: cannot serve on 127.0.0.1:{port}: the port is already in use"
    assert "--port" in done.stderr
    assert "Serving" not in done.stderr
    assert "Traceback" not in done.stderr


def test_malformed_and_invalid_requests_are_openai_errors_without_tracebacks(
    sovnet_with_key: Runner, tiny: str, tmp_path: Path
) -> None:
    server = Serving(sovnet_with_key, "acme/tiny", tmp_path)
    try:
        url = f"{server.base}/chat/completions"
        for body in (
            b'{"model": "acme/tiny", "messages": [{"role": "user", "con',  # truncated
            b"[" * 100_000 + b"]" * 100_000,  # nested past any parser's stack
            b'{"messages": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}",
            b"",
            b"\xff\xfe not JSON",
        ):
            status, answer = _call(url, body)
            assert status == 400, (body[:40], answer)
            assert set(answer["error"]) == OPENAI_ERROR_FIELDS
            assert answer["error"]["type"] == "invalid_request_error"
        for path, body, field in (
            ("completions", {"prompt": PROMPT, "max_tokens": -5}, "max_tokens"),
            ("chat/completions", {"model": ["x"], "messages": []}, "model"),
            ("completions", {"prompt": PROMPT, "temperature": "hot"}, "temperature"),
        ):
            status, answer = _call(f"{server.base}/{path}", body)
            assert status in (400, 422), (path, answer)
            assert set(answer["error"]) == OPENAI_ERROR_FIELDS, answer
            assert answer["error"]["type"] == "invalid_request_error"
            assert answer["error"]["param"] == field, answer
            assert field in answer["error"]["message"]
            assert 'File "' not in json.dumps(answer) and ".py" not in json.dumps(answer)
        # still serving, after all of it
        status, answer = _call(f"{server.base}/completions", {"prompt": PROMPT, "max_tokens": 2})
        assert status == 200, answer
    finally:
        code = server.stop()
    log = server.log.read_text()
    assert code == 0, log
    assert "Traceback" not in log and "RecursionError" not in log, log
    assert log.count("invalid request") >= 8, log  # one line each


def test_an_invalid_host_is_refused_before_any_warning(sovnet_with_key: Runner, tiny: str) -> None:
    done = sovnet_with_key("serve", "acme/tiny", "--host", "256.1.1.1")
    assert done.returncode == 10, done.stderr
    assert done.stderr.startswith("sovnet: error: cannot serve on 256.1.1.1:"), done.stderr
    assert "anyone who can reach" not in done.stderr
    assert "Traceback" not in done.stderr
