#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv with every extra,
# and the Debian tools the tests use (b3sum, systemd-analyze). Safe to run again:
# when nothing it depends on changed, it takes well under a second.
#
# llama-cpp-python is built from source here, for this machine's CPU, with flags
# that scripts/llama_build.py chooses (and explains): every instruction-set extension
# ggml has a switch for and this CPU has, but never AMX, whose kernels crash on
# quantised models on Intel Xeons that have it (llama.cpp's default, -march=native,
# compiles them in); on other architectures, llama.cpp's default. The wheel is built
# once into .cache/llama-cpp-python/VERSION-TAG/, TAG naming those flags, without
# pip's wheel cache (which keys a built wheel by its source alone and would hand back
# one built with other flags), and installed from there. Another CPU means another
# TAG, hence a build of its own; the first takes 4 to 7 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

LLAMA_CPP_PYTHON_VERSION=0.3.36

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: sovnet needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $("$PYTHON" --version)" >&2
    "$PYTHON" -m venv .venv
fi

llama_tag="$LLAMA_CPP_PYTHON_VERSION-$(.venv/bin/python scripts/llama_build.py tag)"
llama_args=$(.venv/bin/python scripts/llama_build.py cmake-args)
wheel_dir=".cache/llama-cpp-python/$llama_tag"
# Everything the installed environment depends on; unchanged, there is nothing to do.
stamp=$(cat pyproject.toml scripts/setup.sh scripts/llama_build.py | sha256sum | cut -c1-16)
stamp="$stamp $llama_tag $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])')"
if [ "$(cat .venv/sovnet-setup 2>/dev/null)" != "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if ! ls "$wheel_dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
        echo "setup: building llama-cpp-python $LLAMA_CPP_PYTHON_VERSION for this CPU" \
            "($llama_tag; 4 to 7 minutes on 2 cores)" >&2
        rm -rf "$wheel_dir.tmp"
        mkdir -p "$wheel_dir.tmp"
        CMAKE_ARGS="$llama_args" .venv/bin/python -m pip wheel --quiet --no-cache-dir --no-deps \
            --no-binary llama-cpp-python \
            -w "$wheel_dir.tmp" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION"
        mv "$wheel_dir.tmp" "$wheel_dir"
    fi
    if [ "$(cat .venv/sovnet-llama-build 2>/dev/null)" != "$llama_tag" ]; then
        .venv/bin/python -m pip install --quiet --force-reinstall --no-deps \
            "$wheel_dir"/llama_cpp_python-*.whl
        echo "$llama_tag" >.venv/sovnet-llama-build
    fi
    echo "setup: installing sovnet with all extras" >&2
    .venv/bin/python -m pip install --quiet -e ".[run,test]"
    echo "$stamp" >.venv/sovnet-setup
fi

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
