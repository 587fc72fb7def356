"""sovnet.run.template_budget: chat templates rendered in processes of their own, under a
budget of time and memory, as llama-cpp-python would render them. (Through the CLI, with
real llama.cpp: tests/test_chat_template.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from sovnet.run.template_budget import (
    MAX_PROMPT_BYTES,
    TIME_BUDGET_SECONDS,
    ChatTemplateError,
    TemplateRenderer,
)

LABEL = "acme/tiny 1.0 (bafkr4i...)"
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello \u00e9\u4e16 <b>"},
]
# What llama-cpp-python gives a template besides its functions.
VARIABLES: dict[str, Any] = {
    "messages": MESSAGES,
    "eos_token": "</s>",
    "bos_token": "<s>",
    "add_generation_prompt": True,
    "functions": None,
    "function_call": None,
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    "tool_choice": None,
}
# Uses what llama-cpp-python's environment adds to jinja2's: tojson with its arguments,
# loop controls, the {% generation %} tag, trimmed blocks.
RICH = """{{ bos_token }}
{% for message in messages %}
  {% if loop.index > 5 %}{% break %}{% endif %}
  {% generation %}<|{{ message['role'] }}|>{{ message['content'] }}{{ eos_token }}
  {% endgeneration %}
{% endfor %}
{{ tools | tojson(indent=2) }}|{{ messages[1] | tojson }}
{{ {'b': 1, 'a': 2} | tojson(sort_keys=True) }}
{% if add_generation_prompt %}<|assistant|>{% endif %}"""
# A string that doubles until it is 2^40 bytes: memory, quickly.
DOUBLING = (
    "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s | length }}"
)
NESTED_LOOPS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.fixture(scope="module")
def renderer() -> Iterator[TemplateRenderer]:
    templates = TemplateRenderer.start()
    yield templates
    templates.close()


def _render(renderer: TemplateRenderer, template: str) -> str:
    return renderer.render(template, LABEL, VARIABLES)


def test_it_renders_as_llama_cpp_python_does(renderer: TemplateRenderer) -> None:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(RICH, eos_token="</s>", bos_token="<s>")
    theirs = formatter(messages=MESSAGES, tools=VARIABLES["tools"]).prompt
    ours = _render(renderer, RICH)
    assert ours == theirs
    assert '"name": "f"' in ours and "\u4e16" in ours  # the filters did their work


def _fails(renderer: TemplateRenderer, template: str) -> ChatTemplateError:
    with pytest.raises(ChatTemplateError) as caught:
        _render(renderer, template)
    error = caught.value
    assert error.exit_code == 10
    assert error.message.startswith(f"the chat template of {LABEL} ")
    assert "\n" not in error.message
    return error


def test_a_template_that_loops_is_stopped_at_its_time_budget(renderer: TemplateRenderer) -> None:
    started = time.monotonic()
    error = _fails(renderer, NESTED_LOOPS)
    took = time.monotonic() - started
    assert error.kind == "budget"
    assert f"went over its budget ({TIME_BUDGET_SECONDS:g} seconds)" in error.message
    assert took < TIME_BUDGET_SECONDS + 30  # stopped, not left to run for hours
    assert _render(renderer, "{{ messages[1]['role'] }}") == "user"  # and the next one runs


def test_a_template_that_allocates_is_stopped_at_its_memory_budget(
    renderer: TemplateRenderer,
) -> None:
    # The template asks for 1 TiB; its worker's address space ends 256 MiB above
    # the renderer's, and the allocation past it fails there (not after this machine's).
    error = _fails(renderer, DOUBLING)
    assert error.kind == "budget"
    assert "(256 MiB of memory)" in error.message
    assert _render(renderer, "ok") == "ok"


def test_a_prompt_larger_than_the_budget_is_refused(renderer: TemplateRenderer) -> None:
    error = _fails(renderer, f"{{{{ 'x' * {MAX_PROMPT_BYTES + 1} }}}}")
    assert error.kind == "budget" and "a prompt of 32 MiB" in error.message


@pytest.mark.parametrize(
    ("template", "kind", "words"),
    [
        ("{% for i in range(1000000) %}{% endfor %}", "sandbox", "Range too big"),
        ("{{ ''.__class__.__mro__ }}", "sandbox", "__class__"),
        ("{{ messages.append(1) }}", "sandbox", "unsafe"),
        ("{{ raise_exception('roles must alternate') }}", "refused", "roles must alternate"),
        ("{{ messages[7]['content'] }}", "failed", "UndefinedError"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "failed", "recurses too deeply"),
    ],
)
def test_what_the_sandbox_refuses_or_the_template_raises_is_said(
    renderer: TemplateRenderer, template: str, kind: str, words: str
) -> None:
    error = _fails(renderer, template)
    assert error.kind == kind
    assert words in error.message


def test_a_template_that_does_not_compile_is_found_by_check(renderer: TemplateRenderer) -> None:
    with pytest.raises(ChatTemplateError) as caught:
        renderer.check("{% for %}", LABEL)
    assert caught.value.kind == "syntax"
    assert "is not one llama-cpp-python can use" in caught.value.message
    renderer.check(RICH, LABEL)  # compiles: no error


def test_renderings_from_threads_do_not_mix(renderer: TemplateRenderer) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def render(number: int) -> str:
        return renderer.render("{{ n }}", LABEL, {"n": number})

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(render, range(40))) == [str(n) for n in range(40)]


def test_a_closed_renderer_says_so() -> None:
    templates = TemplateRenderer.start()
    assert templates.render("{{ 1 + 1 }}", LABEL, {}) == "2"
    templates.close()
    templates.close()  # idempotent
    with pytest.raises(ChatTemplateError, match="closed"):
        templates.render("x", LABEL, {})
