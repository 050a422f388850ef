"""What a run adds around each record's task: which record and which try is running (for
`self.variant()` and `self.feedback.retrying`), the progressive retry of
`Pipeline.feedback(progressive=True)`, and the variant in each sample's metadata.

The runner hands `record_driver(pipeline)` to the dispatcher, which drives every record through
it instead of `shaping.dispatch.driver.drive` (nothing is handed when the pipeline declares
neither variants nor a progressive feedback).

A task's generator runs in its record's context (each record is driven by one task of the event
loop, and generators run in the context of whoever resumes them), so `current()` read in a task
is its own record's, whatever else is in flight.

The retry: a record whose first try ended with an error type in the feedback's `retry_on` is
driven once more, `self.feedback.retrying` now True. Its requests are numbered after the first
try's steps (and marked `{"feedback_retry": 1}` in each step's metadata), so their cache keys
differ from the first try's even when the prompt does not: the retry never replays the answers
that failed, and a resumed run replays both tries from the cache. The outcome keeps the steps of
both tries; a sample made on the retry says so in `metadata["feedback"]`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NamedTuple


class Current(NamedTuple):
    record_id: str
    #: 0: the first try; 1: the progressive retry
    attempt: int = 0
    #: the record itself, as the task gets it (`Pipeline.variant(record)` tells it from an id)
    record: Any = None


_CURRENT: ContextVar[Current | None] = ContextVar("shaping_current_record", default=None)


def current() -> Current | None:
    """The record this task is working on, and which try; None outside a task."""
    return _CURRENT.get()


def record_driver(pipeline: Any) -> Callable[..., Any] | None:
    """What drives one record of `pipeline`, or None when plain `drive` does."""
    from shaping.variants import variant_names, variant_of

    names = variant_names(type(pipeline))
    dep = None
    if pipeline.uses_feedback():  # (shaping.feedback is imported only where it is used)
        from shaping.feedback import feedback_dep

        dep = feedback_dep(type(pipeline))
    retry_on = dep.retry_on if dep is not None and dep.progressive else None
    if not names and retry_on is None:
        return None

    async def drive_record(task: Any, record: Any, record_id: str, answer: Any) -> Any:
        from shaping.dispatch.driver import drive

        token = _CURRENT.set(Current(record_id, 0, record))
        try:
            outcome = await drive(task, record, record_id, answer)
            if retry_on is not None and outcome.error_type in retry_on:
                outcome = await _retry(drive, task, record, record_id, answer, outcome)
        finally:
            _CURRENT.reset(token)
        if names:
            variant = variant_of(record_id, names)
            for sample in outcome.samples:
                sample.metadata.setdefault("variant", variant)
        return outcome

    return drive_record


async def _retry(drive: Any, task: Any, record: Any, record_id: str, answer: Any, first: Any) -> Any:
    """The record once more, as its progressive retry; the outcome holds both tries' steps."""
    offset = max((raw.index for raw in first.raw_steps), default=-1) + 1

    def again(request: Any, step: int) -> Any:
        marked = request.model_copy(update={"metadata": {**request.metadata, "feedback_retry": 1}})
        return answer(marked, offset + step)

    _CURRENT.set(Current(record_id, 1, record))
    second = await drive(task, record, record_id, again)
    second.raw_steps[:0] = first.raw_steps
    for i in range(len(first.raw_steps), len(second.raw_steps)):
        raw = second.raw_steps[i]
        second.raw_steps[i] = raw._replace(index=offset + raw.index)
    second.started = first.started
    note = {"retried": True, "first_error": first.error_type, "first_message": (first.message or "")[:300]}
    for sample in second.samples:
        sample.metadata.setdefault("feedback", note)
    return second
