"""What the front doors show about stored runs: which run a command is answering, how far it is,
whether a process is answering it right now, and the one-off costs its arms carry.

Read-only: everything comes from the run store, the runner's lock files and the corpus's index
and fine-tune records.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil

from eval.records import RunListing, RunRecord
from eval.store import Store
from pipelines import finetune_runs, rag
from pipelines.arms import ARMS
from pipelines.config import Settings
from pipelines.corpus import Corpus


def run_progress(store: Store, settings: Settings, run_id: str) -> dict[str, Any]:
    """Answers stored so far against answers expected, answers scored, and whether it is being answered now."""
    run = store.run(run_id)
    expected = int(run["config"].get("n_questions") or 0) * len(run["arms"])
    answered = len(store.answers(run_id))
    scored = len({(arm, qid) for arm, qid, _ in store.scored(run_id)})
    return {"run_id": run_id, "status": run["status"], "answers": answered, "expected": expected, "scored": scored,
            "active": run_active(settings, run_id)}


def lock_path(settings: Settings, run_id: str) -> Path:
    return settings.data_dir.expanduser() / "locks" / f"{run_id}.lock"  # where eval.runner locks a run it answers


def holder_path(lock: Path) -> Path:
    """Who holds a run's lock ("ragft pid N"), written by the runner once it has it."""
    return lock.with_suffix(".holder")


def run_active(settings: Settings, run_id: str) -> bool:
    """Whether a process holds the run's lock now, looked up without taking it.

    Taking the lock, even briefly, could make a runner starting at that moment refuse the run, so
    Linux's /proc/locks is read instead; elsewhere the pid the runner wrote is checked.
    """
    path = lock_path(settings, run_id)
    try:
        st = path.stat()
    except OSError:
        return False
    try:
        holder = holder_path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        holder = ""
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        table = Path("/proc/locks").read_text(encoding="ascii")
    except OSError:
        table = None
    if table is not None:
        return any("FLOCK" in line and key in line.split() for line in table.splitlines())
    pid = holder.rsplit(" ", 1)[-1]
    return pid.isdigit() and psutil.pid_exists(int(pid))


def one_off_seconds(corpus: Corpus, settings: Settings) -> dict[str, float]:
    """Compute each arm costs before its first answer: the index build (rag arms), the fine-tune (ft arms)."""
    index_s = rag.index_build_seconds(corpus, settings)
    run = finetune_runs.latest_run(corpus.name, settings)
    ft_s = (run["training"]["wall_s"] + run.get("export_s", 0.0)) if run else 0.0
    return {name: arm.one_off_s(index_s, ft_s) for name, arm in ARMS.items()}


def run_status(settings: Settings, run: RunRecord | RunListing) -> str:
    """A stored run's status as a user needs it: 'running' only while a process holds its lock."""
    if run["status"] not in ("running", "stopped") or run_active(settings, run["run_id"]):
        return str(run["status"])
    return "interrupted — the same evaluation (command or Evaluate page) resumes it"
