"""The Ollama binary: find one (configured, on PATH, cached) or build it from the Go module proxy.

The build is the one step of setup that compiles native code, so the CPU's quirks live here
(AMX, compilers that do not know a flag). Nothing here starts a server.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipelines import files
from pipelines.config import Settings
from pipelines.errors import OllamaUnavailable
from pipelines.procs import free_port

Log = Callable[[str], None]
OLLAMA_MODULE = "github.com/ollama/ollama"
_GET_OLLAMA = (
    "install Ollama so that `ollama` is on PATH (or set RAGFT_OLLAMA_HOST to a running server), "
    "or install Go >= 1.24 so that ragft can build it: `go install {module}@{version}`"
)


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class OllamaBinary:
    path: Path
    version: str
    source: str  # "configured" | "PATH" | "cache" | "built"


def binary_version(path: Path) -> str:
    """The client version the binary reports (it needs no server for that)."""
    env = dict(os.environ, OLLAMA_HOST=f"127.0.0.1:{free_port()}")  # never probe someone else's server
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OllamaUnavailable(f"{path} does not run: {exc}", "remove it so that ragft rebuilds it") from exc
    match = re.search(r"(\d+\.\d+\.\d+\S*)", out.stdout + out.stderr)
    if not match:
        raise OllamaUnavailable(f"{path} did not report a version: {(out.stdout + out.stderr).strip()[:200]}")
    return match.group(1)


def cached_binary_path(settings: Settings) -> Path:
    return settings.bin_dir / "ollama"


def find_binary(settings: Settings) -> OllamaBinary | None:
    """An explicit RAGFT_OLLAMA_BIN, else `ollama` on PATH, else ragft's cached build."""
    candidates: list[tuple[Path | None, str]] = [
        (settings.ollama_bin, "configured"),
        (Path(p) if (p := shutil.which("ollama")) else None, "PATH"),
        (cached_binary_path(settings), "cache"),
    ]
    for path, source in candidates:
        if path is not None and path.is_file() and os.access(path, os.X_OK):
            return OllamaBinary(path, binary_version(path), source)
        if source == "configured" and path is not None:
            raise OllamaUnavailable(f"RAGFT_OLLAMA_BIN={path} is not an executable file", "point it at an ollama binary or unset it")
    return None


