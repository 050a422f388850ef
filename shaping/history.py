"""Run history: one JSON line per run of a pipeline, good or failed, in
`training/.history/<name>.jsonl`, appended by the runner and never rewritten.

    {"pipeline": "coding", "status": "ok", "started_at": "...", "completed_at": "...",
     "duration_s": 12.3, "records": 200, "samples": 194, "errors": {"validation_error": 6},
     "error_count": 6, "error_rate": 0.03, "rejected": 0, "requests": 400, "cached_requests": 0,
     "prompt_tokens": 81234, "completion_tokens": 40211, "reasoning_tokens": 0, "cost_usd": 0.42,
     "limit": null, "stopped": null, "failure": null, "output": "training/data/coding.jsonl",
     "commit": "abc123", "shaping_version": "..."}

`status`: "ok"; "partial" (--limit, or the cost cap stopped it); "failed" (the run failed: its
outputs were not put in place, `failure` says why); "interrupted" (Ctrl-C). A run stopped by
the checks made before it starts (a bad `--set`, a missing file_dep, an unknown model or
provider, a bad run option) is no run and is not recorded; once it has started (the runner
holds the pipeline's lock and calls `run()`), whatever stops it is recorded as failed: an
error run() raises, including one of shaping's own (a `--set system_prompt_file` that names a
missing file, an option run() refuses), a failed record past the threshold, a task that breaks
its contract.
The history is the project's, like the request cache: a run with `-o PATH` is recorded here
too, its `output` saying where it wrote.
`isf pipeline history NAME` shows it; `isf pipeline report NAME` plots success over runs.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from shaping._version import __version__


def history_path(project: Any, name: str) -> Path:
    return project.root / "training" / ".history" / f"{name}.jsonl"


def read_history(project: Any, name: str) -> list[dict[str, Any]]:
    """Every recorded run, oldest first; a line that does not parse (a crash mid-write) is skipped."""
    path = history_path(project, name)
    if not path.exists():
        return []
    runs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                run = json.loads(line)
            except ValueError:
                continue
            if isinstance(run, dict):
                runs.append(run)
    return runs


def append(path: Path, entry: dict[str, Any]) -> None:
    """Add one line (one write, opened for appending: earlier lines are never touched)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(entry, ensure_ascii=False, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _first_line(text: str, limit: int = 500) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def entry_for(name: str, *, manifest: Any = None, stats: Any = None, failure: str | None = None,
              status: str | None = None, started_at: datetime, completed_at: datetime,
              duration_s: float, output: str | None = None) -> dict[str, Any]:
    """One history line: from the run's manifest where it got that far, else from its counters."""
    if manifest is not None:
        records, samples = manifest.counts.records, manifest.counts.samples
        errors, rejected = dict(manifest.counts.errors), manifest.counts.rejected
        usage = manifest.usage
        started_at, completed_at, duration_s = manifest.started_at, manifest.completed_at, manifest.duration_s
        limit, stopped, commit = manifest.limit, manifest.stopped, manifest.git.commit
    else:
        records = stats.records_done if stats is not None else 0
        samples = stats.samples if stats is not None else 0
        errors = dict(stats.errors) if stats is not None else {}
        usage = stats.models if stats is not None else {}
        rejected, limit, stopped, commit = 0, None, None, None
    if status is None:
        status = "partial" if (limit or stopped) else "ok"
    error_count = sum(errors.values())
    costs = [u.cost_usd for u in usage.values() if u.cost_usd is not None]
    return {
        "pipeline": name,
        "status": status,
        "started_at": _iso(started_at),
        "completed_at": _iso(completed_at),
        "duration_s": round(float(duration_s), 3),
        "records": records,
        "samples": samples,
        "errors": dict(sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))),
        "error_count": error_count,
        "error_rate": round(error_count / records, 6) if records else None,
        "rejected": rejected,
        "requests": sum(u.requests for u in usage.values()),
        "cached_requests": sum(u.cached for u in usage.values()),
        "prompt_tokens": sum(u.prompt_tokens for u in usage.values()),
        "completion_tokens": sum(u.completion_tokens for u in usage.values()),
        "reasoning_tokens": sum(u.reasoning_tokens for u in usage.values()),
        "cost_usd": round(sum(costs), 6) if costs else None,
        "limit": limit,
        "stopped": stopped,
        "failure": _first_line(failure) if failure else None,
        "output": output,
        "commit": commit,
        "shaping_version": __version__,
    }


class RunHistory:
    """Around a run (`with RunHistory(...) as history: ...; history.result = result`): on the
    way out, one line for it, whatever became of it. Writing it never hides the run's own
    outcome: whatever goes wrong writing it is a warning on the run's result (a good run's, or
    a failed run's where its error carries one), never an exception of its own."""

    def __init__(self, pipeline: Any, stats: Any, output: str | None = None) -> None:
        self.name = pipeline.name
        self.output = output  # the samples file, as the project shows it
        self.path = history_path(pipeline.project, pipeline.name)
        self.stats = stats
        self.result: Any = None

    def __enter__(self) -> "RunHistory":
        self.started_at = datetime.now(timezone.utc)
        self.started = time.monotonic()
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        from shaping.errors import RunFailedError

        result = self.result if exc is None else getattr(exc, "result", None)
        manifest = getattr(result, "manifest", None)
        if exc is None:
            failure, status = None, None
        elif isinstance(exc, KeyboardInterrupt):
            failure, status = "interrupted", "interrupted"
        elif isinstance(exc, RunFailedError):
            failure, status = str(exc), "failed"
        else:
            failure, status = f"{type(exc).__name__}: {exc}", "failed"
        try:
            append(self.path, entry_for(self.name, manifest=manifest, stats=self.stats, failure=failure,
                                        status=status, started_at=self.started_at,
                                        completed_at=datetime.now(timezone.utc),
                                        duration_s=time.monotonic() - self.started, output=self.output))
        except Exception as problem:  # noqa: BLE001 - whatever it is, the run's outcome stands
            note = f"the run history {self.path} was not written: {type(problem).__name__}: {problem}"
            warnings = getattr(self.result if exc is None else result, "warnings", None)
            if isinstance(warnings, list):
                warnings.append(note)
