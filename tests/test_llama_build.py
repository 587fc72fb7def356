"""scripts/llama_build.py: the CMake flags setup.sh builds llama.cpp with, from a CPU's
/proc/cpuinfo. Above all: AMX is never on, whatever the CPU has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REPO, load_script

llama_build = load_script("llama_build")


# The flags line of the Intel Xeon (Sapphire Rapids) on which the native build crashed.
SAPPHIRE_RAPIDS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology "
    "nonstop_tsc cpuid tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic "
    "movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm abm "
    "3dnowprefetch ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust bmi1 avx2 smep bmi2 "
    "erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt clwb avx512cd sha_ni "
    "avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves avx_vnni avx512_bf16 wbnoinvd arat "
    "avx512vbmi umip pku ospke waitpkg avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni "
    "avx512_bitalg avx512_vpopcntdq la57 rdpid cldemote movdiri movdir64b fsrm md_clear "
    "serialize tsxldtrk amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities"
)
HASWELL = "fpu sse sse2 ssse3 fma cx16 sse4_1 sse4_2 movbe popcnt aes xsave avx f16c bmi1 avx2 bmi2"


def cpuinfo(flags: str, key: str = "flags") -> str:
    return f"processor\t: 0\nvendor_id\t: GenuineIntel\n{key}\t\t: {flags}\n\nprocessor\t: 1\n"


def switches(args: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("-D").split("=", 1) for arg in args)


def test_an_amx_cpu_gets_every_other_extension_and_no_amx() -> None:
    flags = llama_build.cpu_flags(cpuinfo(SAPPHIRE_RAPIDS))
    assert {"amx_tile", "amx_int8", "avx512f"} <= flags
    on = switches(llama_build.cmake_args("x86_64", flags))
    assert on["GGML_NATIVE"] == "OFF"  # -march=native would turn AMX back on
    assert on["GGML_AMX_TILE"] == on["GGML_AMX_INT8"] == on["GGML_AMX_BF16"] == "OFF"
    for name in ("AVX2", "FMA", "F16C", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16"):
        assert on[f"GGML_{name}"] == "ON", name
    assert on["LLAVA_BUILD"] == "OFF"
    assert llama_build.tag("x86_64", flags).endswith("-avx512bf16-noamx")


def test_a_cpu_without_avx512_gets_none() -> None:
    on = switches(llama_build.cmake_args("x86_64", llama_build.cpu_flags(cpuinfo(HASWELL))))
    assert on["GGML_AVX2"] == on["GGML_BMI2"] == "ON"
    assert on["GGML_AVX512"] == on["GGML_AVX512_VNNI"] == on["GGML_AVX_VNNI"] == "OFF"


def test_an_extension_is_on_only_with_the_one_it_builds_on() -> None:
    # avx512_vnni without avx512f/bw/... (as a hypervisor may mask them): no AVX512 at all
    flags = llama_build.cpu_flags(cpuinfo("sse4_2 avx avx2 avx512_vnni avx512f"))
    assert llama_build.x86_features(flags) == ["SSE42", "AVX", "AVX2"]


def test_other_architectures_get_llama_cpps_default_named_by_their_features() -> None:
    neoverse = llama_build.cpu_flags(
        cpuinfo("fp asimd evtstrm aes pmull sha1 sha2 crc32", "Features")
    )
    assert llama_build.cmake_args("aarch64", neoverse) == ["-DLLAVA_BUILD=OFF"]
    other = llama_build.cpu_flags(cpuinfo("fp asimd evtstrm", "Features"))
    assert llama_build.tag("aarch64", neoverse).startswith("aarch64-native-")
    assert llama_build.tag("aarch64", neoverse) != llama_build.tag("aarch64", other)


@given(st.sets(st.sampled_from(sorted(set(SAPPHIRE_RAPIDS.split()) | {"avx512_fp16"}))))
def test_any_cpu_never_amx_and_the_tag_tells_builds_apart(flags: set[str]) -> None:
    args = llama_build.cmake_args("x86_64", flags)
    on = switches(args)
    assert not any(name.startswith("GGML_AMX") and value == "ON" for name, value in on.items())
    enabled = [name for name, value in on.items() if value == "ON"]
    # the tag names exactly the switches that are on: two builds that differ, differ in name
    tag = llama_build.tag("x86_64", flags)
    assert tag.split("-")[1:-1] == [
        name.removeprefix("GGML_").lower().replace("_", "") for name in enabled
    ]


def test_the_command_line_setup_sh_uses(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(cpuinfo(SAPPHIRE_RAPIDS))
    script = [sys.executable, str(REPO / "scripts" / "llama_build.py")]
    common = ["--cpuinfo", str(info), "--machine", "x86_64"]
    args = subprocess.run([*script, "cmake-args", *common], capture_output=True, text=True)
    tag = subprocess.run([*script, "tag", *common], capture_output=True, text=True)
    assert args.returncode == tag.returncode == 0
    assert "-DGGML_AMX_INT8=OFF" in args.stdout.split()
    assert tag.stdout.strip() == llama_build.tag("x86_64", llama_build.cpu_flags(info.read_text()))
