"""The Ollama build's compiler flags: AMX turned off where the CPU has it, so the build links on every x86-64 CPU.

The logic is fed captured /proc/cpuinfo samples (an Intel Xeon with AMX, an AMD EPYC without),
so it is tested on any machine; the real compiler is asked whether the flags do what they must.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines import ollama_build, serving
from pipelines.config import Settings

DATA = Path(__file__).parent / "data"
XEON_AMX = (DATA / "cpuinfo-xeon-amx.txt").read_text()
EPYC = (DATA / "cpuinfo-epyc.txt").read_text()


def test_cpu_flags_reads_every_core() -> None:
    assert {"amx_tile", "amx_int8", "amx_bf16", "avx512f"} <= ollama_build.cpu_flags(XEON_AMX)
    assert not {f for f in ollama_build.cpu_flags(EPYC) if f.startswith("amx")}
    assert ollama_build.cpu_flags("") == set()


def test_amx_cpu_gets_amx_turned_off() -> None:
    chosen = ollama_build.build_flags(XEON_AMX, accepts=lambda _: True)
    flags = chosen.flags.split()
    assert flags[:2] == ["-O3", "-march=native"]
    assert {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"} <= set(flags)
    assert chosen.amx == ["amx_bf16", "amx_int8", "amx_tile"] and "AMX turned off" in chosen.why


def test_cpu_without_amx_keeps_plain_native_flags() -> None:
    assert ollama_build.build_flags(EPYC, accepts=lambda _: True).flags == "-O3 -march=native"


def test_compiler_macros_count_as_amx_even_without_cpuinfo() -> None:
    chosen = ollama_build.build_flags("", accepts=lambda _: True, macros={"__AMX_INT8__"})
    assert "-mno-amx-int8" in chosen.flags.split()


def test_flags_the_compiler_rejects_are_left_out() -> None:
    chosen = ollama_build.build_flags(XEON_AMX, accepts=lambda f: f != "-mno-amx-bf16")
    assert "-mno-amx-bf16" not in chosen.flags and "-mno-amx-int8" in chosen.flags


def test_override_wins_and_is_named() -> None:
    chosen = ollama_build.build_flags(XEON_AMX, accepts=lambda _: True, override="-O2 -march=x86-64-v3")
    assert chosen.flags == "-O2 -march=x86-64-v3" and chosen.why == "RAGFT_OLLAMA_CFLAGS"


def test_machine_flags_follow_a_captured_amx_cpuinfo(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ollama_build, "read_cpuinfo", lambda: XEON_AMX)
    assert {"-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"} <= set(ollama_build.machine_build_flags(settings).flags.split())


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_real_compiler_accepts_the_flags_and_they_turn_amx_off() -> None:
    """What broke the link: -march=<an AMX CPU> defines __AMX_INT8__. With the chosen flags it must not."""
    for flag in ollama_build.AMX_OFF:
        assert ollama_build.compiler_accepts(flag, ("gcc", "g++")), flag
    assert not ollama_build.compiler_accepts("-mno-such-feature", ("gcc",))
    flags = ollama_build.build_flags(XEON_AMX, lambda f: ollama_build.compiler_accepts(f, ("gcc", "g++"))).flags.split()
    as_sapphire_rapids = [f.replace("-march=native", "-march=sapphirerapids") for f in flags]

    def macros(extra: list[str]) -> str:
        return subprocess.run(["gcc", *extra, "-dM", "-E", "-x", "c", "-"], input="", capture_output=True,
                              text=True, check=True).stdout

    assert "__AMX_INT8__" in macros(["-march=sapphirerapids"])  # the cause, reproduced
    assert "__AMX_" not in macros(as_sapphire_rapids)  # the fix
    assert "__AVX512F__" in macros(as_sapphire_rapids)  # and the rest of the CPU's SIMD is kept


@pytest.mark.ollama
def test_recorded_build_used_the_flags_this_cpu_needs(live_settings: Settings, ollama_server: serving.Server) -> None:
    """The session's binary: when ragft built it, build.json records the flags chosen for this CPU."""
    record = ollama_build.build_record(live_settings)
    if record is None:
        pytest.skip("the Ollama binary was not built by ragft (PATH or RAGFT_OLLAMA_BIN)")
    chosen = ollama_build.machine_build_flags(live_settings)
    assert record["flags"] == chosen.flags, "a cached binary built with other flags is reused; remove it to rebuild"
    assert record["build_seconds"] > 0 and record["version"]
    if chosen.amx:
        assert set(ollama_build.AMX_OFF) & set(str(record["flags"]).split())


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("go") is None or shutil.which("gcc") is None, reason="needs Go and gcc")
def test_ollama_links_when_compiled_for_an_amx_cpu(tmp_path: Path, settings: Settings) -> None:
    """The real build for a Sapphire Rapids target (AMX), on any x86-64 machine: it links with the chosen flags.

    Without -mno-amx-* this very build fails with `undefined reference to ggml_backend_amx_buffer_type()`.
    The binary is never run: this CPU may lack the instructions it was compiled for.
    """
    chosen = ollama_build.build_flags(XEON_AMX, lambda f: ollama_build.compiler_accepts(f, ("gcc", "g++")))
    flags = chosen.flags.replace("-march=native", "-march=sapphirerapids")
    proc = ollama_build.go_install(shutil.which("go") or "go", settings.ollama_version, flags, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "ollama").is_file()
