"""Ollama: find or build the binary, run `ollama serve` on loopback, create models, generate.

Every arm is served by this one server so that decoding, quantisation and runtime are
identical; this module is the only place that starts processes or talks to Ollama.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import ollama
import tenacity

from pipelines import files
from pipelines.config import Settings
from pipelines.errors import ConfigError, ModelPrepError, OllamaUnavailable
from pipelines.jobs import process_started  # the same start-time identity jobs use for their processes

Log = Callable[[str], None]
OLLAMA_MODULE = "github.com/ollama/ollama"
_GET_OLLAMA = (
    "install Ollama so that `ollama` is on PATH (or set RAGFT_OLLAMA_HOST to a running server), "
    "or install Go >= 1.24 so that ragft can build it: `go install {module}@{version}`"
)


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------- binary


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


# ---------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def server_version(url: str, timeout: float = 2.0) -> str | None:
    """Ollama's version if `url` answers like an Ollama server, else None."""
    try:
        r = httpx.get(f"{url.rstrip('/')}/api/version", timeout=timeout)
        return str(r.json()["version"]) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def _normalise_host(host: str) -> str:
    return host if host.startswith(("http://", "https://")) else f"http://{host}"


@dataclass
class Server:
    url: str
    pid: int | None  # None: a server ragft does not own (OLLAMA_HOST)
    models_dir: str | None
    binary: str | None = None
    version: str | None = None
    started: float | None = None  # the process's start time (psutil): a reused pid is not our server
    # Restarts done while answering (a server that died): callers such as the eval runner
    # read these to put them on the run's record.
    restarts: list[str] = field(default_factory=list)

    @property
    def owned(self) -> bool:
        return self.pid is not None


def _state_path(settings: Settings) -> Path:
    return settings.ollama_dir / "server.json"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def _is_our_server(state: Server) -> bool:
    """The pid in server.json is still the `ollama serve` ragft started — not a process that got
    the same pid after a reboot or a crash (which `serve stop` would otherwise kill)."""
    import psutil

    if not state.pid or not _pid_alive(state.pid):
        return False
    try:
        proc = psutil.Process(state.pid)
        cmd = proc.cmdline()
        started = proc.create_time()
    except psutil.Error:
        return False
    if len(cmd) < 2 or cmd[1] != "serve" or not (cmd[0] == state.binary or Path(cmd[0]).name.startswith("ollama")):
        return False
    return state.started is None or abs(started - state.started) < 1.0


def running_server(settings: Settings) -> Server | None:
    """The server ragft should use now, if one is up: OLLAMA_HOST, else the one ragft started."""
    if settings.ollama_host:
        url = _normalise_host(settings.ollama_host)
        version = server_version(url)
        return Server(url, None, None, None, version) if version else None
    # A user's own Ollama (OLLAMA_HOST) is used when it answers; otherwise ragft runs its own.
    if (host := os.environ.get("OLLAMA_HOST")) and (version := server_version(_normalise_host(host))):
        return Server(_normalise_host(host), None, None, None, version)
    path = _state_path(settings)
    try:
        state = Server(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if _is_our_server(state) and state.models_dir == str(settings.ollama_models_dir):
        state.version = server_version(state.url)
        if state.version:
            return state
    return None


def start_server(settings: Settings, log: Log = _quiet) -> Server:
    """Start `ollama serve` on 127.0.0.1 with its models inside ragft's data dir."""
    binary = ensure_binary(settings, log)
    settings.ollama_models_dir.mkdir(parents=True, exist_ok=True)
    _kill_runners(settings)  # left over by a server of this data dir that died
    log_path = settings.ollama_dir / "server.log"
    port = settings.ollama_port
    if port and port_in_use(port):
        log(f"port {port} is in use; picking a free one")
        port = 0
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding
        use_port = port or free_port()
        env = dict(
            os.environ,
            OLLAMA_HOST=f"127.0.0.1:{use_port}",
            OLLAMA_MODELS=str(settings.ollama_models_dir),
            OLLAMA_KEEP_ALIVE="30m",  # base and fine-tuned models stay loaded across the arms of a run
            OLLAMA_NOPRUNE="1",
            OLLAMA_NUM_PARALLEL=str(settings.ollama_num_parallel),
        )
        if settings.ollama_offline:
            # The server only loads local files; should anything in it reach out (a pull, a
            # registry lookup), it hits a closed local port and fails instead of leaving the machine.
            env.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1,localhost",
                       https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9", no_proxy="127.0.0.1,localhost")
        with open(log_path, "ab") as logf:
            proc = subprocess.Popen(
                [str(binary.path), "serve"], env=env, stdout=logf, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,  # outlives the CLI call that started it
            )
        url = f"http://127.0.0.1:{use_port}"
        deadline = time.monotonic() + settings.server_start_timeout_s
        while time.monotonic() < deadline:
            if (version := server_version(url, timeout=1.0)) is not None:
                server = Server(url, proc.pid, str(settings.ollama_models_dir), str(binary.path), version,
                                started=process_started(proc.pid))
                _write_state(settings, server)
                log(f"Ollama {version} serving on {url} (pid {proc.pid})")
                return server
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        _terminate(proc.pid)
        last_error = _tail(log_path)
        if "address already in use" not in last_error:
            break
        port = 0
    raise OllamaUnavailable(f"`ollama serve` did not become healthy:\n{last_error}", f"see {log_path}")


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _write_state(settings: Settings, server: Server) -> None:
    files.write_json(_state_path(settings), {k: v for k, v in asdict(server).items() if k != "restarts"})


def _runner_pids(settings: Settings) -> list[int]:
    """`ollama runner` processes serving models from this data dir's models directory."""
    import psutil

    needle = str(settings.ollama_models_dir)
    found = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info.get("cmdline") or []
        if len(cmd) > 1 and cmd[0].endswith("ollama") and cmd[1] == "runner" and any(needle in c for c in cmd):
            found.append(int(p.info["pid"]))
    return found


def _kill_runners(settings: Settings) -> None:
    # A server that is killed (or stopped while loading) can leave its model runners behind,
    # still holding memory and CPU; they are children of nobody, so nothing else ends them.
    for pid in _runner_pids(settings):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _terminate(pid: int, grace_s: float = 10.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        except ChildProcessError:
            if not _pid_alive(pid):
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def ensure_server(settings: Settings, log: Log = _quiet) -> Server:
    """Reuse a healthy server (OLLAMA_HOST or ragft's own), else start one."""
    if (server := running_server(settings)) is not None:
        return server
    if settings.ollama_host:
        raise OllamaUnavailable(
            f"RAGFT_OLLAMA_HOST={settings.ollama_host} does not answer as an Ollama server",
            "start that server, or unset RAGFT_OLLAMA_HOST so that ragft starts its own",
        )
    # Check-and-start is one step across processes: two commands starting at once would otherwise
    # each start a server, the second killing the first's runners and orphaning it.
    from filelock import FileLock

    settings.ollama_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.ollama_dir / "server.lock")):
        if (server := running_server(settings)) is not None:
            return server
        return start_server(settings, log)


