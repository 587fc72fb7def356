#!/usr/bin/env bash
# Set up the environment, then run everything CI runs: lint, format, types, tests.
# Extra arguments go to pytest (e.g. scripts/test.sh -k manifest -x).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "== ruff" >&2
.venv/bin/ruff check sovnet tests scripts
.venv/bin/ruff format --check sovnet tests scripts
echo "== mypy --strict sovnet" >&2
.venv/bin/mypy sovnet
echo "== pytest" >&2
.venv/bin/python -m pytest "$@"
