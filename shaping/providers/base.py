"""The provider contract: one async method that talks to a model, plus capability flags.

Providers only talk to models. Retries, rate limits, concurrency, caching and provenance
belong to the dispatcher. A provider reports a failed request as a `ModelResponse` whose
`error` says whether trying again could help (`retryable`, `retry_after`); an exception
escaping `generate_batch` fails the whole batch without retries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from shaping.config import ModelConfig
from shaping.requests import LLMRequest, ModelResponse


class UnsupportedRequest(ValueError):
    """A request this provider cannot express (a content part, a param); its message is one
    line. The request is not sent: its record fails with `unsupported_request`."""


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Provider(ABC):
    #: requests per `generate_batch` call: 1 means one request per call, many calls in flight
    #: (HTTP APIs); more means real batches (local models), and `batch_size` in shaping.toml
    #: may change it
    default_batch_size: ClassVar[int] = 1
    #: how many `generate_batch` calls may be in flight when the model sets no max_concurrency
    default_concurrency: ClassVar[int] = 64
    #: whether the model must name an `api_key_env`
    needs_key: ClassVar[bool] = False
    #: runs on the user's own machine: no per-token price (shaping.prices)
    local: ClassVar[bool] = False
    #: answering loads a model into this process (`isf models --check` only when named)
    loads_weights: ClassVar[bool] = False
    #: the hosts where the provider's own list prices apply (shaping.prices.BUILT_IN)
    list_price_hosts: ClassVar[frozenset[str]] = frozenset()
    #: whether `response_format` (OpenAI's json_schema form) may be sent
    supports_response_format: ClassVar[bool] = False
    #: the provider-specific `[models.NAME.options]` table
    Options: ClassVar[type[BaseModel]] = NoOptions
    #: options that never change an answer (how requests are spread or paced): left out of
    #: the model's fingerprint; every other option is in it
    operational_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, name: str, config: ModelConfig, api_key: str | None = None) -> None:
        self.name = name
        self.config = config
        self.options = self.Options.model_validate(config.options)
        self._api_key = api_key

    @classmethod
    def fingerprint_parts(cls, config: ModelConfig) -> dict[str, Any]:
        """What, besides provider, model, base_url and params, changes this model's answers:
        its options (all but `operational_options`), and for a local model its files. Read
        by the fingerprint that staleness and the request cache share; no key, no loading."""
        options = {k: v for k, v in config.options.items() if k not in cls.operational_options}
        return {"options": options} if options else {}

    @property
    def honours_response_format(self) -> bool:
        """Whether this endpoint is known to enforce `response_format`; when not, structured
        output also puts the schema in the prompt."""
        return self.supports_response_format

    def prepare_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params as they will be sent (what the step records and the cache key covers):
        renamed or left out where the model takes others (see `shaping.providers.reasoning`).
        Raise `UnsupportedRequest` for params that cannot be sent."""
        return params

    def count_prompt_tokens(self, request: LLMRequest) -> int | None:
        """The prompt's size in this model's own tokens, where it can be known without sending
        (a local model's tokenizer); None: the caller estimates. Used by dry runs."""
        return None

    @property
    def batch_size(self) -> int:
        if self.default_batch_size == 1:
            return 1
        return self.config.batch_size or self.default_batch_size

    @property
    def concurrency(self) -> int:
        return self.config.max_concurrency or self.default_concurrency

    async def open(self) -> None:
        """Create clients; called once inside the event loop before the first request."""

    async def aclose(self) -> None:
        """Release what `open` created."""

    @abstractmethod
    async def generate_batch(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        """Answer each request, in order; at most `batch_size` of them."""

    async def generate(self, request: LLMRequest) -> ModelResponse:
        """Answer one request: a batch of one, unless the provider has a shorter way. Called for
        every request that goes on its own (each of a model with batch_size 1, a lone retry)."""
        responses = await self.generate_batch([request])
        if len(responses) != 1:
            raise RuntimeError(f"returned {len(responses)} responses for 1 request")
        return responses[0]

    def __repr__(self) -> str:  # never shows the key
        return f"<{type(self).__name__} {self.name} model={self.config.model!r}>"