def stop_server(settings: Settings) -> bool:
    """Stop the server ragft started for this data dir; True if one was running."""
    path = _state_path(settings)
    try:
        state = Server(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return False
    was_running = _is_our_server(state)
    if state.pid and was_running:
        _terminate(state.pid)
    _kill_runners(settings)
    path.unlink(missing_ok=True)
    return was_running


# ---------------------------------------------------------------- models on the server


def client(server: Server, settings: Settings) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=settings.request_timeout_s)


def served_models(server: Server, settings: Settings) -> dict[str, int]:
    """Model name → size in bytes for every model the server has."""
    return {m.model: int(m.size or 0) for m in client(server, settings).list().models if m.model}


def has_model(server: Server, settings: Settings, name: str) -> bool:
    names = served_models(server, settings)
    return name in names or f"{name}:latest" in names


def create_model(server: Server, settings: Settings, name: str, modelfile: str, quantize: str | None) -> None:
    """`ollama create` through the CLI, which uploads local weight directories as blobs."""
    binary = ensure_binary(settings)
    with tempfile.TemporaryDirectory(prefix="ragft-modelfile-") as tmp:
        mf = Path(tmp) / "Modelfile"
        mf.write_text(modelfile, encoding="utf-8")
        cmd = [str(binary.path), "create", name, "-f", str(mf)]
        if quantize and quantize != "f16":
            cmd += ["--quantize", quantize]
        env = dict(os.environ, OLLAMA_HOST=server.url.removeprefix("http://"))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-8:])
        raise ModelPrepError(f"`ollama create {name}` failed:\n{tail}", "run `ragft doctor` and retry `ragft setup`")


def delete_model(server: Server, settings: Settings, name: str) -> None:
    client(server, settings).delete(name)


# ---------------------------------------------------------------- generation


@dataclass
class Generation:
    """One answer from Ollama with the timings it reported (durations in ms)."""

    text: str
    model: str
    ttft_ms: float  # measured here: request sent → first non-empty token received
    total_ms: float  # measured here: request sent → last chunk received
    load_ms: float
    prompt_tokens: int
    prompt_ms: float
    output_tokens: int
    eval_ms: float
    done_reason: str | None

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / (self.eval_ms / 1000) if self.eval_ms > 0 else 0.0

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens / (self.prompt_ms / 1000) if self.prompt_ms > 0 else 0.0


def _stream(server: Server, settings: Settings, model: str, prompt: str, system: str | None) -> Iterator[ollama.GenerateResponse]:
    return client(server, settings).generate(
        model=model, prompt=prompt, system=system or "", stream=True,
        options=settings.decoding_options(), keep_alive="30m",
    )


