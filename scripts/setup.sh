#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with every extra,
# and the Debian tools the tests use (b3sum, systemd-analyze). Safe to run again: pip's
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

# Debian tools the tests use: b3sum is the reference BLAKE3 is checked against;
# systemd-analyze verifies systemd/sovnetd.service. Installed only if missing.
missing=()
command -v b3sum >/dev/null 2>&1 || missing+=(b3sum)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if $SUDO true 2>/dev/null; then
        echo "setup: installing from Debian's packages: ${missing[*]}" >&2
        $SUDO apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
    else
        echo "setup: ${missing[*]} not installed and root is not available; the tests that need them will be skipped" >&2
    fi
fi
