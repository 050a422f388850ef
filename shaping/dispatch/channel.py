"""One model's lane: requests from every record go in, batches go to the provider.

Providers that take one request per call (HTTP APIs) get up to `concurrency` calls in flight,
each request sent as soon as a slot is free. Providers that batch (local models) get a queue:
a batch is formed when a slot frees, from everything waiting at that moment, up to
`batch_size` requests. Every call waits for rate-limit permits; failed requests that a retry
may fix are tried again (only those, for a batch) until `max_retries` is spent.
"""

from __future__ import annotations

import math
import time

import anyio
from anyio.abc import TaskGroup

from shaping.error_types import ErrorType
from shaping.dispatch.limits import RateLimits
from shaping.dispatch.seams import Limits
from shaping.dispatch.retry import retrying
from shaping.dispatch.stats import RunStats
from shaping.providers.base import Provider
from shaping.prices import Prices
from shaping.resolved import ResolvedModel
from shaping.requests import LLMRequest, ModelResponse, ResponseError, Usage


def cost_of(prices: Prices | None, usage: Usage, batch: bool = False) -> float | None:
    """What an answer cost at the model's prices (reasoning tokens count as output tokens; at
    the batch prices for an answer from a batch); None when no price is known, and for local
    models."""
    if prices is None or prices.local:
        return None
    return prices.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens,
                       batch=batch)


def _retryable(response: ModelResponse) -> bool:
    return response.error is not None and response.error.retryable


class _Pending:
    __slots__ = ("request", "response", "done")

    def __init__(self, request: LLMRequest) -> None:
        self.request = request
        self.response: ModelResponse | None = None
        self.done = anyio.Event()


class ModelChannel:
    def __init__(self, model: ResolvedModel, provider: Provider, stats: RunStats, task_group: TaskGroup,
                 limits: Limits | None = None) -> None:
        name = self.name = model.name
        self.model = model
        self.provider = provider
        #: what its tokens cost (shaping.prices); None when unknown
        self.prices: Prices | None = model.prices
        #: what its answers are keyed by in the request cache (the manifest's fingerprint)
        self.fingerprint = model.fingerprint
        self.stats = stats
        # anyio's, not asyncio's: asyncio's semaphore removes a woken waiter from its deque by
        # value, a scan of every waiter (11% of the event loop's time with 768 records waiting)
        self._slots = anyio.Semaphore(provider.concurrency, fast_acquire=True)
        self._batch_size = provider.batch_size
        self._task_group = task_group
        self._limits = limits or RateLimits(provider.config)
        #: batch mode: where run_task's requests go (shaping.dispatch.batch); query() stays here
        self.batch = None
        if self._batch_size > 1:
            self._send, self._receive = anyio.create_memory_object_stream[_Pending](math.inf)
            task_group.start_soon(self._form_batches, name=f"batcher:{name}")

    async def submit(self, request: LLMRequest) -> ModelResponse:
        if self._batch_size == 1:
            async with self._slots:
                response = (await self._call_with_retries([request]))[0]
        else:
            pending = _Pending(request)
            self._send.send_nowait(pending)
            await pending.done.wait()
            response = pending.response
        self.stats.record_response(self.name, response)
        return response

    async def _form_batches(self) -> None:
        while True:
            await self._slots.acquire()
            batch = [await self._receive.receive()]
            while len(batch) < self._batch_size:
                try:
                    batch.append(self._receive.receive_nowait())
                except anyio.WouldBlock:
                    break
            self._task_group.start_soon(self._run_batch, batch)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            responses = await self._call_with_retries([p.request for p in batch])
        finally:
            self._slots.release()
        for pending, response in zip(batch, responses):
            pending.response = response
            pending.done.set()

    async def _call_with_retries(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        responses = await self._call(requests)
        if any(_retryable(r) for r in responses):  # the common case pays nothing for retries
            responses = await self._retry(requests, responses)
        self._price(responses)
        return responses

    async def _retry(self, requests: list[LLMRequest], first: list[ModelResponse]) -> list[ModelResponse]:
        """Try again the requests whose answer was a retryable failure, until they succeed or
        `max_retries` is spent. tenacity decides on the answers (retry while some still fail
        retryably) and counts the attempts; its first attempt is the call already made, so its
        waits and its stop count hold as configured."""
        results = list(first)
        policy = retrying(self.provider.config)
        made = False

        async def attempt() -> list[ModelResponse]:
            nonlocal made
            todo = [i for i, r in enumerate(results) if _retryable(r)]
            if made:
                number = policy.statistics["attempt_number"]
                for i, response in zip(todo, await self._call([requests[i] for i in todo])):
                    response.attempts = number
                    results[i] = response
            made = True
            return [results[i] for i in todo if _retryable(results[i])]

        still = await policy(attempt)
        for response in still:
            response.error.message = (f"{response.error.message} "
                                      f"(gave up after {policy.statistics['attempt_number']} attempts)")
        return results

    def _price(self, responses: list[ModelResponse]) -> None:
        for r in responses:
            r.cost_usd = cost_of(self.prices, r.usage)

    async def _call(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        if self._limits.active:
            reserved = await self._limits.before(requests)
            responses = await self._provider_call(requests)
            used = sum(r.usage.total_tokens for r in responses)
            if used > reserved:
                self._task_group.start_soon(self._limits.after, reserved, used)
            return responses
        return await self._provider_call(requests)

    async def _provider_call(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        if len(requests) == 1:
            return [await self._provider_call_one(requests[0])]
        started = time.perf_counter()
        try:
            responses = await self.provider.generate_batch(requests)
            if len(responses) != len(requests):
                raise RuntimeError(
                    f"returned {len(responses)} responses for {len(requests)} requests"
                )
        except Exception as exc:  # a provider bug or an unexpected library error
            return [self._provider_failure(exc) for _ in requests]
        latency = time.perf_counter() - started
        for response in responses:
            self._complete(response, latency)
        return responses

    async def _provider_call_one(self, request: LLMRequest) -> ModelResponse:
        started = time.perf_counter()
        try:
            response = await self.provider.generate(request)
        except Exception as exc:
            return self._provider_failure(exc)
        return self._complete(response, time.perf_counter() - started)

    def _provider_failure(self, exc: Exception) -> ModelResponse:
        """What a provider bug or an unexpected library error makes of each request it had."""
        return ModelResponse(model=self.provider.config.model,
                             error=ResponseError(type=ErrorType.PROVIDER, message=f"{type(exc).__name__}: {exc}"))

    def _complete(self, response: ModelResponse, latency: float) -> ModelResponse:
        if not response.latency_s:
            response.latency_s = latency
        if not response.model:
            response.model = self.provider.config.model
        return response
