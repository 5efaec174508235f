"""SQLite run history: every answer and every score is written as soon as it exists.

WAL mode and a busy timeout let two evaluations (CLI and app) write at once; each write is its
own transaction, so a killed process loses at most the answer it was producing. Within one process
the connection is shared by the answering threads (`--concurrency`): a lock serialises their
transactions, since SQLite has one transaction per connection.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from eval.records import AnswerRow, NewAnswer, RunListing, RunRecord, StoredScore
from pipelines import db as sqlite_db
from pipelines.errors import RagftError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, corpus TEXT NOT NULL, arms TEXT NOT NULL, config TEXT NOT NULL,
  created REAL NOT NULL, status TEXT NOT NULL, info TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS answers (
  run_id TEXT NOT NULL, arm TEXT NOT NULL, qid TEXT NOT NULL, question TEXT NOT NULL, model TEXT NOT NULL,
  text TEXT NOT NULL, passages TEXT NOT NULL, retrieval_ms REAL, ttft_ms REAL, total_ms REAL,
  prompt_tokens INTEGER, output_tokens INTEGER, eval_ms REAL, tokens_per_s REAL, created REAL NOT NULL,
  error TEXT, PRIMARY KEY (run_id, arm, qid)
);
CREATE TABLE IF NOT EXISTS events (
  run_id TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scores (
  run_id TEXT NOT NULL, arm TEXT NOT NULL, qid TEXT NOT NULL, metric TEXT NOT NULL, value REAL, error TEXT,
  PRIMARY KEY (run_id, arm, qid, metric)
);
CREATE TABLE IF NOT EXISTS probes (
  run_id TEXT NOT NULL, role TEXT NOT NULL, kind TEXT NOT NULL, pid TEXT NOT NULL, model TEXT NOT NULL,
  text TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (run_id, role, pid)
);
"""


ANSWER_COLUMNS = ("run_id", "arm", "qid", "question", "model", "text", "passages", "retrieval_ms", "ttft_ms", "total_ms",
                  "prompt_tokens", "output_tokens", "eval_ms", "tokens_per_s", "created", "error")


def _migrate(db: sqlite3.Connection) -> None:
    """A database written before answers could fail (the reference arms) gets the error column."""
    if "error" not in {r[1] for r in db.execute("PRAGMA table_info(answers)")}:
        db.execute("ALTER TABLE answers ADD COLUMN error TEXT")


ScoreRow = tuple[str, str, str, float | None, str | None]  # arm, qid, metric, value, error (None when scored)


