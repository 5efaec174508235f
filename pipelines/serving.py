"""The Ollama server: `ollama serve` on loopback with its models inside ragft's data dir.

Every arm is served by this one server so that decoding, quantisation and runtime are
identical; this module is the only place that starts or stops it (the binary comes from
`ollama_build`, requests go through `generation`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psutil
from filelock import FileLock

from pipelines import files, procs
from pipelines.config import Settings
from pipelines.errors import OllamaUnavailable
from pipelines.ollama_build import Log, _quiet, ensure_binary


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


def _is_our_server(state: Server) -> bool:
    """The pid in server.json is still the `ollama serve` ragft started — not a process that got
    the same pid after a reboot or a crash (which `serve stop` would otherwise kill)."""
    if not procs.alive(state.pid):
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
    state = _recorded_server(settings)
    if state is None:
        return None
    # Our process is alive: a busy server (a model loading, `ollama create` converting, training on
    # every core) can take longer than one probe to answer. Treating it as gone would start a
    # second server on the same models dir and orphan the first, so it is given time.
    deadline = time.monotonic() + settings.server_start_timeout_s
    while True:
        state.version = server_version(state.url)
        if state.version:
            return state
        if time.monotonic() >= deadline or not _is_our_server(state):
            return None
        time.sleep(0.5)


def _recorded_server(settings: Settings) -> Server | None:
    """The server in server.json when it is still ragft's live `ollama serve` for this models dir."""
    try:
        state = Server(**json.loads(_state_path(settings).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return state if _is_our_server(state) and state.models_dir == str(settings.ollama_models_dir) else None


def start_server(settings: Settings, log: Log = _quiet) -> Server:
    """Start `ollama serve` on 127.0.0.1 with its models inside ragft's data dir."""
    binary = ensure_binary(settings, log)
    settings.ollama_models_dir.mkdir(parents=True, exist_ok=True)
    _kill_runners(settings)  # left over by a server of this data dir that died
    log_path = settings.ollama_dir / "server.log"
    port = settings.ollama_port
    if port and procs.port_in_use(port):
        log(f"port {port} is in use; picking a free one")
        port = 0
    last_error = ""
    for _attempt in range(3):  # a free port can be taken between probing and binding
        use_port = port or procs.free_port()
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
                                started=procs.process_started(proc.pid))
                _write_state(settings, server)
                log(f"Ollama {version} serving on {url} (pid {proc.pid})")
                return server
            if proc.poll() is not None:
                break
            time.sleep(0.2)
        procs.end_group(proc.pid)
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
    settings.ollama_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(settings.ollama_dir / "server.lock")):
        if (server := running_server(settings)) is not None:
            return server
        if (hung := _recorded_server(settings)) is not None and hung.pid:
            # Alive but silent for server_start_timeout_s: ended, so one server owns the models dir.
            log(f"Ollama (pid {hung.pid}) stopped answering at {hung.url}; restarting it")
            procs.end_group(hung.pid, grace_s=2.0)
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
        procs.end_group(state.pid)
    _kill_runners(settings)
    path.unlink(missing_ok=True)
    return was_running
