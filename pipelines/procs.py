"""Processes ragft starts (the Ollama server, background jobs): identity, liveness, ending them.

A pid alone is not an identity: after a crash or a reboot another process can hold it. ragft
records each process's start time (psutil) beside its pid and treats a process with another
start time as a different process, so it never reports a stranger as running or signals it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

import psutil


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


def process_started(pid: int) -> float | None:
    """A process's start time: with the pid, its identity (a reused pid has another start time)."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def alive(pid: int | None, started: float | None = None, tolerance_s: float = 0.5) -> bool:
    """The process runs (a zombie does not) and, when `started` is given, is the one that started then."""
    if pid is None:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it (no zombie left behind)
    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > tolerance_s:
            return False  # the pid was reused by another process
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is still in the process group."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pgid, os.WNOHANG)
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(proc.info["pid"]) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, PermissionError, OSError):
            continue
    return False


def end_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the process group, SIGKILL it if anything in it outlives `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and group_alive(pgid):
            time.sleep(0.1)
        if not group_alive(pgid):
            return
