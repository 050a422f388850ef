"""The batches a project has submitted, on disk: training/.cache/batches.sqlite.

A batch is written here before it is submitted (its tag, model and every request's custom_id,
record, step and request text) and gets its provider id as soon as the provider gives one,
before the run waits on it. So a run killed at any point leaves what it submitted here, and the
next run re-attaches to it (shaping.dispatch.batch) rather than paying again: a request is
never in two open batches. A batch is closed once it has ended and its results were read into
the request cache; `isf batch list` shows the open ones. WAL mode with synchronous=NORMAL, as
the request cache: a commit survives kill -9.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "batches.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    tag TEXT PRIMARY KEY,
    batch_id TEXT,
    pipeline TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    requests INTEGER NOT NULL,
    round INTEGER NOT NULL,
    state TEXT NOT NULL,
    status TEXT NOT NULL,
    succeeded INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_items (
    tag TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    record_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    request TEXT NOT NULL,
    PRIMARY KEY (tag, custom_id)
);
CREATE INDEX IF NOT EXISTS batches_model ON batches (model, state);
"""

#: `state`: written, not yet confirmed by the provider / submitted, results not yet read / done
SUBMITTING, OPEN, CLOSED = "submitting", "open", "closed"


@dataclass(frozen=True)
class BatchRow:
    tag: str
    batch_id: str | None
    pipeline: str
    model: str
    provider: str
    requests: int
    round: int
    state: str
    status: str
    succeeded: int
    failed: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class ItemRow:
    record_id: str
    step: int
    request: str


class BatchStore:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / FILE_NAME
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)

    def begin(self, tag: str, pipeline: str, model: str, provider: str, round_: int,
              items: Iterable[tuple[str, str, int, str]]) -> None:
        """Record a batch about to be submitted: (custom_id, record_id, step, request) per item."""
        items = list(items)
        now = time.time()
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT INTO batches VALUES (?, NULL, ?, ?, ?, ?, ?, ?, 'submitting', 0, 0, ?, ?)",
                             (tag, pipeline, model, provider, len(items), round_, SUBMITTING, now, now))
            self._db.executemany("INSERT OR REPLACE INTO batch_items VALUES (?, ?, ?, ?, ?)",
                                 [(tag, *item) for item in items])

    def submitted(self, tag: str, batch_id: str, status: str) -> None:
        self._db.execute("UPDATE batches SET batch_id = ?, state = ?, status = ?, updated_at = ? WHERE tag = ?",
                         (batch_id, OPEN, status, time.time(), tag))

    def update(self, tag: str, status: str, succeeded: int, failed: int) -> None:
        self._db.execute("UPDATE batches SET status = ?, succeeded = ?, failed = ?, updated_at = ? WHERE tag = ?",
                         (status, succeeded, failed, time.time(), tag))

    def close(self, tag: str) -> None:
        """The batch has ended and its results are read: its items are forgotten."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE batches SET state = ?, updated_at = ? WHERE tag = ?", (CLOSED, time.time(), tag))
            self._db.execute("DELETE FROM batch_items WHERE tag = ?", (tag,))

    def drop(self, tag: str) -> None:
        """A batch that was never created (its submission failed)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM batches WHERE tag = ?", (tag,))
            self._db.execute("DELETE FROM batch_items WHERE tag = ?", (tag,))

    def batches(self, model: str | None = None, include_closed: bool = False) -> list[BatchRow]:
        where, args = [], []
        if model is not None:
            where.append("model = ?")
            args.append(model)
        if not include_closed:
            where.append("state != ?")
            args.append(CLOSED)
        sql = "SELECT * FROM batches" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY created_at"
        return [BatchRow(*row) for row in self._db.execute(sql, args)]

    def find(self, batch_id: str) -> BatchRow | None:
        """The batch with this provider id (or our tag)."""
        row = self._db.execute("SELECT * FROM batches WHERE batch_id = ? OR tag = ?", (batch_id, batch_id)).fetchone()
        return BatchRow(*row) if row else None

    def keys(self, tag: str) -> list[str]:
        """The batch's custom_ids in the order they were submitted (its lines)."""
        return [row[0] for row in
                self._db.execute("SELECT custom_id FROM batch_items WHERE tag = ? ORDER BY rowid", (tag,))]

    def items(self, tag: str) -> dict[str, ItemRow]:
        return {row[0]: ItemRow(*row[1:]) for row in
                self._db.execute("SELECT custom_id, record_id, step, request FROM batch_items WHERE tag = ?", (tag,))}

    def close_db(self) -> None:
        self._db.close()
