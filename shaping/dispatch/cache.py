"""Every answered request, kept in SQLite so that no request is paid for twice.

The key is a hash of the model's fingerprint, the messages, the params as sent, the record id
and the step index: re-running a record replays its answers in order, a changed prompt misses
for that record only, and changed params miss for that model only. Only successful responses
are stored; failures are tried again next time.

Each answer is committed before the task that asked for it sees it (`RequestCache.store`), so a
run killed at any moment, even with kill -9, has every answer its tasks have received on disk,
and the server never sees a record's next request before the previous answer is committed.
Commits are grouped (`GroupCommitter`): the answers that arrive together, in one turn of the
event loop or while a commit runs, share one transaction; an answer that arrives alone is
committed alone, at once. WAL mode with synchronous=NORMAL: a commit is a write to the WAL file,
with no fsync, which the process's death (kill -9) cannot undo, though a power loss can.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import orjson

from shaping.errors import ShapingError
from shaping.requests import LLMMessage, ModelResponse

SCHEMA_VERSION = 1
FILE_NAME = "requests.sqlite"
INSERT = "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    model TEXT NOT NULL,
    record_id TEXT NOT NULL,
    step INTEGER NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS answers_pipeline ON answers (pipeline);
"""


def request_key(fingerprint: str, messages: list[LLMMessage], params: dict, record_id: str, step: int) -> str:
    payload = orjson.dumps(
        [fingerprint, [m.key() for m in messages], params, record_id, step],
        option=orjson.OPT_SORT_KEYS, default=str,
    )
    return hashlib.sha256(payload).hexdigest()


def request_text(messages: list[LLMMessage], params: dict) -> str:
    """The request as an `answers` row keeps it (readable, for `isf cache` and tests)."""
    return orjson.dumps({"messages": [m.wire() for m in messages], "params": params}, default=str).decode()


def answer_row(key: str, pipeline: str, model: str, record_id: str, step: int,
               messages: list[LLMMessage], params: dict, response: ModelResponse) -> tuple:
    """One `answers` row: the request as sent and the response."""
    return text_row(key, pipeline, model, record_id, step, request_text(messages, params), response)


def text_row(key: str, pipeline: str, model: str, record_id: str, step: int, request: str,
             response: ModelResponse) -> tuple:
    """One `answers` row with the request as `request_text` wrote it."""
    return (key, pipeline, model, record_id, step, request, response.model_dump_json(), time.time())


class CacheWriteError(ShapingError):
    """An answer could not be committed: the run stops rather than go on paying for answers
    it cannot keep."""


class CacheUnreadable(ShapingError):
    """A cache opened read-only that cannot be read as this version's."""


@dataclass(eq=False)
class _Batch:
    rows: dict[str, tuple] = field(default_factory=dict)
    done: anyio.Event = field(default_factory=anyio.Event)
    error: BaseException | None = None


class GroupCommitter:
    """Group commit: `await store(key, row)` returns once the row is committed by `commit`.

    One commit runs at a time. A sender that finds the writer free commits the open batch: it
    first lets the event loop finish its turn, so that the answers that came in with its own
    join it, then commits them all. Rows stored while a commit runs (`commit` may return an
    awaitable: the Ray cache actor's call) wait in the next batch, which the first of their
    senders to wake commits when that one ends. So a commit holds one row when answers are rare
    and all that arrived together when they are not, and no one waits on a timer. `get` and
    `rows` see the rows not yet committed.
    """

    def __init__(self, commit: Callable[[list[tuple]], Awaitable[object] | None]) -> None:
        self._commit = commit
        self._open = _Batch()  # rows stored since the running commit took its own
        self._running: _Batch | None = None
        self.commits = 0  # transactions so far (tests count them)

    def get(self, key: str) -> tuple | None:
        row = self._open.rows.get(key)
        if row is None and self._running is not None:
            row = self._running.rows.get(key)
        return row

    def rows(self) -> list[tuple]:
        """Rows stored and not yet committed (or being committed now)."""
        running = self._running
        if running is None or running is self._open:
            return list(self._open.rows.values())
        return [*running.rows.values(), *self._open.rows.values()]

    def take_open(self) -> list[tuple]:
        """The open batch's rows, for a synchronous commit (their senders, if any remain, find
        nothing left to commit)."""
        rows = list(self._open.rows.values())
        self._open.rows = {}
        return rows

    async def store(self, key: str, row: tuple) -> None:
        batch = self._open
        batch.rows[key] = row
        while not batch.done.is_set():
            running = self._running
            if running is None:  # the writer is free, and the open batch is ours: commit it
                await self._commit_open()
            else:
                await running.done.wait()
        if batch.error is not None:
            raise CacheWriteError(f"the request cache could not store an answer: "
                                  f"{type(batch.error).__name__}: {batch.error}") from batch.error

    async def _commit_open(self) -> None:
        batch = self._running = self._open
        try:
            await anyio.lowlevel.checkpoint()  # the rest of this turn's answers join the batch
        finally:  # cancelled or not: the batch holds the other senders' rows too
            self._open = _Batch()
            try:
                if batch.rows:
                    pending = self._commit(list(batch.rows.values()))
                    if pending is not None:
                        with anyio.CancelScope(shield=True):
                            await pending
                    self.commits += 1
            except BaseException as exc:  # every sender of the batch raises CacheWriteError
                batch.error = exc
                if not isinstance(exc, Exception):
                    raise
            finally:
                self._running = None
                batch.done.set()


@dataclass(frozen=True)
class CacheStats:
    path: Path
    size_bytes: int
    by_pipeline: dict[str, int]


