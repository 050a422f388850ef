"""The one request shape, from a task's `yield` to a provider, and the response that comes back.

A task yields `ModelRequest`s (built with `model_request`). The dispatcher merges the model's
default params into an `LLMRequest` and hands it to the model's provider, which returns a
`ModelResponse`. Nothing here knows which provider is on the other side.

Messages have OpenAI's shape (the shape of chat training data): `role` (system, user,
assistant, tool), `content` (a string or a list of text / image_url parts), and where they
apply `reasoning_content` and `tool_calls` (assistant) or `tool_call_id` and `name` (tool).
Fields left unset are not written.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, model_serializer,
    model_validator,
)

from shaping.error_types import OUTCOMES, ErrorType
from shaping.errors import PipelineError

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "refusal"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Compact(_Strict):
    """Written without the fields left unset (None), `content` always: `{"role": "user", "content": "hi"}`."""

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None or k == "content"}


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ImageURL(_Compact):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = TextPart | ImagePart


class FunctionCall(_Strict):
    name: str
    #: the arguments as the model wrote them: a JSON object, as a string (OpenAI's shape)
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class LLMMessage(_Compact):
    role: Role
    content: str | list[ContentPart] | None = None
    #: assistant: the model's chain of thought, kept apart from the answer
    reasoning_content: str | None = None
    #: assistant: the tools it called
    tool_calls: list[ToolCall] | None = None
    #: tool: which call this answers
    tool_call_id: str | None = None
    #: tool: the function's name (optional)
    name: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> "LLMMessage":
        role = self.role
        if role != "assistant" and (self.reasoning_content is not None or self.tool_calls):
            raise ValueError(f"only an assistant turn has reasoning_content or tool_calls (role is {role})")
        if role == "tool":
            if not self.tool_call_id:
                raise ValueError("a tool turn needs tool_call_id (the id of the call it answers)")
        elif self.tool_call_id is not None:
            raise ValueError(f"only a tool turn has tool_call_id (role is {role})")
        if self.content is None and not (role == "assistant" and self.tool_calls):
            raise ValueError(f"a {role} turn needs content (only an assistant turn with tool_calls may have none)")
        return self

    def _plain(self) -> bool:
        """A text turn with nothing but its role and content."""
        return (isinstance(self.content, str) and self.reasoning_content is None and self.tool_calls is None
                and self.tool_call_id is None and self.name is None)

    def wire(self) -> dict[str, Any]:
        """`model_dump()`: what is written and sent. A plain text turn is built here directly
        (the serializer's per-message Python wrapper costs more than the rest of the dump)."""
        return {"role": self.role, "content": self.content} if self._plain() else self.model_dump()

    def key(self) -> list | dict:
        """What identifies this turn (cache keys, the mock's digest): `[role, content]` for a
        plain text turn, every field otherwise."""
        return [self.role, self.content] if self._plain() else self.model_dump()

    @property
    def text(self) -> str:
        """The content's text: the string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


class LLMRequest(BaseModel):
    """What a provider receives: the whole conversation, the params as they will be sent, and
    metadata (pipeline, record id, step index) that providers may log but must not send."""

    model_config = ConfigDict(extra="forbid")

    messages: list[LLMMessage]
    params: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ModelRequest(BaseModel):
    """What a task yields: which model (by its name in shaping.toml) and what to send; with a
    `response_model`, the JSON shape the answer must have (see `shaping.structured`).
    `metadata` stays here: it is recorded with the step, never sent."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    messages: list[LLMMessage]
    params: dict[str, Any] = Field(default_factory=dict)
    response_model: Any = Field(default=None, exclude=True)
    max_repairs: int = Field(default=2, ge=0)
    allow: frozenset[ErrorType] = frozenset()
    metadata: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    """Tokens of one answer. `prompt_tokens` counts every input token (cached and cache writes
    included); `completion_tokens` every output token (reasoning included)."""

    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: input tokens read from the provider's prompt cache
    cached_tokens: int = 0
    #: input tokens written to the provider's prompt cache (Anthropic)
    cache_write_tokens: int = 0
    #: output tokens spent on reasoning
    reasoning_tokens: int = 0

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
    """What the model said, all of it: `text`, `reasoning`, `tool_calls`, `refusal`, the
    normalised `finish_reason`, usage and cost; or an `error`."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    error: ResponseError | None = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    finish_reason: FinishReason | None = None
    latency_s: float = 0.0
    attempts: int = 1
    cached: bool = False
    cost_usd: float | None = None
    #: with `response_model`: the validated object (or decoded JSON for a schema dict)
    parsed: Any = Field(default=None, exclude=True)
    #: the outcomes the request allowed (set by the dispatcher; never stored)
    allow: frozenset[ErrorType] = Field(default=frozenset(), exclude=True)

    @property
    def is_success(self) -> bool:
        return self.error is None

    @property
    def outcome(self) -> ErrorType | None:
        """Why this answer is not a usable assistant turn as it stands, or None."""
        if self.refusal is not None or self.finish_reason == "refusal":
            return ErrorType.REFUSAL
        if self.finish_reason == "content_filter":
            return ErrorType.CONTENT_FILTER
        if self.finish_reason == "length":
            return ErrorType.TRUNCATED
        if not (self.text or "").strip() and not self.tool_calls:
            return ErrorType.EMPTY
        return None

    def check(self) -> "ModelResponse":
        """Raise `PipelineError` for a failed request, or for an answer that is refused,
        filtered, cut off or empty unless the request allowed that; else return self."""
        if self.error is not None:
            who = self.model or "model"
            if self.error.type == ErrorType.VALIDATION:  # its message counts the tries (the repairs)
                raise PipelineError(f"{who}: {self.error.message}", error_type=self.error.type)
            raise PipelineError(f"request to {who} failed after {self.attempts} attempt(s): {self.error.message}",
                                error_type=self.error.type)
        outcome = self.outcome
        if outcome is not None and outcome not in self.allow:
            raise PipelineError(f"{_OUTCOME_TEXT[outcome](self, self.model or 'the model')} (to keep such "
                                f"answers, pass allow={{'{outcome}'}} to model_request)", error_type=outcome)
        return self

    def get_text(self) -> str:
        """The answer's text. Raises `PipelineError` (see `check`) rather than give the text of
        a failed, refused, filtered, cut-off or empty answer, so it never becomes a sample."""
        self.check()
        if not self.text and self.refusal:  # a refusal the request allowed: its words are the answer
            return self.refusal
        return self.text or ""

    def get_parsed(self) -> Any:
        """The structured answer (`response_model` requests); raises like `get_text`."""
        self.check()
        return self.parsed

    def as_message(self, reasoning: bool = True) -> dict[str, Any]:
        """The whole assistant turn: content, `reasoning_content` and `tool_calls` (checked like
        `get_text`). `reasoning=False` leaves the reasoning out."""
        message: dict[str, Any] = {"role": "assistant", "content": self.get_text()}
        if reasoning and self.reasoning:
            message["reasoning_content"] = self.reasoning
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        return message

    @classmethod
    def failure(cls, type: str, message: str, *, model: str = "", **fields: Any) -> "ModelResponse":
        return cls(error=ResponseError(type=type, message=message, **fields), model=model)


_OUTCOME_TEXT = {
    ErrorType.REFUSAL: lambda r, who: f"{who} refused: {(r.refusal or r.text or '').strip()[:200]!r}",
    ErrorType.CONTENT_FILTER: lambda r, who: f"{who}'s answer was stopped by the provider's content filter",
    ErrorType.TRUNCATED: lambda r, who: (
        f"{who}'s answer was cut off at the token limit ({r.usage.completion_tokens} tokens"
        f"{', all reasoning' if (r.reasoning or r.usage.reasoning_tokens) and not (r.text or '').strip() else ''}"
        f"); raise max_tokens"),
    ErrorType.EMPTY: lambda r, who: f"{who} answered with no text and no tool calls",
}

#: params that ask for a streamed answer: shaping reads whole answers
STREAMING_PARAMS = ("stream", "stream_options")


def streaming_problem(params: dict[str, Any]) -> str | None:
    """Why these params cannot be sent, or None."""
    if params.get("stream") or "stream_options" in params:
        return ("streaming is not supported (shaping reads each answer whole, caches it and retries it); "
                "remove 'stream'/'stream_options'")
    return None


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
                out.append(LLMMessage.model_validate(m))
            except ValidationError as exc:  # pydantic's message is long; keep the essential
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(
                    f"model_request: messages[{i}]{'.' + where if where else ''}: {first['msg']} "
                    f"(a message is {{role: system|user|assistant|tool, content: str or parts, ...}}; "
                    f"got {m!r:.120})"
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


def _as_outcomes(allow: Any) -> frozenset[ErrorType]:
    if isinstance(allow, str):
        allow = {allow}
    try:
        outcomes = frozenset(ErrorType(a) for a in allow or ())
        if not outcomes <= OUTCOMES:
            raise ValueError
        return outcomes
    except ValueError as exc:
        raise ValueError(f"model_request: allow: expected some of {', '.join(sorted(OUTCOMES))}, "
                         f"got {sorted(map(str, allow))}") from exc


def model_request(
    messages: Any,
    model: Any,
    temperature: float | None = None,
    max_tokens: int | None = None,
    response_model: Any = None,
    max_repairs: int = 2,
    tools: list[dict[str, Any]] | None = None,
    tool_choice: Any = None,
    allow: Any = (),
    metadata: dict[str, Any] | None = None,
    **params: Any,
) -> ModelRequest:
    """Build one request for a task to `yield`.

    `messages` is a list of messages (dicts or `LLMMessage`), or a string for a single user
    turn. Params left as None fall back to the model's defaults in shaping.toml.
    `response_model` (a pydantic model class or a JSON schema dict) asks for JSON of that shape,
    checked and sent back for repair up to `max_repairs` times; the answer's `.parsed` holds it.
    `tools` (OpenAI's `[{"type": "function", "function": {name, description, parameters}}]`)
    and `tool_choice` offer tools; the answer's `tool_calls` holds the calls.
    `allow` names answers that may become samples as they are: `"truncated"`, `"empty"`,
    `"refusal"`, `"content_filter"` (by default `get_text()` raises for them).
    `metadata` is recorded with the step and never sent.
    """
    if response_model is not None:
        from shaping.structured import schema_of

        schema_of(response_model)  # a bad response_model fails here, in the task that made it
    if params and (problem := streaming_problem(params)) is not None:
        raise ValueError(f"model_request: {problem}")
    if temperature is not None:
        params["temperature"] = temperature
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if tools is not None:
        params["tools"] = tools
    if tool_choice is not None:
        params["tool_choice"] = tool_choice
    params = {k: v for k, v in params.items() if v is not None}
    return ModelRequest(model=model_name_of(model), messages=_as_messages(messages), params=params,
                        response_model=response_model, max_repairs=max_repairs,
                        allow=_as_outcomes(allow) if allow else frozenset(), metadata=metadata or {})
