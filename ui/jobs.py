"""The app's long work (setup, index, fine-tune, eval) as detached processes, recorded in SQLite.

A job runs one of the core's services (`eval.services`) with its typed spec, serialised as JSON —
the app never builds command lines — in its own session (process group), its output in a log file under
`<data dir>/jobs/`, and a row in `<data dir>/jobs.sqlite` (WAL). A small wrapper process starts
the command, waits for it and writes its exit code to a file, so the status is known even when
nobody was watching. Starting a job identical to one still running returns the running one: a
page refresh or a second browser tab never starts the same work twice.

Status comes from the process itself (psutil, with its start time, so a reused pid is not
mistaken for the job) and from the exit-code file. Cancel sends SIGTERM to the whole group, then
SIGKILL after a grace period. Progress is not tracked here: each kind of work persists its own
(answers in the run store, loss.jsonl, the index's progress file); the service records the id of
what it produces (an eval or fine-tune run) beside the log as soon as it is known: `Job.produced`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines import db as sqlite_db
from pipelines import procs
from pipelines.config import Settings
from pipelines.errors import RagftError

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, args TEXT NOT NULL, key TEXT NOT NULL,
  pid INTEGER, pid_started REAL, status TEXT NOT NULL, started REAL NOT NULL, finished REAL,
  exit_code INTEGER, log_path TEXT NOT NULL, cancel_requested INTEGER NOT NULL DEFAULT 0,
  meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, status);
"""


class JobError(RagftError):
    """A job could not be started, found or cancelled."""


@dataclass
class Job:
    id: int
    kind: str
    args: Any  # a service job: its spec (a dict); a plain command: its arguments (a list)
    pid: int | None
    status: str
    started: float
    finished: float | None
    exit_code: int | None
    log_path: Path
    cancel_requested: bool = False
    pid_started: float | None = None  # the process's start time: a reused pid is not the job
    meta: dict[str, Any] = field(default_factory=dict)  # what the starter wants to find again (e.g. a run's parameters)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def command(self) -> str:
        """What the job does, as the Status page and the job panels show it."""
        if isinstance(self.args, dict):
            shown = [f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in self.args.items()
                     if k != "corpus" and v not in (None, False, [], "")]
            return " · ".join([f"{self.kind} {self.args.get('corpus', '')}".strip(), *shown])
        return " ".join([self.kind, *map(str, self.args)])

    @property
    def subject(self) -> str | None:
        """The corpus the job works on, if any."""
        if isinstance(self.args, dict):
            return self.args.get("corpus")
        return str(self.args[0]) if self.args else None

    @property
    def produced(self) -> str | None:
        """The id of what the service made (eval run id, fine-tune run id), once it is known."""
        try:
            return str(json.loads(_result_path(self.log_path).read_text(encoding="utf-8"))["produced"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 16384))  # the end of a long log is enough
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


def jobs_dir(settings: Settings) -> Path:
    return settings.data_dir.expanduser() / "jobs"


def _db_path(settings: Settings) -> Path:
    return settings.data_dir.expanduser() / "jobs.sqlite"


@contextlib.contextmanager
def _connect(settings: Settings, write: bool = False) -> Iterator[sqlite3.Connection]:
    path = _db_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = sqlite_db.connect(path)
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, exc) from exc
    try:
        db.executescript(SCHEMA)
        db.row_factory = sqlite3.Row
        if write:  # one writer at a time across processes: the dedupe check and the insert are atomic
            with sqlite_db.immediate(db):
                yield db
        else:
            yield db
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, exc) from exc
    finally:
        db.close()


def _unusable(path: Path, exc: sqlite3.DatabaseError) -> JobError:
    return JobError(f"the job database {path} cannot be used: {exc}",
                    f"move it aside (e.g. `mv {path} {path}.broken`); running jobs keep running")


def _job(row: sqlite3.Row) -> Job:
    return Job(row["id"], row["kind"], json.loads(row["args"]), row["pid"], row["status"], row["started"],
               row["finished"], row["exit_code"], Path(row["log_path"]), bool(row["cancel_requested"]), row["pid_started"],
               json.loads(row["meta"]))


def _rc_path(log_path: Path) -> Path:
    return log_path.with_suffix(".rc")


def _result_path(log_path: Path) -> Path:
    return log_path.with_suffix(".result.json")


def start_service(settings: Settings, service: str, spec: Any, meta: dict[str, Any] | None = None) -> Job:
    """Run the core service `service` (e.g. "evaluate") with `spec` (its dataclass) as a job."""
    # Imported here, not at the top: the wrapper process (`python -m ui.jobs`) lives as long as its
    # job and should not hold the services' libraries in memory for nothing.
    from eval import services

    data = asdict(spec)
    services.spec_from(service, data)  # a spec the service would refuse fails here, in the page
    return _start(settings, service, data, lambda log_path: [sys.executable, "-m", "eval.services", service,
                                                            json.dumps(data), str(_result_path(log_path))], meta)


def start(settings: Settings, kind: str, args: Sequence[str], command: Sequence[str], meta: dict[str, Any] | None = None
          ) -> Job:
    """Run `command` as a job of `kind` (args: what it is about, the first one its subject)."""
    return _start(settings, kind, [str(a) for a in args], lambda _: list(command), meta)


