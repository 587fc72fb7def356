"""Chat templates under a budget (issue #12, defect 8), through the real CLI: tiny models
whose ``tokenizer.chat_template`` is hostile, run with ``sovnet run --chat`` and
``sovnet serve`` on real llama.cpp. (The renderer itself: tests/test_template_budget.py.)"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SOVNET, Runner, cli_env, write_tiny_gguf
from tests.test_run import Serving

# Ten thousand million iterations: hours of Python, unless something stops it.
NESTED_LOOPS = (
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{{ messages[0]['content'] }}"
)
# jinja2's sandbox refuses a range longer than 100000 with an OverflowError.
TOO_LONG_A_RANGE = "{% for i in range(1000000) %}{% endfor %}{{ messages[0]['content'] }}"
# The sandbox refuses access to attributes that start with an underscore.
UNSAFE_ATTRIBUTE = "{{ ''.__class__.__mro__ }}"
# How templates turn a conversation down (Hugging Face's convention).
REFUSES = "{{ raise_exception('Conversation roles must alternate user/assistant') }}"
# Generous: the budget is seconds; loading the tiny model, a second.
WITHIN = 60


def _publish(runner: Runner, tmp_path: Path, name: str, template: str) -> None:
    write_tiny_gguf(tmp_path / name, chat_template=template)
    runner.publish(tmp_path / name, f"acme/{name}", "--version", "1.0")


def _run(runner: Runner, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SOVNET), "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(runner.state_dir),
        timeout=WITHIN,
    )


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "sovnet: error:" in line]


@pytest.mark.parametrize(
    ("name", "template", "words"),
    [
        ("loops", NESTED_LOOPS, "went over its budget"),
        ("range", TOO_LONG_A_RANGE, "its sandbox refused"),
        ("unsafe", UNSAFE_ATTRIBUTE, "its sandbox refused"),
    ],
)
def test_a_template_over_its_budget_or_refused_by_the_sandbox_is_exit_10_in_one_line(
    sovnet_with_key: Runner, tmp_path: Path, name: str, template: str, words: str
) -> None:
    _publish(sovnet_with_key, tmp_path, name, template)
    done = _run(sovnet_with_key, f"acme/{name}", "--chat", "-p", "Hello", "-n", "4")
    assert done.returncode == 10, done.stderr
    [line] = _error_lines(done.stderr)
    assert line.startswith(f"sovnet: error: the chat template of acme/{name} 1.0 (")
    assert words in line
    assert "Traceback" not in done.stderr
    assert done.stdout.strip() == ""


def test_an_interactive_chat_ends_with_exit_10_when_the_template_is_over_budget(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    _publish(sovnet_with_key, tmp_path, "loops", NESTED_LOOPS)
    done = _run(sovnet_with_key, "acme/loops", "--chat", "-n", "4", stdin="Hello\nagain\n")
    assert done.returncode == 10, done.stderr
    [line] = _error_lines(done.stderr)
    assert line.startswith("sovnet: error: the chat template of acme/loops 1.0 (")
    assert "went over its budget" in line
    assert "Traceback" not in done.stderr


def test_a_template_that_refuses_the_conversation_says_so(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    _publish(sovnet_with_key, tmp_path, "refuses", REFUSES)
    done = _run(sovnet_with_key, "acme/refuses", "--chat", "-p", "Hello", "-n", "4")
    assert done.returncode == 10, done.stderr
    [line] = _error_lines(done.stderr)
    assert "refused the conversation: 'Conversation roles must alternate" in line
    # interactive: one refusal is said, and the session goes on to end of input
    done = _run(sovnet_with_key, "acme/refuses", "--chat", "-n", "4", stdin="Hello\nagain\n")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("refused the conversation") == 2
    # without --chat the template is not used, and plain completion works
    plain = _run(sovnet_with_key, "acme/refuses", "-p", "Hello", "-n", "4")
    assert plain.returncode == 0, plain.stderr


def _post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=WITHIN) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=WITHIN) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _stream(url: str, body: dict[str, Any]) -> tuple[int, list[str]]:
    """A streamed chat completion: its status and the data of its events."""
    data = json.dumps({**body, "stream": True, "max_tokens": 4}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WITHIN) as response:
        text = response.read().decode()
        return response.status, [
            line.removeprefix("data: ").strip()
            for line in text.splitlines()
            if line.startswith("data: ")
        ]


def _serving(runner: Runner, tmp_path: Path, name: str, template: str) -> Serving:
    _publish(runner, tmp_path, name, template)
    return Serving(runner, f"acme/{name}", tmp_path)


def _chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Hi"}]}


def test_serve_answers_a_template_s_refusal_as_the_request_s_error(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    server = _serving(sovnet_with_key, tmp_path, "refuses", REFUSES)
    try:
        status, body = _post(f"{server.base}/chat/completions", _chat("acme/refuses"))
        assert status == 400, body
        assert body["error"]["type"] == "invalid_request_error"
        assert body["error"]["code"] == "chat_template_refused"
        assert "Conversation roles must alternate" in body["error"]["message"]
    finally:
        server.stop()
    assert "Traceback" not in server.log.read_text()


def test_serve_answers_a_template_over_budget_with_an_error_and_keeps_serving(
    sovnet_with_key: Runner, tmp_path: Path
) -> None:
    server = _serving(sovnet_with_key, tmp_path, "loops", NESTED_LOOPS)
    try:
        chat_body = _chat("acme/loops")
        answered: list[tuple[int, dict[str, Any]]] = []
        chatting = threading.Thread(
            target=lambda: answered.append(
                _post(f"{server.base}/chat/completions", {**chat_body, "max_tokens": 4})
            )
        )
        chatting.start()
        # While the template renders (seconds), the server still answers: rendering
        # does not hold its event loop.
        health = _get(f"http://127.0.0.1:{server.port}/health")
        still_rendering = chatting.is_alive()
        chatting.join(WITHIN)
        assert health[0] == 200
        assert still_rendering
        [(status, body)] = answered
        assert status == 500, body
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["code"] == "chat_template_failed"
        assert "went over its budget" in body["error"]["message"]
        # Streamed, the 200 has gone out before the template runs: the stream ends
        # with OpenAI's error event, not cut short.
        status, events = _stream(f"{server.base}/chat/completions", chat_body)
        assert status == 200
        [error] = [json.loads(e)["error"] for e in events if e.startswith("{")]
        assert error["code"] == "chat_template_failed"
        assert "went over its budget" in error["message"]
        # ...and it goes on serving
        status, completion = _post(
            f"{server.base}/completions",
            {"model": "acme/loops", "prompt": "Hello", "max_tokens": 4},
        )
        assert status == 200, completion
        assert completion["object"] == "text_completion"
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
    assert "Traceback" not in server.log.read_text()
