"""The one request shape, from a task's `yield` to a provider, and the response that comes back.

A task yields `ModelRequest`s (built with `model_request`). The dispatcher merges the model's
default params into an `LLMRequest` and hands it to the model's provider, which returns a
`ModelResponse`. Nothing here knows which provider is on the other side.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shaping.errors import PipelineError

Role = Literal["system", "user", "assistant"]


class LLMMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    content: str


class LLMRequest(BaseModel):
    """What a provider receives: the whole conversation, the merged params, and metadata
    (pipeline, record id, step index) that providers may log but must not send."""

    model_config = ConfigDict(extra="forbid")

    messages: list[LLMMessage]
    params: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelRequest(BaseModel):
    """What a task yields: which model (by its name in shaping.toml) and what to send; with a
    `response_model`, the JSON shape the answer must have (see `shaping.structured`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    messages: list[LLMMessage]
    params: dict[str, Any] = Field(default_factory=dict)
    response_model: Any = Field(default=None, exclude=True)
    max_repairs: int = Field(default=2, ge=0)


class Usage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ResponseError(BaseModel):
    """Why a request failed. `retryable` and `retry_after` are hints for the dispatcher."""

    model_config = ConfigDict(extra="forbid")

    type: str
    message: str
    status_code: int | None = None
    retryable: bool = False
    retry_after: float | None = None


class ModelResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    error: ResponseError | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    latency_s: float = 0.0
    attempts: int = 1
    cached: bool = False
    cost_usd: float | None = None
    #: with `response_model`: the validated object (or decoded JSON for a schema dict)
    parsed: Any = Field(default=None, exclude=True)

    @property
    def is_success(self) -> bool:
        return self.error is None

    def get_text(self) -> str:
        """The answer's text. On a failed response this raises `PipelineError` with the
        response's error type, so an unchecked failure becomes an error record, never a sample."""
        if self.error is not None:
            raise PipelineError(
                f"request to {self.model or 'model'} failed after {self.attempts} attempt(s): "
                f"{self.error.message}",
                error_type=self.error.type,
            )
        return self.text or ""

    def get_parsed(self) -> Any:
        """The structured answer (`response_model` requests); raises like `get_text` on failure."""
        self.get_text()
        return self.parsed

    @classmethod
    def failure(cls, type: str, message: str, *, model: str = "", **fields: Any) -> "ModelResponse":
        return cls(error=ResponseError(type=type, message=message, **fields), model=model)


def _as_messages(messages: Any) -> list[LLMMessage]:
    if isinstance(messages, str):
        return [LLMMessage(role="user", content=messages)]
    if not isinstance(messages, (list, tuple)):
        raise TypeError(
            f"model_request: messages must be a list of {{role, content}} or a string, "
            f"got {type(messages).__name__}"
        )
    out = []
    for i, m in enumerate(messages):
        if isinstance(m, LLMMessage):
            out.append(m)
        elif isinstance(m, dict):
            try:
                out.append(LLMMessage(**m))
            except Exception as exc:  # pydantic's message is long; keep the essential
                raise ValueError(
                    f"model_request: messages[{i}] must be {{role: system|user|assistant, "
                    f"content: str}}, got {m!r:.120}"
                ) from exc
        else:
            raise TypeError(f"model_request: messages[{i}] is {type(m).__name__}, expected a dict")
    if not out:
        raise ValueError("model_request: messages is empty")
    return out


def model_name_of(model: Any) -> str:
    """A model given as its shaping.toml name or as a `Pipeline.model_dep(...)`."""
    if isinstance(model, str):
        return model
    name = getattr(model, "model_name", None)
    if isinstance(name, str):
        return name
    raise TypeError(
        f"model must be a model name from shaping.toml or a Pipeline.model_dep, got {model!r:.80}"
    )


def model_request(
    messages: Any,
    model: Any,
    temperature: float | None = None,
    max_tokens: int | None = None,
    response_model: Any = None,
    max_repairs: int = 2,
    **params: Any,
) -> ModelRequest:
    """Build one request for a task to `yield`.

    `messages` is a list of `{"role", "content"}` (or `LLMMessage`), or a string for a single
    user turn. Params left as None fall back to the model's defaults in shaping.toml.
    `response_model` (a pydantic model class or a JSON schema dict) asks for JSON of that shape,
    checked and sent back for repair up to `max_repairs` times; the answer's `.parsed` holds it.
    """
    if response_model is not None:
        from shaping.structured import schema_of

        schema_of(response_model)  # a bad response_model fails here, in the task that made it
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    params = {k: v for k, v in params.items() if v is not None}
    return ModelRequest(model=model_name_of(model), messages=_as_messages(messages), params=params,
                        response_model=response_model, max_repairs=max_repairs)
