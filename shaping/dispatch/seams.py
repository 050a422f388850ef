"""The seams of a run, named: what the dispatcher needs of a request cache, of rate limits and
of an HTTP transport. The local versions (RequestCache, RateLimits, http.Client) and the Ray
ones (shaping.ray_executor's _RemoteCache and _RemoteLimits, which reach actors) both fit them;
tests/test_imports.py checks that they do."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from shaping.requests import LLMMessage, LLMRequest, ModelResponse


@runtime_checkable
class AnswerCache(Protocol):
    """Answered requests by key (shaping.dispatch.cache.request_key)."""

    def holds(self, pipeline: str) -> bool:
        """Whether any answer of `pipeline` is stored (if not, lookups are skipped)."""

    def get(self, key: str) -> ModelResponse | None: ...

    async def store(self, key: str, pipeline: str, model: str, record_id: str, step: int,
                    messages: list[LLMMessage], params: dict[str, Any], response: ModelResponse) -> None:
        """Keep an answer; returns once it is durable (a kill -9 cannot lose it)."""

    def close(self) -> None: ...


@runtime_checkable
class Limits(Protocol):
    """A model's requests and tokens per minute."""

    @property
    def active(self) -> bool:
        """Whether any limit is set (if not, calls skip `before` and `after`)."""

    async def before(self, requests: list[LLMRequest]) -> int:
        """Wait for permits for these requests; returns the tokens reserved."""

    async def after(self, reserved: int, used: int) -> None:
        """Charge the tokens a call used beyond what was reserved."""


@runtime_checkable
class Transport(Protocol):
    """POSTs of JSON bodies to one URL (shaping.providers.http.Client)."""

    async def post(self, body: bytes) -> Any: ...

    async def aclose(self) -> None: ...