def generate(
    server: Server,
    settings: Settings,
    model: str,
    prompt: str,
    system: str | None = None,
    on_token: Callable[[str], None] | None = None,
) -> Generation:
    """Stream one completion with the shared decoding options; restart a dead owned server once."""
    def bring_back(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        restart(server, settings, f"{type(exc).__name__} while generating with {model}")

    try:
        for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(2 if server.owned else 1),
                                         retry=tenacity.retry_if_exception_type(_GONE), before_sleep=bring_back,
                                         reraise=True):
            with attempt:
                return _generate_once(server, settings, model, prompt, system, on_token)
    except _GONE as exc:
        raise OllamaUnavailable(f"Ollama at {server.url} is not answering: {exc}", "run `ragft doctor`") from exc
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise ModelPrepError(f"model '{model}' is not on the server", "run `ragft setup`") from exc
        raise OllamaUnavailable(f"Ollama refused the request: {exc.error}") from exc
    raise AssertionError("unreachable: tenacity returns or re-raises")


# What a server that died or restarted looks like to a client mid-request.
_GONE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, ConnectionError)


_restart_lock = threading.Lock()


def restart(server: Server, settings: Settings, reason: str) -> None:
    """Bring a dead owned server back (once, however many threads noticed) and point `server` at it."""
    with _restart_lock:
        old = server.url
        fresh = ensure_server(settings)  # a healthy server (another thread's restart) is reused
        if fresh.url != old or fresh.pid != server.pid:
            server.restarts.append(f"Ollama at {old} stopped answering ({reason}); now {fresh.url} (pid {fresh.pid})")
        server.url, server.pid = fresh.url, fresh.pid


def forget_prompt(server: Server, settings: Settings, model: str) -> None:
    """Leave the model's prompt cache holding nothing a real prompt starts with.

    Ollama 0.11.4 always reuses the longest cached prefix of the previous request, and a prompt
    evaluated in two batches (cached prefix + rest) gets logits that differ in the last bits
    from one evaluated in one batch: at temperature 0 a long answer then diverges, so an answer
    would depend on the request before it (a resumed run would not equal an uninterrupted one).
    One raw newline, one token, with the same options (no model reload), costs a few tens of ms
    and happens before the timed request.
    """
    client(server, settings).generate(model=model, prompt="\n", raw=True, keep_alive="30m",
                                      options={**settings.decoding_options(), "num_predict": 1})


REPEAT_ABORT = "repeat-limit"  # done_reason of an answer Ollama cut for repeating one token
_REPEAT_LIMIT = 30  # Ollama 0.11.4 aborts once a token repeats more than this many times


def repeat_aborted(parts: list[str]) -> bool:
    """The streamed pieces end in the run of identical tokens that makes Ollama abort a prediction."""
    tail = [p.strip() for p in parts[-(_REPEAT_LIMIT + 1):]]
    return len(tail) == _REPEAT_LIMIT + 1 and len(set(tail)) == 1


def _generate_once(server: Server, settings: Settings, model: str, prompt: str, system: str | None,
                   on_token: Callable[[str], None] | None) -> Generation:
    if not settings.prompt_cache:
        forget_prompt(server, settings, model)
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    final: ollama.GenerateResponse | None = None
    for chunk in _stream(server, settings, model, prompt, system):
        if chunk.response:
            if ttft is None:
                ttft = (time.perf_counter() - started) * 1000
            parts.append(chunk.response)
            if on_token:
                on_token(chunk.response)
        if chunk.done:
            final = chunk
    total = (time.perf_counter() - started) * 1000
    if final is None and repeat_aborted(parts):
        # Ollama 0.11.4 (llm/server.go) ends a prediction after 31 identical tokens and closes the
        # stream with no final chunk, so no token counts or timings: the answer is what it sent,
        # timed by our clock, with one token per streamed chunk.
        first = ttft if ttft is not None else total
        return Generation(text="".join(parts), model=model, ttft_ms=first, total_ms=total, load_ms=0.0,
                          prompt_tokens=0, prompt_ms=first, output_tokens=len(parts), eval_ms=total - first,
                          done_reason=REPEAT_ABORT)
    if final is None:
        raise OllamaUnavailable(f"Ollama closed the stream for '{model}' before it was done")
    ns = 1e-6
    used = (final.prompt_eval_count or 0) + (final.eval_count or 0)
    if used >= settings.num_ctx:
        # Ollama cuts a prompt that does not fit num_ctx (and shifts the window while decoding)
        # without an error: the answer would come from a prompt other than the one shown.
        raise ConfigError(f"'{model}' filled its context window: {final.prompt_eval_count} prompt + "
                          f"{final.eval_count} answer tokens ≥ num_ctx {settings.num_ctx}, so Ollama cut the prompt",
                          f"raise RAGFT_NUM_CTX (now {settings.num_ctx}) or lower top_k/chunk_size")
    return Generation(
        text="".join(parts),
        model=model,
        ttft_ms=ttft if ttft is not None else total,
        total_ms=total,
        load_ms=(final.load_duration or 0) * ns,
        prompt_tokens=final.prompt_eval_count or 0,
        prompt_ms=(final.prompt_eval_duration or 0) * ns,
        output_tokens=final.eval_count or 0,
        eval_ms=(final.eval_duration or 0) * ns,
        done_reason=final.done_reason,
    )
