"""The dispatcher: drives every record's task at once and routes requests to model channels.

One dispatcher serves one pipeline run. Its `session()` holds the providers and the channels'
background tasks for the run's whole length, so `query()` calls and every `run_task()` share
connections, concurrency limits and counters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from shaping.config import Project
from shaping.dispatch.cache import RequestCache, request_key
from shaping.dispatch.channel import ModelChannel
from shaping.dispatch.driver import Outcome, drive, find_fatal
from shaping.dispatch.stats import RunStats
from shaping.providers.base import Provider
from shaping.providers.registry import create_provider
from shaping.requests import LLMRequest, ModelRequest, ModelResponse, model_request
from shaping.samples import AnnotatedTrainingSample, ErrorRecord, TrainingSample

QUERY_RECORD_ID = "__run__"


def record_id_of(record: Any, index: int) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return str(record["id"])
    return str(index)


class Dispatcher:
    def __init__(
        self,
        project: Project,
        pipeline_name: str,
        *,
        workers: int,
        annotate: bool,
        commit: str | None = None,
        stats: RunStats | None = None,
        cache: RequestCache | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.project = project
        self.pipeline_name = pipeline_name
        self.workers = workers
        self.annotate = annotate
        self.commit = commit
        self.stats = stats or RunStats()
        self.cache = cache
        self.metadata = metadata or {}  # added to every annotated sample's metadata
        self.errors: list[ErrorRecord] = []
        self._channels: dict[str, ModelChannel] = {}
        self._providers: list[Provider] = []
        self._channel_lock = anyio.Lock()
        self._task_group = None
        self._query_steps = 0

    @asynccontextmanager
    async def session(self) -> AsyncIterator["Dispatcher"]:
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        for provider in self._providers:
                            await provider.aclose()
        except BaseExceptionGroup as group:  # the run's own exception, not a group of ours
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise

    async def channel(self, model: str) -> ModelChannel:
        channel = self._channels.get(model)
        if channel is None:
            async with self._channel_lock:
                channel = self._channels.get(model)
                if channel is None:
                    provider = create_provider(model, self.project.model(model))
                    await provider.open()
                    self._providers.append(provider)
                    channel = ModelChannel(model, provider, self.stats, self._task_group)
                    self._channels[model] = channel
        return channel

    async def answer(
        self, request: ModelRequest, step: int, record_id: str
    ) -> tuple[dict[str, Any], ModelResponse]:
        """Send one request with the model's default params under its own; returns the params
        as sent and the response."""
        channel = await self.channel(request.model)
        defaults = channel.provider.config.params
        params = {**defaults, **request.params} if request.params else dict(defaults)
        key = None
        if self.cache is not None:
            key = request_key(channel.fingerprint, request.messages, params, record_id, step)
            cached = self.cache.get(key)
            if cached is not None:
                self.stats.record_response(request.model, cached)
                return params, cached
        llm_request = LLMRequest(
            messages=request.messages,
            params=params,
            metadata={"pipeline": self.pipeline_name, "record_id": record_id, "step": step},
        )
        response = await channel.submit(llm_request)
        if key is not None and response.is_success:
            self.cache.put(key, self.pipeline_name, request.model, record_id, step,
                           request.messages, params, response)
        return params, response

    async def query(self, model: Any, messages: Any, **params: Any) -> ModelResponse:
        step = self._query_steps
        self._query_steps += 1
        _, response = await self.answer(model_request(messages, model, **params), step, QUERY_RECORD_ID)
        return response

    async def run_task(
        self, task: Callable[[Any], Any], records: Iterable[Any], limit: int | None = None
    ) -> list[TrainingSample]:
        """Run `task` over `records`, at most `workers` at a time; samples in input order.
        Failed records go to `self.errors`, also in input order."""
        if hasattr(records, "__len__"):
            total = len(records) if limit is None else min(limit, len(records))
            self.stats.records_total = (self.stats.records_total or 0) + total
        done: dict[int, tuple[Any, Outcome]] = {}
        free = anyio.Semaphore(self.workers)

        async def one(index: int, record: Any) -> None:
            try:
                record_id = record_id_of(record, index)

                def answer(request: ModelRequest, step: int) -> Any:
                    return self.answer(request, step, record_id)

                outcome = await drive(task, record, record_id, answer)
                done[index] = (record, outcome)
                self.stats.records_done += 1
                if outcome.error_type:
                    self.stats.errors[outcome.error_type] += 1
                else:
                    self.stats.samples += len(outcome.samples)
            finally:
                free.release()

        try:
            async with anyio.create_task_group() as tg:
                for index, record in enumerate(records):
                    if limit is not None and index >= limit:
                        break
                    await free.acquire()
                    tg.start_soon(one, index, record)
        except BaseExceptionGroup as group:
            fatal = find_fatal(group)
            if fatal is not None:
                raise fatal from None
            raise

        samples: list[TrainingSample] = []
        for index in sorted(done):
            record, outcome = done.pop(index)
            if outcome.error_type:
                self.errors.append(self._error_record(record, outcome))
            elif self.annotate:
                samples.extend(self._annotated(s, record, outcome) for s in outcome.samples)
            else:
                samples.extend(outcome.samples)
        return samples

    def _annotated(self, sample: TrainingSample, record: Any, outcome: Outcome) -> AnnotatedTrainingSample:
        return AnnotatedTrainingSample(
            id=sample.id,
            messages=sample.messages,
            metadata={**self.metadata, **sample.metadata} if self.metadata else sample.metadata,
            input_data=record,
            steps=outcome.steps,
            pipeline_commit=self.commit,
            started_at=outcome.started_at,
            completed_at=outcome.completed_at,
        )

    def _error_record(self, record: Any, outcome: Outcome) -> ErrorRecord:
        return ErrorRecord(
            id=outcome.record_id,
            error=outcome.error_type,
            message=outcome.message or "",
            input_data=record,
            steps=outcome.steps,
            pipeline_commit=self.commit,
            failed_at=outcome.completed_at,
            traceback=outcome.traceback,
        )
