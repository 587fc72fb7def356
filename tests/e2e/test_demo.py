"""The README's first command, as a newcomer runs it: ./scripts/demo.sh, start to end.

Two daemons on 127.0.0.1, the real Gemma 3 270M (Q4_K_M, from its PyPI package)
published on one, fetched by CID through the swarm on the other, verified, run by
llama.cpp; then one flipped byte refused. The demo's set-up step finds this
environment already made (setup.sh's stamp), so it costs the model's install: a
download of about 250 MB the first time, pip's cache after that.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import REPO

DEMO_TIMEOUT = 1800  # a slow first download of the model included


@pytest.mark.slow
def test_the_readme_demo_generates_text_and_refuses_a_tampered_copy() -> None:
    done = subprocess.run(
        [str(REPO / "scripts" / "demo.sh")],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=DEMO_TIMEOUT,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    lines = done.stdout.splitlines()
    start = lines.index("prompt: The three primary colors are") + 1
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("\x1b[1m== "))
    generated = "\n".join(lines[start:end]).strip()
    assert len(generated) >= 10, output[-6000:]  # llama.cpp wrote text of its own
    assert "(exit 5: the tampered file never reached llama.cpp" in done.stdout
    refusal = "gemma-3-270m-q4_k_m.gguf of google/gemma-3-270m differs from the manifest"
    assert refusal in done.stderr
