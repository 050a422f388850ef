"""The dispatcher: drives every record's task at once and routes requests to model channels.

One dispatcher serves one pipeline run. Its `session()` holds the providers and the channels'
background tasks for the run's whole length, so `query()` calls and every `run_task()` share
connections, concurrency limits and counters.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from shaping.error_types import ErrorType
from shaping.config import ModelConfig, Project
from shaping.dispatch.batch import BATCH_RECORDS, Activity, BatchChannel
from shaping.dispatch.batch_store import BatchStore
from shaping.dispatch.cache import request_key
from shaping.dispatch.channel import ModelChannel, cost_of
from shaping.dispatch.driver import Attempt, Outcome, drive, find_fatal, step_fields
from shaping.dispatch.budget import Budget
from shaping.dispatch.seams import AnswerCache, Limits
from shaping.dispatch.stand_in import StandIn
from shaping.dispatch.stats import RunStats
from shaping.providers.base import Provider
from shaping import structured
from shaping.errors import ConfigError, TaskContractError
from shaping.providers.base import UnsupportedRequest
from shaping.requests import (
    LLMMessage, LLMRequest, ModelRequest, ModelResponse, ResponseError, TextPart, model_request,
)
from shaping.judge import rejected_line
from shaping.samples import ErrorDetails, ErrorRecord, TrainingSample, annotated_line, wire_turns
from shaping.spool import SampleSpool, Spool

QUERY_RECORD_ID = "__run__"


def unpriced(model: str) -> str:
    return (f"the cost cap (--max-cost, max_cost_usd) needs prices: model '{model}' has none; set "
            f"price_per_million_input and price_per_million_output in shaping.toml [models.{model}]")


def record_id_of(record: Any, index: int) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return str(record["id"])
    return str(index)


class RecordIds:
    """Refuses a record id seen before (two records with one id would be two samples of one id,
    and would share cached answers), naming the id and both positions."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.seen: dict[str, int] = {}

    def add(self, record_id: str, index: int) -> None:
        first = self.seen.setdefault(record_id, index)
        if first != index:
            raise TaskContractError(f"{self.where}: records {first} and {index} have the same id {record_id!r}; "
                                    f"give each record a unique 'id'")

    @classmethod
    def check(cls, records: Any, first_index: int, where: str) -> None:
        """Check a sequence of records before anything is sent (an iterator is checked as it is read)."""
        ids = cls(where)
        for index, record in enumerate(records):
            ids.add(record_id_of(record, first_index + index), first_index + index)


