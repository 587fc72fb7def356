#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with every extra,
# and the Debian tools the tests compare against (b3sum). Safe to run again: pip's
# cache keeps the llama-cpp-python build, so later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: sovnet needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
echo "setup: installing sovnet with all extras (the first llama-cpp-python build takes ~4 min)" >&2
.venv/bin/python -m pip install --quiet -e ".[run,test]"

# b3sum is the reference the tests check BLAKE3 against.
if ! command -v b3sum >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if $SUDO true 2>/dev/null; then
        echo "setup: installing b3sum from Debian's packages" >&2
        $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq b3sum >/dev/null
    else
        echo "setup: b3sum is not installed and root is not available; its test will be skipped" >&2
    fi
fi
