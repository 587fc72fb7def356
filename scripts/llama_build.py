"""The llama.cpp build that scripts/setup.sh makes: CMake flags for this machine's CPU.

``python scripts/llama_build.py cmake-args`` prints the CMAKE_ARGS for building
llama-cpp-python here; ``python scripts/llama_build.py tag`` prints a name that
carries them, which setup.sh gives the directory the wheel is built into, so that
a wheel built with other flags (on another CPU, or by an older setup.sh) can never
be installed in its place. ``--cpuinfo FILE`` reads another machine's
/proc/cpuinfo instead of this one's.

Why these flags, measured side by side on the real Gemma 3 270M Q4_K_M file
(``scripts/bench/llama_builds.py``; figures and build times in docs/benchmarks.md):

* llama.cpp's default, ``GGML_NATIVE=ON`` (``-march=native``), compiles in the AMX
  kernels on a CPU that has AMX, and on an Intel Xeon with AMX those segfault on
  quantised weights (``ggml_backend_amx_mul_mat``; llama.cpp issue #20824, open).
* So on x86-64 the build names each instruction-set extension ggml has a switch for
  and this CPU has, with ``GGML_NATIVE=OFF`` and AMX always off: every kernel ggml
  picks at compile time for this CPU, except the AMX ones. On the AMD EPYC here it
  enables exactly what the native build does (llama.cpp's own system info says so)
  and runs as fast; a fixed set for every CPU is slower where a CPU has more (an
  AVX2-only build read prompts a third slower).
* ggml's runtime dispatch (``GGML_BACKEND_DL`` with ``GGML_CPU_ALL_VARIANTS``) was as
  fast but not kept: its Sapphire Rapids variant is the AMX one that crashes;
  llama-cpp-python 0.3.36 installs its variant libraries where ggml does not look,
  and ggml looks in the current directory too, so a ``libggml-cpu-*.so`` lying where
  the user runs ``sovnet run`` would be loaded into the process; and it builds
  ggml's CPU backend fourteen times.
* ``LLAVA_BUILD=OFF``: sovnet loads no multimodal projector, and llama-cpp-python
  loads libmtmd only for one, so building it costs time for nothing.

On another architecture (aarch64, ...) the build is llama.cpp's default, native for
the machine that builds it, named after the CPU's feature list; it has not been
tried on such a machine here.
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

# ggml's x86 switches, in the order ggml lists them, with the /proc/cpuinfo flags each
# needs (AVX512 turns on -mavx512f/cd/vl/dq/bw together), and the switch each builds on.
X86_FEATURES: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    ("SSE42", ("sse4_2",), None),
    ("AVX", ("avx",), "SSE42"),
    ("F16C", ("f16c",), "AVX"),
    ("FMA", ("fma",), "AVX"),
    ("BMI2", ("bmi2",), None),
    ("AVX2", ("avx2",), "AVX"),
    ("AVX_VNNI", ("avx_vnni",), "AVX2"),
    ("AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"), "AVX2"),
    ("AVX512_VBMI", ("avx512vbmi",), "AVX512"),
    ("AVX512_VNNI", ("avx512_vnni",), "AVX512"),
    ("AVX512_BF16", ("avx512_bf16",), "AVX512"),
)
# Never on, whatever the CPU says: see the module's docstring.
ALWAYS_OFF = ("AMX_TILE", "AMX_INT8", "AMX_BF16")
COMMON_ARGS = ("-DLLAVA_BUILD=OFF",)
X86_MACHINES = ("x86_64", "amd64")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in a /proc/cpuinfo text (x86 "flags",
    ARM "Features")."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def x86_features(flags: set[str]) -> list[str]:
    """ggml's switches this CPU supports, each only where the one it builds on is on."""
    on: list[str] = []
    for name, needs, builds_on in X86_FEATURES:
        if all(flag in flags for flag in needs) and (builds_on is None or builds_on in on):
            on.append(name)
    return on


def cmake_args(machine: str, flags: set[str]) -> list[str]:
    if machine.lower() not in X86_MACHINES:
        return list(COMMON_ARGS)  # llama.cpp's default: native
    on = x86_features(flags)
    args = ["-DGGML_NATIVE=OFF", *COMMON_ARGS]
    args += [f"-DGGML_{name}={'ON' if name in on else 'OFF'}" for name, _, _ in X86_FEATURES]
    args += [f"-DGGML_{name}=OFF" for name in ALWAYS_OFF]
    return args


def tag(machine: str, flags: set[str]) -> str:
    """A directory name that differs whenever the build's flags do."""
    if machine.lower() not in X86_MACHINES:
        digest = hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12]
        return f"{machine}-native-{digest}"
    on = x86_features(flags)
    return "-".join([machine, *(name.lower().replace("_", "") for name in on), "noamx"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("cmake-args", "tag"))
    parser.add_argument("--cpuinfo", type=Path, default=Path("/proc/cpuinfo"))
    parser.add_argument("--machine", default=platform.machine())
    args = parser.parse_args(argv)
    try:
        flags = cpu_flags(args.cpuinfo.read_text(errors="replace"))
    except OSError:
        flags = set()  # no /proc/cpuinfo: the x86-64 baseline, or the default elsewhere
    if args.what == "cmake-args":
        print(" ".join(cmake_args(args.machine, flags)))
    else:
        print(tag(args.machine, flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())