# ggml's CPU kernels need native SIMD to be fast, hence -march=native. On a CPU with AMX
# (Intel Xeon Sapphire Rapids and later) -march=native also defines __AMX_INT8__, and then
# ggml-cpu.cpp calls ggml_backend_amx_buffer_type(); but ggml-cpu/amx/ has no Go file in the
# v0.11.4 module, so cgo never compiles amx.cpp and the link fails. Compiling those kernels
# would mean patching a module we do not vendor, so ragft turns AMX off instead: the same
# AVX-512/AVX2 kernels every other x86-64 CPU runs, and a build that links everywhere.
BASE_FLAGS = ("-O3", "-march=native")
AMX_OFF = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")
_AMX_MACROS = ("__AMX_TILE__", "__AMX_INT8__", "__AMX_BF16__")


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of /proc/cpuinfo (the union over cores; x86 names them `flags`)."""
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            found.update(value.split())
    return found


@functools.cache  # `go env` is asked once per process, not once per flag probed
def _compiler(name: str, default: str) -> str:
    go = shutil.which("go")
    if go:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run([go, "env", name], capture_output=True, text=True, timeout=30).stdout.strip()
            if out:
                return out.split()[0]
    return os.environ.get(name) or default


def compiler_accepts(flag: str, compilers: tuple[str, ...] | None = None) -> bool:
    """Whether cgo's C and C++ compilers both take `flag` (old ones know no -mno-amx-*)."""
    for cc in compilers or (_compiler("CC", "gcc"), _compiler("CXX", "g++")):
        try:
            proc = subprocess.run([cc, flag, "-x", "c", "-fsyntax-only", "-"], input="int x;\n",
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
        if proc.returncode != 0:
            return False
    return True


def native_macros(compiler: str | None = None) -> set[str]:
    """The AMX macros `-march=native` defines here: the compiler's own view of the CPU."""
    cc = compiler or _compiler("CC", "gcc")
    try:
        out = subprocess.run([cc, *BASE_FLAGS, "-dM", "-E", "-x", "c", "-"], input="", capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {m for m in _AMX_MACROS if f"#define {m} " in out}


@dataclass(frozen=True)
class BuildFlags:
    flags: str
    amx: list[str]  # AMX features seen (cpuinfo flags or compiler macros); empty on most CPUs
    why: str


def build_flags(cpuinfo: str, accepts: Callable[[str], bool], macros: set[str] | frozenset[str] = frozenset(),
                override: str | None = None) -> BuildFlags:
    """CGO_CFLAGS/CGO_CXXFLAGS for the Ollama build on this CPU (pure: inputs are passed in)."""
    amx = sorted({f for f in cpu_flags(cpuinfo) if f.startswith("amx")} | set(macros))
    if override:
        return BuildFlags(override, amx, "RAGFT_OLLAMA_CFLAGS")
    if not amx:
        return BuildFlags(" ".join(BASE_FLAGS), amx, "no AMX on this CPU")
    off = [f for f in AMX_OFF if accepts(f)]
    # A compiler that knows no -mno-amx-* cannot define __AMX_*__ either, so nothing is lost.
    return BuildFlags(" ".join((*BASE_FLAGS, *off)), amx,
                      "AMX turned off: ggml's AMX kernels are not compiled by cgo in this Ollama module")


def read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def machine_build_flags(settings: Settings) -> BuildFlags:
    return build_flags(read_cpuinfo(), compiler_accepts, native_macros(), settings.ollama_cflags)


def build_record(settings: Settings) -> dict[str, object] | None:
    """What build.json says of the cached binary (flags, seconds), if ragft built it."""
    return files.read_json(settings.bin_dir / "build.json")


def go_install(go: str, version: str, flags: str, gobin: Path) -> subprocess.CompletedProcess[str]:
    """`go install` of the Ollama module with cgo `flags` into `gobin` (the build itself, nothing else)."""
    env = dict(os.environ, CGO_ENABLED="1", CGO_CFLAGS=flags, CGO_CXXFLAGS=flags, GOBIN=str(gobin))
    return subprocess.run(
        # go install leaves the version at 0.0.0 unless the release's ldflag is set
        [go, "install", f"-ldflags=-X {OLLAMA_MODULE}/version.Version={version.lstrip('v')}", f"{OLLAMA_MODULE}@{version}"],
        env=env, capture_output=True, text=True,
    )


def build_binary(settings: Settings, log: Log = _quiet) -> OllamaBinary:
    """`go install` Ollama into the cache. Nothing is left behind when it fails."""
    go = shutil.which("go")
    if go is None:
        raise OllamaUnavailable(
            "no Ollama binary was found and Go is not installed to build one",
            _GET_OLLAMA.format(module=OLLAMA_MODULE, version=settings.ollama_version),
        )
    settings.bin_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=settings.bin_dir))
    chosen = machine_build_flags(settings)
    flags = chosen.flags
    log(f"building Ollama {settings.ollama_version} from the Go module proxy (several minutes, once per machine); "
        f"CGO_CFLAGS={flags!r} ({chosen.why})")
    started = time.monotonic()
    try:
        proc = go_install(go, settings.ollama_version, flags, staging)
        if proc.returncode != 0 or not (staging / "ollama").is_file():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise OllamaUnavailable(
                f"building Ollama {settings.ollama_version} with CGO_CFLAGS=CGO_CXXFLAGS={flags!r} failed "
                f"(exit {proc.returncode}):\n{tail}",
                "set RAGFT_OLLAMA_CFLAGS to flags your compiler and CPU accept (e.g. '-O3 -march=x86-64-v2'), or "
                + _GET_OLLAMA.format(module=OLLAMA_MODULE, version=settings.ollama_version),
            )
        target = cached_binary_path(settings)
        os.replace(staging / "ollama", target)  # atomic: a half-built binary is never in place
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    seconds = time.monotonic() - started
    version = binary_version(target)
    files.write_json(settings.bin_dir / "build.json", {"version": version, "build_seconds": round(seconds, 1),
                                                       "flags": flags, "amx": chosen.amx, "why": chosen.why})
    log(f"built Ollama {version} in {seconds:.0f} s → {target}")
    return OllamaBinary(target, version, "built")


def ensure_binary(settings: Settings, log: Log = _quiet) -> OllamaBinary:
    return find_binary(settings) or build_binary(settings, log)
