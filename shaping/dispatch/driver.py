"""Drive one record's task generator: send each answer back in, turn the end into an outcome.

A task is a generator method. It may `yield model_request(...)` (answered with a
`ModelResponse`), `yield [req, ...]` (answered with a list, in order, all in flight at once),
or return without yielding. What it returns is a `TrainingSample` or a list of them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from shaping.error_types import ErrorType
from shaping.errors import PipelineError, ShapingError, TaskContractError
from shaping.requests import ModelRequest, ModelResponse
from shaping.samples import Step, TrainingSample

class Attempt(NamedTuple):
    """One try at answering a request: the request and params as sent, what came back, and the
    structured-output repair round (0: the request as the task made it)."""

    request: ModelRequest
    params: dict[str, Any]
    response: ModelResponse
    repair: int = 0


class RawStep(NamedTuple):
    """An attempt with its step index: what annotated output writes as a `Step`."""

    index: int
    request: ModelRequest
    params: dict[str, Any]
    response: ModelResponse
    repair: int = 0


#: answers one request for a record: (request, step index) -> every attempt made for it; the
#: last one's response is the answer
Answer = Callable[[ModelRequest, int], Awaitable[list[Attempt]]]


@dataclass
class Outcome:
    """What became of one record: samples, or an error with its type and message."""

    record_id: str
    #: when it started and ended (time.time(): a datetime is made only where one is written)
    started: float
    completed: float | None = None
    samples: list[TrainingSample] = field(default_factory=list)
    #: every attempt of every step, in order; written as `Step` fields
    raw_steps: list[RawStep] = field(default_factory=list)
    error_type: str | None = None
    message: str | None = None
    traceback: str | None = None

    @property
    def started_at(self) -> datetime:
        return datetime.fromtimestamp(self.started, timezone.utc)

    @property
    def completed_at(self) -> datetime | None:
        return None if self.completed is None else datetime.fromtimestamp(self.completed, timezone.utc)

    @property
    def steps(self) -> list[Step]:
        return [Step(**step_fields(*raw)) for raw in self.raw_steps]


def now() -> datetime:
    return datetime.now(timezone.utc)


def describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def find_fatal(exc: BaseException) -> ShapingError | None:
    """The ShapingError inside `exc`, unwrapping the exception groups task groups raise."""
    if isinstance(exc, ShapingError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := find_fatal(inner)) is not None:
                return found
    return None


def where(task: Callable, record_id: str) -> str:
    owner = getattr(task, "__self__", None)
    if owner is None:
        return f"task {getattr(task, '__qualname__', task)} (record {record_id!r})"
    pipeline = getattr(owner, "name", None)
    prefix = f"pipeline '{pipeline}': " if isinstance(pipeline, str) else ""
    return f"{prefix}task {type(owner).__name__}.{task.__name__} (record {record_id!r})"


async def drive(task: Callable[[Any], Any], record: Any, record_id: str, answer: Answer) -> Outcome:
    outcome = Outcome(record_id=record_id, started=time.time())
    try:
        result = task(record)
        if inspect.isgenerator(result):
            result = await _run_generator(result, task, record_id, answer, outcome.raw_steps)
        outcome.samples = _as_samples(result, task, record_id)
        if not outcome.samples:
            outcome.error_type = ErrorType.NO_SAMPLE
            outcome.message = (
                f"{where(task, record_id)} returned {describe(result)}; return a TrainingSample, "
                f"or raise PipelineError to drop a record on purpose"
            )
    except PipelineError as exc:
        outcome.error_type, outcome.message = exc.error_type, exc.message
    except ShapingError:
        raise
    except Exception as exc:
        if (fatal := find_fatal(exc)) is not None:
            raise fatal from None
        outcome.error_type = ErrorType.UNEXPECTED
        outcome.message = f"{type(exc).__name__}: {exc}"
        outcome.traceback = traceback.format_exc()
    outcome.completed = time.time()
    return outcome


async def _run_generator(gen, task, record_id: str, answer: Answer, steps: list[RawStep]) -> Any:
    value: Any = None
    try:
        while True:
            try:
                yielded = gen.send(value)
            except StopIteration as stop:
                return stop.value
            if isinstance(yielded, ModelRequest):  # (inline: one coroutine less on every request)
                index = len(steps)
                attempts = await answer(yielded, index)
                for attempt in attempts:
                    steps.append(RawStep(index, *attempt))
                value = attempts[-1].response
            elif isinstance(yielded, (list, tuple)) and all(isinstance(r, ModelRequest) for r in yielded):
                value = await _answer_many(list(yielded), answer, steps)
            else:
                raise TaskContractError(
                    f"{where(task, record_id)} yielded {describe(yielded)}; "
                    f"expected model_request(...) or a list of them"
                )
    finally:
        gen.close()


async def _answer_many(requests: list[ModelRequest], answer: Answer, steps: list[RawStep]) -> list[ModelResponse]:
    first = len(steps)
    # asyncio's own task group: the requests of one `yield [...]` go out together, and a
    # record pays for plain tasks, not for anyio's cancel scope and event per task (measured:
    # 15% of a three-step run's CPU). It nests in the run's anyio task group like any task.
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(answer(request, first + i)) for i, request in enumerate(requests)]
    answers = [task.result() for task in tasks]
    for i, attempts in enumerate(answers):
        steps.extend(RawStep(first + i, *attempt) for attempt in attempts)
    return [attempts[-1].response for attempts in answers]


def step_fields(index: int, request: ModelRequest, params: dict[str, Any], response: ModelResponse,
                repair: int = 0) -> dict[str, Any]:
    """A `Step`'s fields, in its order: what annotated output writes for one request."""
    return {
        "index": index,
        "model": request.model,
        "messages": request.messages,
        "params": params,
        "text": response.text,
        "reasoning": response.reasoning,
        "tool_calls": response.tool_calls,
        "refusal": response.refusal,
        "error": response.error,
        "usage": response.usage,
        "finish_reason": response.finish_reason,
        "latency_s": round(response.latency_s, 6),
        "attempts": response.attempts,
        "cached": response.cached,
        "cost_usd": response.cost_usd,
        "repair": repair,
        "metadata": request.metadata,
    }


def _as_samples(result: Any, task, record_id: str) -> list[TrainingSample]:
    if result is None:
        return []
    if isinstance(result, TrainingSample):
        return [result]
    if isinstance(result, (list, tuple)) and all(isinstance(s, TrainingSample) for s in result):
        return list(result)
    raise TaskContractError(
        f"{where(task, record_id)} returned {describe(result)}; "
        f"expected a TrainingSample or a list of them"
    )
