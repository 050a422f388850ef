"""What worked and what failed, kept across runs, so few-shot examples can learn from it.

    store = FeedbackStore(project.feedback_path)           # SQLite, training/.feedback.sqlite
    store.record("coding", prompt, output, ok=True)
    store.similar("coding", new_prompt, k=3)                # the most similar successes (BM25)
    store.failures_by_type("coding")                        # {"validation_error": 4, ...}

A pipeline opts in with one line, `feedback = Pipeline.feedback(examples=3)`: each run then
records its samples as successes and its error records as failures, and a task asks
`self.feedback.conversation(prompt, system=...)` for `[system] + similar successful examples
as user/assistant turns + prompt`. The examples are those known when the run started, so a run
is reproducible (and its cache stays valid) however the store grows during it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shaping.retrieval import Ranker
from shaping.quality.turns import message_text

SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    pipeline TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output TEXT,
    ok INTEGER NOT NULL,
    error_type TEXT,
    error TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_pipeline ON feedback (pipeline, ok);
"""


@dataclass(frozen=True)
class Example:
    prompt: str
    output: str
    score: float


class FeedbackStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._rankers: dict[str, tuple[Ranker, list[tuple[str, str]]]] = {}

    def record(self, pipeline: str, prompt: str, output: str | None, ok: bool,
               error: str | None = None, error_type: str | None = None) -> None:
        self.record_many(pipeline, [(prompt, output, ok, error_type, error)])

    def record_many(self, pipeline: str, rows: list[tuple[str, str | None, bool, str | None, str | None]]) -> None:
        now = time.time()
        with self._db:
            self._db.executemany(
                "INSERT INTO feedback (pipeline, prompt, output, ok, error_type, error, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", [(pipeline, p, o, int(ok), t, e, now) for p, o, ok, t, e in rows])
        self._rankers.pop(pipeline, None)

    def successes(self, pipeline: str) -> list[tuple[str, str]]:
        rows = self._db.execute("SELECT prompt, output FROM feedback WHERE pipeline = ? AND ok = 1 ORDER BY id",
                                (pipeline,))
        return [(p, o) for p, o in rows]

    def similar(self, pipeline: str, prompt: str, k: int = 3) -> list[Example]:
        """The `k` successful examples whose prompts are most like `prompt`, best first."""
        if pipeline not in self._rankers:
            pairs = self.successes(pipeline)
            self._rankers[pipeline] = (Ranker([p for p, _ in pairs]), pairs)
        ranker, pairs = self._rankers[pipeline]
        return [Example(pairs[i][0], pairs[i][1], score) for i, score in ranker.top(prompt, k)
                if pairs[i][0] != prompt]

    def failures_by_type(self, pipeline: str) -> dict[str, int]:
        rows = self._db.execute("SELECT COALESCE(error_type, 'unknown'), COUNT(*) FROM feedback "
                                "WHERE pipeline = ? AND ok = 0 GROUP BY 1 ORDER BY 2 DESC", (pipeline,))
        return dict(rows.fetchall())

    def failures(self, pipeline: str, error_type: str, limit: int = 20) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT prompt, error FROM feedback WHERE pipeline = ? AND ok = 0 AND error_type = ? "
                                "ORDER BY id DESC LIMIT ?", (pipeline, error_type, limit))
        return [{"prompt": p, "error": e} for p, e in rows]

    def record_run(self, pipeline: str, samples: Path, errors: Path) -> int:
        """Record a run's written samples as successes and its error records as failures."""
        rows: list[tuple] = []
        for line in _lines(samples):
            messages = json.loads(line).get("messages") or []
            users = [message_text(m) for m in messages if m.get("role") == "user"]
            answers = [message_text(m) for m in messages if m.get("role") == "assistant" and message_text(m)]
            if users and answers:
                rows.append((users[-1], answers[-1], True, None, None))
        for line in _lines(errors):
            error = json.loads(line)["__ERROR__"]
            prompt = json.dumps(error.get("input_data"), ensure_ascii=False, default=str)[:2000]
            rows.append((prompt, None, False, error.get("error"), error.get("message")))
        if rows:
            self.record_many(pipeline, rows)
        return len(rows)

    def close(self) -> None:
        self._db.close()


def _lines(path: Path):
    if path.exists():
        with open(path, encoding="utf-8") as f:
            yield from (line for line in f if line.strip())