def _start(settings: Settings, kind: str, args: Any, argv_for: Callable[[Path], list[str]],
           meta: dict[str, Any] | None) -> Job:
    """Start the job detached; an identical running job is returned instead."""
    key = json.dumps([kind, args, argv_for(Path("job.log")), settings.model])  # for another model: another job
    jobs_dir(settings).mkdir(parents=True, exist_ok=True)
    with _connect(settings, write=True) as db:
        for row in db.execute("SELECT * FROM jobs WHERE key=? AND status=?", (key, RUNNING)).fetchall():
            job = _refresh(db, _job(row))
            if job.running:
                return job
        cur = db.execute("INSERT INTO jobs (kind, args, key, status, started, log_path, meta) VALUES (?,?,?,?,?,?,?)",
                         (kind, json.dumps(args), key, RUNNING, time.time(), "", json.dumps(meta or {})))
        job_id = int(cur.lastrowid or 0)
        log_path = jobs_dir(settings) / f"job-{job_id}-{kind.replace(' ', '-')}.log"
        argv = argv_for(log_path)
        env = dict(os.environ, RAGFT_DATA_DIR=str(settings.data_dir.expanduser()), RAGFT_MODEL=settings.model,
                   PYTHONUNBUFFERED="1", COLUMNS="120")
        if settings.cache_dir:
            env["RAGFT_CACHE_DIR"] = str(settings.cache_dir.expanduser())
        with log_path.open("ab") as log:
            log.write(f"$ {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "ui.jobs", str(_rc_path(log_path)), "--", *argv],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    start_new_session=True,  # its own process group: cancel reaches every child, and it outlives the app
                )
            except OSError as exc:
                raise JobError(f"could not start `{' '.join(argv)}`: {exc}", "check that ragft is installed") from exc
        db.execute("UPDATE jobs SET pid=?, pid_started=?, log_path=? WHERE id=?",
                   (proc.pid, procs.process_started(proc.pid), str(log_path), job_id))
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
    return _job(row)


def _refresh(db: sqlite3.Connection, job: Job) -> Job:
    """Bring a running job's row up to date with its process and exit-code file."""
    if not job.running:
        return job
    rc_file = _rc_path(job.log_path)
    code: int | None = None
    if rc_file.is_file():
        with contextlib.suppress(ValueError, OSError):
            code = int(rc_file.read_text(encoding="ascii").strip())
    elif procs.alive(job.pid, job.pid_started):
        return job
    # Exit 0 is done even when a cancel came too late; no exit code at all means killed from outside.
    status = DONE if code == 0 else CANCELLED if job.cancel_requested else FAILED
    finished = rc_file.stat().st_mtime if rc_file.is_file() else time.time()
    db.execute("UPDATE jobs SET status=?, exit_code=?, finished=? WHERE id=? AND status=?",
               (status, code, finished, job.id, RUNNING))
    job.status, job.exit_code, job.finished = status, code, finished
    return job


def get(settings: Settings, job_id: int) -> Job:
    with _connect(settings) as db:
        row = db.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            raise JobError(f"no job {job_id}", "see the jobs listed on the Status page")
        return _refresh(db, _job(row))


def list_jobs(settings: Settings, kind: str | None = None, subject: str | None = None, limit: int = 50) -> list[Job]:
    """Newest first; `subject` keeps jobs whose first argument it is (usually the corpus)."""
    if not _db_path(settings).exists():
        return []
    with _connect(settings) as db:
        sql, params = "SELECT * FROM jobs", []
        if kind is not None:
            sql, params = sql + " WHERE kind=?", [kind]
        rows = db.execute(sql + " ORDER BY id DESC", params).fetchall()
        found = [_refresh(db, j) for j in map(_job, rows) if subject is None or j.subject == subject]
    return found[:limit]


def latest(settings: Settings, kind: str, subject: str | None = None) -> Job | None:
    found = list_jobs(settings, kind, subject, limit=1)
    return found[0] if found else None


def cancel(settings: Settings, job_id: int, grace_s: float = 10.0) -> Job:
    """SIGTERM the job's process group, SIGKILL it after `grace_s`; returns the job as it ended."""
    job = get(settings, job_id)
    if not job.running or job.pid is None:
        return job
    with _connect(settings, write=True) as db:
        db.execute("UPDATE jobs SET cancel_requested=1 WHERE id=?", (job_id,))
    procs.end_group(job.pid, grace_s)  # the wrapper leads its own session: its pid is the group id
    return get(settings, job_id)


# ---------------------------------------------------------------- the wrapper process


def _wrap(rc_path: Path, argv: list[str]) -> int:
    """Run `argv`, wait for it, and record its exit code atomically in `rc_path`."""
    # A cancel signals the whole group: the command itself stops, the wrapper stays to record how.
    # (A handler, not SIG_IGN: an ignored disposition would be inherited by the command.)
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        code = subprocess.Popen(argv).wait()
    except OSError as exc:
        print(f"could not run {argv[0]}: {exc}", flush=True)
        code = 127
    tmp = rc_path.with_suffix(".rc.tmp")
    tmp.write_text(str(code), encoding="ascii")
    os.replace(tmp, rc_path)
    return 0


if __name__ == "__main__":  # python -m ui.jobs RC_PATH -- ARGV...
    sep = sys.argv.index("--")
    sys.exit(_wrap(Path(sys.argv[1]), sys.argv[sep + 1:]))
