"""SQLite as ragft uses it: the run store and the job table, each shared by several processes.

WAL lets readers (the app's pages) read while an evaluation or a job writes; the busy timeout
makes a second writer wait instead of failing; BEGIN IMMEDIATE takes the write lock before the
first read, so a check and the write it decides are one step across processes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 30


def connect(path: Path, check_same_thread: bool = True) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit, see `immediate`) in WAL mode."""
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=check_same_thread)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed when the block ends, rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
