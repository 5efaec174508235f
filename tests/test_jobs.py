"""Background jobs against real processes: detached start, exit codes, dedupe, cancel, outside kills."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from eval import services
from pipelines.config import Settings
from ui import jobs

PY = sys.executable


def _wait(settings: Settings, job_id: int, timeout_s: float = 120) -> jobs.Job:
    """Poll a job until it ends (hang protection only: the deadline is never what the test checks)."""
    deadline = time.monotonic() + timeout_s
    while (job := jobs.get(settings, job_id)).running:
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status}; log:\n{job.log_tail()}")
        time.sleep(0.1)
    return job


def _pid_printed(settings: Settings, job_id: int, marker: str, timeout_s: float = 120) -> int:
    """The pid the job printed after `marker` (the log's first line, the command, is skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in jobs.get(settings, job_id).log_tail(50).splitlines():
            if line.startswith(marker + " "):
                return int(line.split()[1])
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never printed {marker!r}")


def _py(code: str) -> list[str]:
    return [PY, "-c", code]


def test_job_runs_detached_and_records_its_exit_code(settings: Settings) -> None:
    job = jobs.start(settings, "demo", ["a"], command=_py("print('hello from the job')"))
    assert job.running and job.pid and job.log_path.parent == jobs.jobs_dir(settings)
    assert os.getpgid(job.pid) == job.pid != os.getpgid(0)  # its own process group
    done = _wait(settings, job.id)
    assert (done.status, done.exit_code) == (jobs.DONE, 0)
    assert "hello from the job" in done.log_tail() and done.finished and done.finished >= done.started

    failed = _wait(settings, jobs.start(settings, "demo", ["b"], command=_py("import sys; print('bad'); sys.exit(3)")).id)
    assert (failed.status, failed.exit_code) == (jobs.FAILED, 3) and "bad" in failed.log_tail()


def test_identical_running_job_is_returned_not_started_twice(settings: Settings) -> None:
    sleeper = _py("import time; time.sleep(60)")
    first = jobs.start(settings, "demo", ["x"], command=sleeper, meta={"n": 1})
    try:
        again = jobs.start(settings, "demo", ["x"], command=sleeper)
        assert again.id == first.id and again.pid == first.pid and again.meta == {"n": 1}
        # Another process (a second browser tab is another script run; here another interpreter) sees the same job.
        code = ("import json, sys; from ui import jobs; from pipelines.config import Settings; "
                f"print(jobs.start(Settings(data_dir={str(settings.data_dir)!r}), 'demo', ['x'], "
                f"command={sleeper!r}).id)")
        other = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
        assert int(other.stdout.strip()) == first.id
        different = jobs.start(settings, "demo", ["y"], command=sleeper)
        assert different.id != first.id
        assert {j.id for j in jobs.list_jobs(settings, "demo") if j.running} == {first.id, different.id}
        assert jobs.latest(settings, "demo", subject="x").id == first.id  # type: ignore[union-attr]
        jobs.cancel(settings, different.id, grace_s=5)
    finally:
        jobs.cancel(settings, first.id, grace_s=5)
    # Once it has ended, the same command starts a new job (that is how a cancelled run is resumed).
    after = jobs.start(settings, "demo", ["x"], command=_py("pass"))
    assert after.id != first.id
    _wait(settings, after.id)


def test_cancel_ends_the_whole_process_group(settings: Settings) -> None:
    # The job starts a grandchild: cancel must reach it too, not only the process it started.
    code = ("import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
            "print('grandchild', p.pid, flush=True); time.sleep(600)")
    job = jobs.start(settings, "demo", ["cancel"], command=_py(code))
    grandchild = _pid_printed(settings, job.id, "grandchild")
    assert psutil.pid_exists(grandchild)
    ended = jobs.cancel(settings, job.id, grace_s=10)
    assert ended.status == jobs.CANCELLED and ended.cancel_requested
    assert ended.exit_code == -signal.SIGTERM  # the wrapper outlived SIGTERM to record how the command ended
    assert not _running(grandchild) and not _running(job.pid)


def test_cancel_kills_a_job_that_ignores_sigterm(settings: Settings) -> None:
    code = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('stubborn', os.getpid(), "
            "flush=True); time.sleep(600)")
    job = jobs.start(settings, "demo", ["stubborn"], command=_py(code))
    pid = _pid_printed(settings, job.id, "stubborn")
    ended = jobs.cancel(settings, job.id, grace_s=1)
    assert ended.status == jobs.CANCELLED and not _running(pid)


def test_status_after_the_command_is_killed_from_outside(settings: Settings) -> None:
    job = jobs.start(settings, "demo", ["victim"], command=_py("import os, time; print('victim', os.getpid(), flush=True); "
                                                                "time.sleep(600)"))
    pid = _pid_printed(settings, job.id, "victim")
    os.kill(pid, signal.SIGKILL)
    ended = _wait(settings, job.id)
    assert (ended.status, ended.exit_code) == (jobs.FAILED, -signal.SIGKILL)

    # The wrapper itself killed too: no exit code can be recorded, and the job still does not stay "running".
    job = jobs.start(settings, "demo", ["both"], command=_py("import time; time.sleep(600)"))
    assert job.pid
    os.killpg(job.pid, signal.SIGKILL)
    ended = _wait(settings, job.id)
    assert (ended.status, ended.exit_code) == (jobs.FAILED, None)


def test_jobs_persist_for_a_later_reader(settings: Settings) -> None:
    job = _wait(settings, jobs.start(settings, "demo", ["keep"], command=_py("print(42)")).id)
    reader = Settings(data_dir=settings.data_dir)  # a fresh process's view: only the database
    (seen,) = jobs.list_jobs(reader, "demo")
    assert (seen.id, seen.status, seen.args, seen.kind) == (job.id, jobs.DONE, ["keep"], "demo")
    assert jobs.list_jobs(reader, "other") == [] and jobs.latest(reader, "demo", subject="nope") is None
    with pytest.raises(jobs.JobError, match="no job 999"):
        jobs.get(reader, 999)


def test_a_service_runs_as_a_job_from_its_spec(settings: Settings) -> None:
    job = jobs.start_service(settings, "index", services.IndexSpec("no-such-corpus"))
    assert job.args == {"corpus": "no-such-corpus", "rebuild": False} and job.subject == "no-such-corpus"
    assert job.command == "index no-such-corpus"
    ended = _wait(settings, job.id)
    # the real service ran in the job's process and said why it could not index
    assert (ended.status, ended.exit_code) == (jobs.FAILED, 1), ended.log_tail()
    assert "'no-such-corpus' is not a known corpus" in ended.log_tail() and ended.produced is None
    assert jobs.latest(settings, "index", subject="no-such-corpus").id == job.id  # type: ignore[union-attr]


def test_a_spec_the_service_would_refuse_is_refused_before_any_job(settings: Settings) -> None:
    from pipelines.errors import RagftError

    with pytest.raises(RagftError, match="unknown fields: arm"):
        services.spec_from("evaluate", {"corpus": "x", "arm": ["base"]})
    with pytest.raises(RagftError, match="'train' is not a ragft service"):
        services.spec_from("train", {})
    assert services.spec_from("evaluate", {"corpus": "x", "limit": 3}) == services.EvalSpec("x", limit=3)


def _running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_job_runs_with_the_model_it_was_started_for(settings: Settings) -> None:
    """The app's model picker reaches the command: its settings' model is the job's RAGFT_MODEL."""
    show = _py("import os; print('model', os.environ['RAGFT_MODEL'])")
    qwen = settings.model_copy(update={"model": "qwen2.5-coder-0.5b"})
    a = _wait(settings, jobs.start(settings, "demo", ["m"], command=show).id)
    b = _wait(settings, jobs.start(qwen, "demo", ["m"], command=show).id)
    assert a.id != b.id
    assert "model smollm2-135m" in a.log_tail() and "model qwen2.5-coder-0.5b" in b.log_tail()