class Dispatcher:
    #: drives one record instead of `drive` (same arguments and result) when set: the runner's
    #: shaping.record_hooks.record_driver (variants, the progressive feedback retry)
    drive_record: Callable[..., Any] | None = None

    def __init__(
        self,
        project: Project,
        pipeline_name: str,
        *,
        workers: int,
        annotate: bool,
        commit: str | None = None,
        stats: RunStats | None = None,
        cache: AnswerCache | None = None,
        metadata: dict[str, Any] | None = None,
        spool_dir: Path | None = None,
        limits: Callable[[str, ModelConfig], Limits] | None = None,
        stand_in: StandIn | None = None,
        budget: Budget | None = None,
        reject: Callable[[TrainingSample], str | None] | None = None,
        batch: bool = False,
        take_all: bool = False,
    ) -> None:
        self.project = project
        self.pipeline_name = pipeline_name
        self.workers = workers
        self.annotate = annotate
        self.commit = commit
        self.stats = stats or RunStats()
        self.cache = cache
        self.metadata = metadata or {}  # added to every annotated sample's metadata
        #: where results are spooled: the output folder, so that a spool becomes the output by rename
        self.spool_dir = spool_dir or Path(tempfile.gettempdir())
        self.spools: list[Spool] = []
        self._errors: Spool | None = None
        self._limits = limits  # (model name, config) -> rate limits; default: this process's own
        #: a dry run's stand-in: it answers what the cache cannot, and nothing is sent
        self.stand_in = stand_in
        #: the run's cost cap: records are taken only while it allows
        self.budget = budget
        #: why a sample stays out of the output (the pipeline's min_judge_score), or None
        self.reject = reject
        self._rejected: Spool | None = None
        self.rejections = 0
        self._channels: dict[str, ModelChannel] = {}
        self._providers: list[Provider] = []
        self._channel_lock = anyio.Lock()
        self._task_group = None
        self._query_steps = 0
        self._lookups = False  # whether the cache may hold answers for this pipeline
        #: batch mode (shaping.dispatch.batch): `batch` puts every model whose provider has a
        #: batch API in it (--batch), as `batch = true` in a model's table does; `take_all`
        #: takes every record at once (up to BATCH_RECORDS): the pipeline uses a batch model
        self.batch = batch
        # records' waits are counted only where a round can form: a model_dep in batch mode, or --batch
        self._tracked = batch or take_all
        self._take_all = take_all
        self._activity: Activity | None = None
        self._batch_store: BatchStore | None = None

    @asynccontextmanager
    async def session(self) -> AsyncIterator["Dispatcher"]:
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                if self.cache is not None:
                    self._lookups = self.cache.holds(self.pipeline_name)
                try:
                    yield self
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True):
                        for provider in self._providers:
                            await provider.aclose()
                    if self._batch_store is not None:
                        self._batch_store.close_db()
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
                    resolved = self.project.resolved(model)
                    if self.budget is not None and resolved.prices is None:
                        raise ConfigError(unpriced(model))
                    provider = resolved.create_provider(read_key=self.stand_in is None)
                    if self.stand_in is None:  # a dry run sends nothing: no client, no weights
                        await provider.open()
                    self._providers.append(provider)
                    limits = self._limits(model, provider.config) if self._limits else None
                    channel = ModelChannel(resolved, provider, self.stats, self._task_group, limits)
                    if self.stand_in is None and resolved.batched(self.batch):
                        channel.batch = await self._batch_channel(model, provider, resolved.prices)
                    self._channels[model] = channel
        return channel

    @property
    def activity(self) -> Activity:
        if self._activity is None:
            self._activity = Activity(self.stats)
        return self._activity

    async def _batch_channel(self, model: str, provider: Provider, prices: Any) -> BatchChannel:
        if self.budget is not None:
            raise ConfigError(f"--max-cost works with online models only; model '{model}' is in batch mode "
                              f"(leave out --max-cost, or --batch / batch = true)")
        if self.cache is None:
            raise ConfigError(f"model '{model}' is in batch mode, which keeps every answer in the request cache "
                              f"(a run resumes from it): leave out --no-cache")
        if self._batch_store is None:
            self._batch_store = BatchStore(self.project.cache_dir)

        def found() -> None:  # answers read from a batch: later lookups may find them
            self._lookups = True

        channel = BatchChannel(model, provider, self.pipeline_name, self.stats, self._task_group, self.activity,
                               self._batch_store, self.cache, prices, found)
        await channel.open()
        return channel

    async def answer(self, request: ModelRequest, step: int, record_id: str, online: bool = False) -> list[Attempt]:
        """Every attempt made to answer `request`: one, unless the request asks for structured
        output that needs repairs. (`online`: not through a batch, as for query().)"""
        if request.response_model is None:
            return [Attempt(request, *await self.send(request, step, record_id, online))]
        channel = self._channels.get(request.model) or await self.channel(request.model)
        provider = channel.provider
        current = request
        if provider.supports_response_format:
            current = request.model_copy(update={"params": {
                **request.params, "response_format": structured.response_format(request.response_model)}})
        if not provider.honours_response_format:  # the endpoint may ignore response_format
            last = current.messages[-1]
            instruction = structured.instruction(request.response_model)
            if isinstance(last.content, list):  # parts (an image, say) stay; the schema is one more
                content = [*last.content, TextPart(type="text", text=instruction.lstrip())]
            else:
                content = (last.content or "") + instruction
            hint = last.model_copy(update={"content": content})
            current = current.model_copy(update={"messages": [*current.messages[:-1], hint]})
        attempts = []
        for repair in range(request.max_repairs + 1):
            params, response = await self.send(current, step, record_id, online)
            attempts.append(Attempt(current, params, response, repair))
            if not response.is_success:
                break
            parsed, problem = structured.parse(request.response_model, response.text or "")
            if problem is None:
                response.parsed = parsed
                break
            if repair == request.max_repairs:
                response.error = ResponseError(
                    type=ErrorType.VALIDATION,
                    message=f"no valid JSON after {repair + 1} attempt(s) ({request.max_repairs} repairs): {problem}")
                break
            current = current.model_copy(update={"messages": [
                *current.messages, LLMMessage(role="assistant", content=response.text or ""),
                LLMMessage(role="user", content=structured.repair_prompt(problem, request.response_model))]})
        return attempts

    async def send(self, request: ModelRequest, step: int, record_id: str,
                   online: bool = False) -> tuple[dict[str, Any], ModelResponse]:
        """Send one request with the model's default params under its own (or answer it from the
        cache, or from a batch: see shaping.dispatch.batch); returns the params as sent and the
        response."""
        if self.budget is not None:  # the record has asked: the next one may be weighed
            self.budget.asked(record_id)
        channel = self._channels.get(request.model) or await self.channel(request.model)
        defaults = channel.provider.config.params
        params = {**defaults, **request.params} if request.params else dict(defaults)
        try:
            params = channel.provider.prepare_params(params)
        except UnsupportedRequest as exc:  # never sent: the same request would fail every time
            response = ModelResponse.failure(ErrorType.UNSUPPORTED, f"model '{request.model}': {exc}",
                                             model=channel.provider.config.model)
            self.stats.record_response(request.model, response)
            return params, response
        key = None
        if self.cache is not None:
            key = request_key(channel.fingerprint, request.messages, params, record_id, step)
            cached = self.cache.get(key) if self._lookups else None
            if cached is not None:
                self.stats.record_response(request.model, cached)
                if request.allow:
                    cached.allow = request.allow
                return params, cached
        llm_request = LLMRequest(
            messages=request.messages,
            params=params,
            metadata={"pipeline": self.pipeline_name, "record_id": record_id, "step": step},
        )
        if self.stand_in is not None:
            schema = structured.schema_of(request.response_model) if request.response_model is not None else None
            response = self.stand_in.answer(request.model, channel.provider, llm_request, schema)
            response.cost_usd = cost_of(channel.prices, response.usage)
            self.stats.record_response(request.model, response)
            return params, response
        if channel.batch is not None and not online:  # committed to the cache before it returns
            response = await channel.batch.submit(llm_request, key, request.messages, params, record_id, step)
            if request.allow:
                response.allow = request.allow
            return params, response
        if self.budget is None or channel.prices.local:  # (unpriced models are refused under a cap)
            response = await channel.submit(llm_request)
        else:
            response = await self._submit_within_budget(channel, request.model, llm_request, record_id)
        if request.allow:
            response.allow = request.allow
        if key is not None and response.is_success:  # committed before the task sees it
            await self.cache.store(key, self.pipeline_name, request.model, record_id, step,
                                   request.messages, params, response)
        return params, response

    async def _submit_within_budget(self, channel: ModelChannel, model: str, request: LLMRequest,
                                    record_id: str) -> ModelResponse:
        """Send, with the request's estimated cost held as in flight until what it really cost
        replaces it (nothing, if it is cancelled)."""
        held = self.budget.hold(model, channel.prices, request, record_id)
        response = None
        try:
            response = await channel.submit(request)
            return response
        finally:
            self.budget.settle(model, record_id, held, response.cost_usd if response else None,
                               response.usage.completion_tokens if response else 0)

    async def query(self, model: Any, messages: Any, **params: Any) -> ModelResponse:
        step = self._query_steps
        self._query_steps += 1
        attempts = await self.answer(model_request(messages, model, **params), step, QUERY_RECORD_ID, online=True)
        return attempts[-1].response

    @property
    def errors(self) -> Spool:
        """Error records of every run_task so far, in input order."""
        if self._errors is None:
            self._errors = Spool(self.spool_dir, f"{self.pipeline_name}.errors")
            self.spools.append(self._errors)
        return self._errors

    @property
    def rejected(self) -> Spool:
        """Samples that `reject` kept out of the output, each with the reason, in input order."""
        if self._rejected is None:
            self._rejected = Spool(self.spool_dir, f"{self.pipeline_name}.rejected")
            self.spools.append(self._rejected)
        return self._rejected

    def discard_spools(self) -> None:
        for spool in self.spools:
            spool.discard()
        self.spools.clear()

    async def run_task(
        self, task: Callable[[Any], Any], records: Iterable[Any], limit: int | None = None, first_index: int = 0
    ) -> SampleSpool:
        """Run `task` over `records`, at most `workers` at a time. Records are read as they are
        needed and each result is written out as soon as those before it are done, so memory
        holds only the records in flight. Samples come back in input order (read from disk);
        failed records go to `self.errors`, also in input order."""
        where = f"pipeline '{self.pipeline_name}': run_task({getattr(task, '__name__', task)})"
        if isinstance(records, Sequence):
            RecordIds.check(records[:limit] if limit is not None else records, first_index, where)
            ids = None
        else:
            ids = RecordIds(where)
        if hasattr(records, "__len__"):
            total = len(records) if limit is None else min(limit, len(records))
            self.stats.records_total = (self.stats.records_total or 0) + total
        samples = SampleSpool(self.spool_dir, self.pipeline_name, self.annotate)
        self.spools.append(samples)
        waiting: dict[int, tuple[Any, Outcome]] = {}
        next_out = 0
        numbered = enumerate(records if limit is None else itertools.islice(records, limit))

        def finished(index: int, record: Any, outcome: Outcome) -> None:
            nonlocal next_out
            waiting[index] = (record, outcome)
            while next_out in waiting:
                self._write(samples, *waiting.pop(next_out))
                next_out += 1

        started = 0
        # batch mode: every record at once, each one's waits counted (rounds form when all wait)
        activity = self.activity if self._tracked else None
        workers = max(self.workers, BATCH_RECORDS) if self._take_all else self.workers

        async def worker(tg: asyncio.TaskGroup) -> None:
            # up to `workers` of these share one iterator of records: a record is read when a
            # worker is free for it, and no task is created per record. Each record taken starts
            # one more worker until there are `workers`, so a short run starts only a few.
            try:
                await work(tg, self.budget)
            finally:
                if activity is not None:
                    activity.add_live(-1)  # a worker counts as live from its start to its end

        async def work(tg: asyncio.TaskGroup, budget: Any) -> None:
            nonlocal started
            while (taken := next(numbered, None) if budget is None else await budget.take(numbered)) is not None:
                index, record = taken
                if started < workers:
                    started += 1
                    if activity is not None:
                        activity.add_live(1)
                    tg.create_task(worker(tg))
                record_id = record_id_of(record, first_index + index)
                if ids is not None:
                    ids.add(record_id, first_index + index)
                if budget is not None:
                    budget.watch(record_id)

                if activity is None:
                    def answer(request: ModelRequest, step: int, record_id: str = record_id) -> Any:
                        return self.answer(request, step, record_id)
                else:
                    async def answer(request: ModelRequest, step: int, record_id: str = record_id) -> Any:
                        activity.answer_started(record_id)
                        try:
                            return await self.answer(request, step, record_id)
                        finally:
                            activity.answer_done(record_id)

                outcome = await (self.drive_record or drive)(task, record, record_id, answer)
                if budget is not None:
                    budget.record_done(record_id, sum(raw.response.cost_usd or 0.0 for raw in outcome.raw_steps
                                                      if not raw.response.cached))
                finished(index, record, outcome)
                self.stats.records_done += 1
                if outcome.error_type:
                    self.stats.record_error(outcome.error_type, outcome.message)
                else:
                    self.stats.samples += len(outcome.samples)

        host = asyncio.current_task()
        cancelling = host.cancelling() if host is not None else 0
        try:
            # asyncio's own task group: a worker costs a plain task, not anyio's cancel scope and
            # bookkeeping (1,024 workers started in 4.5 ms instead of 26-77). It nests in the
            # session's anyio task group like any task, and is cancelled with it. (When it stops
            # its workers, it cancels them as asyncio does, through anyio's shielded sections:
            # that happens only when the run is being stopped by an error or an interrupt.)
            async with asyncio.TaskGroup() as tg:
                started = 1
                if activity is not None:
                    activity.add_live(1)
                tg.create_task(worker(tg))
        except BaseExceptionGroup as group:
            # Python 3.11 and 3.12 leave the cancel request of a group that stopped on a worker's
            # error on this task (fixed in 3.13): take it back, or the caller's next cancel scope
            # would not end cleanly
            while host is not None and host.cancelling() > cancelling:
                host.uncancel()
            fatal = find_fatal(group)
            if fatal is not None:
                raise fatal from None
            if len(group.exceptions) == 1:  # the records iterator's own error, say
                raise group.exceptions[0] from None
            raise

        samples.flush()
        return samples

    def _write(self, samples: SampleSpool, record: Any, outcome: Outcome) -> None:
        if outcome.error_type:
            self.errors.write(self._error_record(record, outcome).to_json())
            return
        if self.reject is not None:
            outcome.samples = self.keep(outcome.samples, (outcome.record_id, record))
        if self.annotate:
            for sample in outcome.samples:
                samples.write(self._annotated_json(sample, record, outcome))
        else:
            for sample in outcome.samples:
                samples.write(sample.minimal_json())

    def keep(self, samples: list[TrainingSample], source: tuple[str, Any] | None = None) -> list[TrainingSample]:
        """The samples `reject` lets through; the others go to `rejected` with the reason (and
        `source`, the record that made them: `(record_id, record)`)."""
        kept = []
        for sample in samples:
            reason = self.reject(sample)
            if reason is None:
                kept.append(sample)
            else:
                self.rejected.write(rejected_line(sample, reason, source))
                self.rejections += 1
        return kept

    def _annotated_json(self, sample: TrainingSample, record: Any, outcome: Outcome) -> bytes:
        """An `AnnotatedTrainingSample`'s line, byte for byte what `to_line` would write, without
        building it and a `Step` per request (a third of the cost; tests/test_driver.py compares)."""
        steps = [step_fields(*raw) for raw in outcome.raw_steps]
        for step in steps:  # the dicts LLMMessage.wire() makes: the same JSON, without a serializer call a turn
            step["messages"] = wire_turns(step["messages"])
        return annotated_line(
            sample.id, wire_turns(sample.messages), sample.tools,
            {**self.metadata, **sample.metadata} if self.metadata else sample.metadata,
            record, steps, self.commit, outcome.started_at, outcome.completed_at)

    def _error_record(self, record: Any, outcome: Outcome) -> ErrorRecord:
        return ErrorRecord(details=ErrorDetails(
            id=outcome.record_id,
            error=outcome.error_type,
            message=outcome.message or "",
            input_data=record,
            steps=outcome.steps,
            pipeline_commit=self.commit,
            failed_at=outcome.completed_at,
            traceback=outcome.traceback,
        ))