class StoreError(RagftError):
    """The run database cannot be opened or is damaged."""


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = sqlite_db.connect(path, check_same_thread=False)
            ok = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise sqlite3.DatabaseError(ok)
            self.db.executescript(SCHEMA)
            _migrate(self.db)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the run database {path} is damaged: {exc}",
                             f"ragft never overwrites it; move it aside (e.g. `mv {path} {path}.broken`) and run again, "
                             "or restore a backup") from exc
        self.db.row_factory = sqlite3.Row
        self._tx_lock = threading.RLock()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        with self._tx_lock, sqlite_db.immediate(self.db) as db:
            yield db

    def close(self) -> None:
        self.db.close()

    def backup(self) -> Path:
        """A consistent copy through SQLite's online backup: a plain file copy of a WAL database
        misses every commit still in the -wal file."""
        dest = self.path.with_suffix(f".{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.bak")
        target = sqlite3.connect(dest)
        try:
            with self._tx_lock:
                self.db.backup(target)
        finally:
            target.close()
        return dest

    # runs
    def ensure_run(self, run_id: str, corpus: str, arms: list[str], config: dict[str, Any]) -> bool:
        """Create the run if new; True when it already existed (a resume)."""
        with self.tx() as db:
            row = db.execute("SELECT run_id FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row:
                db.execute("UPDATE runs SET status='running' WHERE run_id=?", (run_id,))
                return True
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?)",
                       (run_id, corpus, json.dumps(arms), json.dumps(config), time.time(), "running", "{}"))
            return False

    def set_status(self, run_id: str, status: str, info: dict[str, Any] | None = None) -> None:
        with self.tx() as db:
            if info is None:
                db.execute("UPDATE runs SET status=? WHERE run_id=?", (status, run_id))
            else:
                db.execute("UPDATE runs SET status=?, info=? WHERE run_id=?", (status, json.dumps(info, default=str), run_id))

    def run(self, run_id: str) -> RunRecord:
        row = self.db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise RagftError(f"no stored run '{run_id}'", "see `ragft runs`")
        return cast(RunRecord, {**dict(row), "arms": json.loads(row["arms"]), "config": json.loads(row["config"]),
                                "info": json.loads(row["info"])})

    def runs(self) -> list[RunListing]:
        rows = self.db.execute("SELECT r.*, (SELECT COUNT(*) FROM answers a WHERE a.run_id=r.run_id) AS n_answers "
                               "FROM runs r ORDER BY created").fetchall()
        return [cast(RunListing, {**dict(r), "arms": json.loads(r["arms"])}) for r in rows]

    def add_event(self, run_id: str, kind: str, detail: str) -> None:
        """What happened to a run besides answers (server restarts, retries): part of its record."""
        with self.tx() as db:
            db.execute("INSERT INTO events VALUES (?,?,?,?)", (run_id, time.time(), kind, detail))

    def events(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM events WHERE run_id=? ORDER BY at", (run_id,))]

    def delete_run(self, run_id: str) -> Path:
        """Forget a run's answers and scores; the database is backed up first."""
        backup = self.backup()
        with self.tx() as db:
            for table in ("scores", "answers", "events", "probes", "runs"):
                db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
        return backup

    # answers
    def answered(self, run_id: str, arm: str) -> set[str]:
        """Questions this arm has answered; a failed answer (a reference endpoint's timeout) is asked again."""
        return {r[0] for r in self.db.execute("SELECT qid FROM answers WHERE run_id=? AND arm=? AND error IS NULL",
                                              (run_id, arm))}

    def save_answer(self, run_id: str, row: NewAnswer) -> bool:
        """Insert once; a second writer of the same answer is ignored (never answered twice). A failed
        answer gives way to a new attempt, and its scores go with it."""
        with self.tx() as db:
            key = (run_id, row["arm"], row["qid"])
            if db.execute("DELETE FROM answers WHERE run_id=? AND arm=? AND qid=? AND error IS NOT NULL", key).rowcount:
                db.execute("DELETE FROM scores WHERE run_id=? AND arm=? AND qid=?", key)
            cur = db.execute(
                f"INSERT OR IGNORE INTO answers ({', '.join(ANSWER_COLUMNS)}) VALUES ({', '.join('?' * len(ANSWER_COLUMNS))})",
                (run_id, row["arm"], row["qid"], row["question"], row["model"], row["text"], json.dumps(row["passages"]),
                 row["retrieval_ms"], row["ttft_ms"], row["total_ms"], row["prompt_tokens"], row["output_tokens"],
                 row["eval_ms"], row["tokens_per_s"], time.time(), row.get("error")))
            return cur.rowcount == 1

    def answers(self, run_id: str) -> list[AnswerRow]:
        rows = self.db.execute("SELECT * FROM answers WHERE run_id=? ORDER BY arm, qid", (run_id,)).fetchall()
        return [cast(AnswerRow, {**dict(r), "passages": json.loads(r["passages"])}) for r in rows]

    # scores
    def scored(self, run_id: str) -> set[tuple[str, str, str]]:
        return {(r[0], r[1], r[2]) for r in self.db.execute("SELECT arm, qid, metric FROM scores WHERE run_id=?", (run_id,))}

    def save_scores(self, run_id: str, rows: list[ScoreRow]) -> None:
        with self.tx() as db:
            db.executemany("INSERT OR REPLACE INTO scores VALUES (?,?,?,?,?,?)", [(run_id, *r) for r in rows])

    def scores(self, run_id: str) -> list[StoredScore]:
        rows = self.db.execute("SELECT * FROM scores WHERE run_id=? ORDER BY arm, qid, metric", (run_id,))
        return [cast(StoredScore, dict(r)) for r in rows]

    # the forgetting probe (eval/forgetting.py): base and ft on the same fixed questions
    def save_probe(self, run_id: str, row: dict[str, Any]) -> None:
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO probes VALUES (?,?,?,?,?,?,?)",
                       (run_id, row["role"], row["kind"], row["pid"], row["model"], row["text"], row["value"]))

    def probes(self, run_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM probes WHERE run_id=? ORDER BY role, pid", (run_id,))]
