"""Counters a run keeps as it goes; the progress display and the summary read them."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from shaping.requests import ModelResponse


@dataclass
class ModelUsage:
    """Requests of one model in this run; tokens and cost count only what was sent now."""

    requests: int = 0
    failed: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    #: of `requests`, those answered through the provider's batch API (at its batch prices)
    batch_requests: int = 0


@dataclass
class BatchInfo:
    """One batch of this run (submitted now, or an earlier run's that this one re-attached to)."""

    model: str
    tag: str
    requests: int
    round: int | None
    id: str | None = None
    status: str = "submitting"
    succeeded: int = 0
    failed: int = 0
    reattached: bool = False
    #: its results have been read
    done: bool = False


@dataclass
class RunStats:
    records_total: int | None = None
    records_done: int = 0
    samples: int = 0
    errors: Counter = field(default_factory=Counter)
    #: error type -> the message of its first record (a failed run's one line quotes it)
    first_errors: dict[str, str] = field(default_factory=dict)
    models: dict[str, ModelUsage] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    #: batch mode: the batches, by our tag; the rounds formed; time with a batch in flight
    batches: dict[str, BatchInfo] = field(default_factory=dict)
    batch_rounds: int = 0
    batch_wait_s: float = 0.0
    batch_waiting_since: float | None = None
    #: what the run should say at its end (a batch submission it could not confirm)
    warnings: list[str] = field(default_factory=list)

    def record_response(self, model: str, response: ModelResponse, batch: bool = False) -> None:
        usage = self.models.get(model)
        if usage is None:
            usage = self.models[model] = ModelUsage()
        usage.requests += 1
        usage.failed += response.error is not None
        if response.cached:  # paid for in an earlier run
            usage.cached += 1
            return
        usage.batch_requests += batch
        tokens = response.usage
        usage.prompt_tokens += tokens.prompt_tokens
        usage.completion_tokens += tokens.completion_tokens
        usage.cached_tokens += tokens.cached_tokens
        usage.cache_write_tokens += tokens.cache_write_tokens
        usage.reasoning_tokens += tokens.reasoning_tokens
        if response.cost_usd is not None:
            usage.cost_usd = (usage.cost_usd or 0.0) + response.cost_usd

    def record_error(self, error_type: str, message: str | None) -> None:
        self.errors[error_type] += 1
        self.first_errors.setdefault(error_type, message or "")

    def counters(self) -> dict:
        """What a part of a run (a Ray shard) counted, as plain data, for `add`."""
        return {"records": self.records_done, "errors_by_type": dict(self.errors),
                "first_errors": dict(self.first_errors), "models": {m: vars(u) for m, u in self.models.items()}}

    def add(self, counters: dict) -> None:
        """Count what `counters` of another part of the run counted."""
        self.records_done += counters["records"]
        self.errors.update(counters["errors_by_type"])
        for kind, message in counters["first_errors"].items():
            self.first_errors.setdefault(kind, message)
        for model, usage in counters["models"].items():
            total = self.models.setdefault(model, ModelUsage())
            for name, value in usage.items():
                if value is not None:
                    setattr(total, name, (getattr(total, name) or 0) + value)

    @property
    def waiting_s(self) -> float:
        """Seconds so far with at least one batch submitted and not yet read."""
        since = self.batch_waiting_since
        return self.batch_wait_s + (time.monotonic() - since if since is not None else 0.0)

    @property
    def requests(self) -> int:
        return sum(u.requests for u in self.models.values())

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def rate(self, count: int) -> float:
        elapsed = self.elapsed_s
        return count / elapsed if elapsed > 0 else 0.0