class RequestCache:
    """One SQLite file per project, under training/.cache/."""

    def __init__(self, folder: Path, read_only: bool = False) -> None:
        """`read_only`: look answers up, never write (a dry run); the file must exist and be of
        this version (else CacheUnreadable)."""
        self.path = folder / FILE_NAME
        self.moved_aside: Path | None = None
        if read_only:
            self._db = self._open_read_only()
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self._db = self._open()
        # commits on the event loop's thread, as the batches of 256 before them were: measured,
        # a worker thread cost more CPU per request (the GIL handed back and forth for every row)
        self._group = GroupCommitter(self._write)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # a commit appends to the WAL without an fsync: a killed process cannot undo it
            db.execute("PRAGMA synchronous=NORMAL")
            # checkpoint the WAL every ~40 MB rather than every 4 MB: the pages every insert
            # touches (the key index's) are copied back once per checkpoint, not ten times;
            # measured: 26 -> 15 us of CPU per stored answer
            db.execute("PRAGMA wal_autocheckpoint=10000")
            db.execute("PRAGMA busy_timeout=10000")
            version = self._schema_version(db)
        except sqlite3.DatabaseError:  # not a database at all
            db.close()
            return self._move_aside("unreadable")
        if version is None:
            db.executescript(SCHEMA)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        elif version != SCHEMA_VERSION:
            db.close()
            return self._move_aside(f"v{version}")
        return db

    def _open_read_only(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            version = self._schema_version(db)
        except sqlite3.Error as exc:
            raise CacheUnreadable(f"{self.path}: {exc}") from exc
        if version != SCHEMA_VERSION:
            db.close()
            raise CacheUnreadable(f"{self.path} is from another version of shaping (schema {version})")
        return db

    @staticmethod
    def _schema_version(db: sqlite3.Connection) -> int | None:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "meta" not in tables:
            return 0
        row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _move_aside(self, why: str) -> sqlite3.Connection:
        """Keep a cache this version cannot use (nothing is deleted) and start a new one."""
        target = self.path.with_name(f"{self.path.name}.{why}.{int(time.time())}.bak")
        for suffix in ("", "-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                side.rename(Path(f"{target}{suffix}"))
        self.moved_aside = target
        return self._open()

    def holds(self, pipeline: str) -> bool:
        """Whether any answer of `pipeline` is stored. A pipeline with none (its first run, or
        after `isf cache clear NAME`) skips lookups: each would cost a query and find nothing."""
        if any(row[1] == pipeline for row in self._group.rows()):
            return True
        return self._db.execute("SELECT 1 FROM answers WHERE pipeline = ? LIMIT 1", (pipeline,)).fetchone() is not None

    def get(self, key: str) -> ModelResponse | None:
        pending = self._group.get(key)
        if pending is not None:
            stored = pending[6]
        else:
            row = self._db.execute("SELECT response FROM answers WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            stored = row[0]
        response = ModelResponse.model_validate_json(stored)
        response.cached = True
        return response

    def answer_lengths(self, model: str) -> tuple[float | None, int]:
        """The mean completion tokens of the latest (up to 1,000) stored answers of model `model`
        (a shaping.toml name), and how many that is: what a dry run expects answers to take."""
        row = self._db.execute(
            "SELECT AVG(json_extract(response, '$.usage.completion_tokens')), COUNT(*) FROM "
            "(SELECT response FROM answers WHERE model = ? ORDER BY rowid DESC LIMIT 1000)", (model,)).fetchone()
        return row[0], row[1]

    async def store(self, key: str, pipeline: str, model: str, record_id: str, step: int,
                    messages: list[LLMMessage], params: dict, response: ModelResponse) -> None:
        """Keep an answer; returns once it is committed, in one transaction with the answers
        that arrived in the same turn of the event loop."""
        await self._group.store(key, answer_row(key, pipeline, model, record_id, step, messages, params, response))

    def _write(self, rows: list[tuple]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(INSERT, rows)

    def flush(self) -> None:
        """Commit what `store` was given and has not committed (rows whose senders were all
        cancelled while they waited: none when commits run on the event loop, as here)."""
        rows = self._group.take_open()
        if rows:
            self._write(rows)

    def rows_for(self, record_ids: list[str]) -> dict[str, str]:
        """{key: stored response} for every answer of these records (a shard's prefetch)."""
        self.flush()
        found: dict[str, str] = {}
        for start in range(0, len(record_ids), 500):
            chunk = record_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(self._db.execute(f"SELECT key, response FROM answers WHERE record_id IN ({marks})", chunk))
        return found

    def put_rows(self, rows: list[tuple]) -> None:
        """Commit rows as `answer_row` builds them (answers made elsewhere, e.g. by Ray workers),
        in one transaction, before returning."""
        if rows:
            self._write([tuple(row) for row in rows])

    def stats(self) -> CacheStats:
        self.flush()
        rows = self._db.execute("SELECT pipeline, COUNT(*) FROM answers GROUP BY pipeline ORDER BY pipeline")
        size = sum(Path(f"{self.path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{self.path}{s}").exists())
        return CacheStats(self.path, size, dict(rows.fetchall()))

    def clear(self, pipeline: str | None = None) -> int:
        self.flush()
        if pipeline is None:
            deleted = self._db.execute("DELETE FROM answers").rowcount
        else:
            deleted = self._db.execute("DELETE FROM answers WHERE pipeline = ?", (pipeline,)).rowcount
        self._db.execute("VACUUM")
        return deleted

    def close(self) -> None:
        self.flush()
        self._db.close()
