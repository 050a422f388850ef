"""What worked and what failed, kept across runs, so few-shot examples can learn from it.

    store = FeedbackStore(project.feedback_path)           # SQLite, training/.feedback.sqlite
    store.record("coding", prompt, output, ok=True)
    store.similar("coding", new_prompt, k=3)                # the most similar successes (BM25)
    store.failures_by_type("coding")                        # {"validation_error": 4, ...}
    store.similar_failures("coding", new_prompt, k=2)       # the most similar failures (BM25)

A pipeline opts in with one line, `feedback = Pipeline.feedback(examples=3)`: each run then
records its samples as successes and its error records as failures, and a task asks
`self.feedback.conversation(prompt, system=...)` for `[system] + similar successful examples
as user/assistant turns + prompt`. The examples are those known when the run started, so a run
is reproducible (and its cache stays valid) however the store grows during it.

`Pipeline.feedback(examples=3, failures=2)` also ends the prompt with the most similar earlier
failures (type and message) under "Previous errors to avoid". A failure's prompt is what its
record asked (the last user turn of its last request, without that section), else its input.

`progressive=True`: a record's first try has `start` examples (default 0); a record whose task
fails with an error type in `retry_on` (default: validation_error) is run once more with all
`examples` before its error is recorded (see shaping.record_hooks). The second try's requests
are later steps of the record, so they never replay the first try's cached answers.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shaping.retrieval import Ranker, tokenize
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


#: heads the failures section that `BoundFeedback.conversation` adds to a prompt
AVOID_HEADER = "Previous errors to avoid (earlier attempts at similar prompts failed this way):"
#: a failure's message is clipped to this many characters in a prompt
FAILURE_CHARS = 300
#: the share of a prompt's words an earlier failure's prompt must have to count as similar
MIN_OVERLAP = 0.3


@dataclass(frozen=True)
class Example:
    prompt: str
    output: str
    score: float


@dataclass(frozen=True)
class Failure:
    prompt: str
    error_type: str
    message: str
    score: float

    def line(self) -> str:
        """`- type: message`, the message on one line and clipped."""
        message = " ".join((self.message or "").split())
        if len(message) > FAILURE_CHARS:
            message = message[:FAILURE_CHARS - 3] + "..."
        return f"- {self.error_type}: {message}" if message else f"- {self.error_type}"


def without_avoid(prompt: str) -> str:
    """A prompt without the failures section a feedback conversation appended to it."""
    return prompt.split("\n\n" + AVOID_HEADER, 1)[0]


class FeedbackStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._rankers: dict[str, tuple[Ranker, list[tuple[str, str]]]] = {}
        self._failure_rankers: dict[str, tuple[Ranker, list[tuple[str, str, str]], list[set[str]]]] = {}

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
        self._failure_rankers.pop(pipeline, None)

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

    def similar_failures(self, pipeline: str, prompt: str, k: int = 2,
                         min_overlap: float = MIN_OVERLAP) -> list[Failure]:
        """The `k` earlier failures whose prompts are most like `prompt` (BM25), best first; one
        per (type, message): the same error twice says nothing new. A failure counts only where
        its prompt has at least `min_overlap` of the words of `prompt`: prompts made from one
        template share their boilerplate, and an error of an unrelated prompt is no warning."""
        wanted = set(tokenize(prompt))
        if k < 1 or not wanted:
            return []
        if pipeline not in self._failure_rankers:
            rows = [(p, t or "unknown", e or "") for p, t, e in self._db.execute(
                "SELECT prompt, error_type, error FROM feedback WHERE pipeline = ? AND ok = 0 ORDER BY id DESC",
                (pipeline,))]  # the newest first: of equal scores, the latest failure
            self._failure_rankers[pipeline] = (Ranker([p for p, _, _ in rows]), rows,
                                               [set(tokenize(p)) for p, _, _ in rows])
        ranker, rows, words = self._failure_rankers[pipeline]
        found: list[Failure] = []
        seen: set[tuple[str, str]] = set()
        for i, score in ranker.top(prompt, len(rows)):
            failed_prompt, kind, message = rows[i]
            if len(wanted & words[i]) < min_overlap * len(wanted):
                continue
            if (kind, message) not in seen:
                seen.add((kind, message))
                found.append(Failure(failed_prompt, kind, message, score))
                if len(found) == k:
                    break
        return found

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
            rows.append((failure_prompt(error), None, False, error.get("error"), error.get("message")))
        if rows:
            self.record_many(pipeline, rows)
        return len(rows)

    def close(self) -> None:
        self._db.close()


def failure_prompt(error: dict[str, Any]) -> str:
    """What a failed record asked: the last user turn of its last request (as the task made
    it, not a structured-output repair; without a failures section), else its input data."""
    steps = error.get("steps")
    if isinstance(steps, str):  # as JSON text, the way annotated samples carry theirs
        try:
            steps = json.loads(steps)
        except ValueError:
            steps = None
    asked = [s for s in (steps if isinstance(steps, list) else ()) if isinstance(s, dict) and not s.get("repair")]
    for step in reversed(asked):
        users = [message_text(m) for m in step.get("messages") or () if isinstance(m, dict) and m.get("role") == "user"]
        if users and users[-1].strip():
            return without_avoid(users[-1])[:2000]
    return json.dumps(error.get("input_data"), ensure_ascii=False, default=str)[:2000]


def _lines(path: Path):
    if path.exists():
        with open(path, encoding="utf-8") as f:
            yield from (line for line in f if line.strip())


def feedback_dep(pipeline_cls: type) -> Any:
    """The pipeline's `Pipeline.feedback(...)` declaration, or None."""
    from shaping.deps import FeedbackDep

    for klass in pipeline_cls.__mro__:
        for value in vars(klass).values():
            if isinstance(value, FeedbackDep):
                return value
    return None
