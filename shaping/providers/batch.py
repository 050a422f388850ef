"""The batch capability of a provider: many requests in one job, answered within a day at a lower
price (OpenAI's Batch API, Anthropic's Message Batches, the mock's own).

A provider that has it subclasses `BatchAPI` and turns our one request shape (`LLMRequest`)
into its batch wire format, reusing its own `body()`; it reads results back into
`ModelResponse`s with its own answer parsing. What a batch is, when rounds form, what is kept on
disk and what is retried belong to the dispatcher (shaping.dispatch.batch); a provider only
talks to the API:

- `batch_item(custom_id, request)`: one encoded request (a JSONL line, a JSON object); raise
  `UnsupportedRequest` for one it cannot send;
- `create_batch(items, tag)`: submit them as one batch; `tag` (a few hex digits) is ours, kept
  with the batch where the API keeps metadata;
- `get_batch(batch_id)`: its state now; `cancel_batch(batch_id)`;
- `batch_results(state)`: (custom_id, response) for each request with a result, as read;
  requests without one are the dispatcher's to notice ("missing");
- `find_batch(tag, since)`: the id of a batch created with `tag` since `since` (a submission
  whose id was never recorded: the run was killed in between, or the create's answer was
  lost), where the API can tell (`finds_batches`); else None.

Every failed API call raises `BatchCallError` with the error as a `ResponseError` (its message
free of the key, `retryable` as for an online request), and `unsent` when it failed before the
request was sent (the server cannot have acted on it). A create that failed otherwise, with no
HTTP answer, may have created the batch: the dispatcher asks again only after `find_batch`
has said it was not (or never, where the API cannot tell).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import ClassVar
from urllib.parse import urlsplit

from shaping.config import ModelConfig
from shaping.errors import ConfigError
from shaping.requests import LLMRequest, ModelResponse, ResponseError


@dataclass(frozen=True)
class BatchLimits:
    """The most one batch may hold: requests, and bytes of encoded requests."""

    max_requests: int
    max_bytes: int


@dataclass
class BatchState:
    """A submitted batch as the provider reports it."""

    id: str
    #: the provider's own word for it (validating, in_progress, completed, ended, expired, ...)
    status: str
    #: no more results will come: they can be read
    ended: bool = False
    total: int = 0
    #: requests answered (succeeded) and failed (errored, expired, cancelled) so far, as reported
    succeeded: int = 0
    failed: int = 0
    #: where the results are (file ids, a URL): the provider's own, for `batch_results`
    results: list[str] = field(default_factory=list)
    #: why the batch as a whole failed (a validation error), with no result per request
    error: ResponseError | None = None
    #: with `error`, where the API names them: the requests refused, by line (1: the first
    #: request submitted); the batch ran none, so the others may simply be sent again
    refused: dict[int, ResponseError] = field(default_factory=dict)
    #: whether its requests were cancelled on purpose (isf batch cancel)
    cancelled: bool = False


class BatchCallError(Exception):
    """A batch API call failed; `error` says how, and whether another try may help."""

    def __init__(self, error: ResponseError, unsent: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        #: the call failed before its request was sent (could not connect): nothing was done
        self.unsent = unsent

    @property
    def not_found(self) -> bool:
        return self.error.status_code == 404


def item_error(kind: str, message: str, retryable: bool, status_code: int | None = None) -> ModelResponse:
    return ModelResponse(error=ResponseError(type=kind, message=message, retryable=retryable,
                                             status_code=status_code))


class BatchAPI:
    """Mixed into a Provider that can send requests as batches."""

    #: per batch, as the API allows
    batch_limits: ClassVar[BatchLimits]
    #: how often a batch is polled unless the model's `batch_poll_s` says otherwise
    default_batch_poll_s: ClassVar[float] = 30.0
    #: whether `find_batch` can find a batch by its tag (the API keeps metadata)
    finds_batches: ClassVar[bool] = False

    @property
    def batch_poll_s(self) -> float:
        return self.config.batch_poll_s or self.default_batch_poll_s

    @abstractmethod
    def batch_item(self, custom_id: str, request: LLMRequest) -> bytes:
        """One request, encoded as it goes into the batch (no trailing newline)."""

    @abstractmethod
    async def create_batch(self, items: list[bytes], tag: str) -> BatchState: ...

    @abstractmethod
    async def get_batch(self, batch_id: str) -> BatchState: ...

    @abstractmethod
    async def cancel_batch(self, batch_id: str) -> BatchState: ...

    @abstractmethod
    def batch_results(self, state: BatchState) -> AsyncIterator[tuple[str, ModelResponse]]: ...

    async def find_batch(self, tag: str, since: float) -> str | None:
        return None


def supports_batch(provider_cls: type) -> bool:
    return isinstance(provider_cls, type) and issubclass(provider_cls, BatchAPI)


def batched(name: str, config: ModelConfig, provider_cls: type, batch_all: bool = False) -> bool:
    """Whether model `name` runs in batch mode: `batch = true` in its table (its provider must
    have a batch API; the named hosts, ollama, vllm, together and xai, have none here), or
    `batch_all` (--batch), its provider has one and it is served by that provider's own API (or
    is local, as the mock): another server that speaks OpenAI's or Anthropic's protocol (a
    local vLLM, a gateway) may have no batch endpoints, so --batch leaves it online
    (`left_online` says why) unless its table says `batch = true`."""
    from shaping.providers.registry import preset_for, resolve_provider_name

    provider = resolve_provider_name(name, config)
    has_api = supports_batch(provider_cls) and preset_for(provider) is None
    if config.batch:
        if not has_api:
            raise ConfigError(f"shaping.toml: models.{name}.batch: provider '{provider}' has no batch API "
                              f"(openai, anthropic and mock have one)")
        return True
    return batch_all and has_api and left_online(name, config, provider_cls) is None


def left_online(name: str, config: ModelConfig, provider_cls: type) -> str | None:
    """Why --batch leaves model `name` online (None: it does not)."""
    from shaping.providers.registry import on_provider_host, preset_for, resolve_provider_name

    if config.batch:
        return None
    provider = resolve_provider_name(name, config)
    if not supports_batch(provider_cls) or preset_for(provider) is not None:
        return "no batch API"
    if getattr(provider_cls, "local", False) or on_provider_host(name, config):
        return None
    hosts = sorted({urlsplit(url).netloc for url in (config.base_urls or [config.base_url]) if url})
    return f"served by {', '.join(hosts) or 'another host'}, not {provider}'s own API"
