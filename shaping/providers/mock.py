"""A deterministic, offline model for demos and tests.

Its answer depends on the whole conversation (a digest of every turn, the count of example
turns before the last user turn), so a test can prove that system and k-shot turns arrived.
The same conversation always gets the same answer. Besides text it shows, on request, what
real models send back:
- structured output (`response_format={"type": "json_schema", ...}`): JSON valid for that
  schema (`mock_json`); `{"type": "json_object"}`: `{"answer": "..."}`;
- reasoning: with `reasoning_effort` in the params or `options.reasoning = true`, a
  deterministic chain of thought in `reasoning` (its words count as reasoning tokens);
- tool calls: offered `tools` and not yet answered by a tool turn, it calls one (the one
  `tool_choice` names, else the first) with arguments made from its JSON schema; after the tool
  turns it answers with text that quotes their results;
- `max_tokens` cuts the answer at that many words (`finish_reason: length`);
- `fail_when_contains` / `refuse_when_contains`: a failed request / a refusal, for tests.

In batch mode (`batch = true`) its batches end `batch_latency_s` after they are submitted, with
the answers it gives online; they live in the process that submitted them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

import anyio
import orjson
from pydantic import BaseModel, ConfigDict, Field

from shaping.error_types import ErrorType
from shaping.providers.base import Provider
from shaping.providers.batch import BatchAPI, BatchCallError, BatchLimits, BatchState, item_error
from shaping.providers.mock_json import schema_instance
from shaping.requests import LLMRequest, ModelResponse, ResponseError, ToolCall, Usage


class MockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(default=0.0, ge=0, description="sleep this long per batch")
    fail_when_contains: str | None = Field(
        default=None, description="fail requests whose last user turn contains this text"
    )
    refuse_when_contains: str | None = Field(
        default=None, description="refuse requests whose last user turn contains this text"
    )
    reasoning: bool = Field(default=False, description="think before every answer (as with reasoning_effort)")
    batch_latency_s: float = Field(default=1.0, ge=0,
                                   description="in batch mode (batch = true): a batch ends this long after it is submitted")


def conversation_digest(request: LLMRequest) -> str:
    turns = [m.key() for m in request.messages]
    return hashlib.sha256(json.dumps(turns).encode()).hexdigest()[:10]


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def mock_reply(model: str, request: LLMRequest) -> str:
    messages = request.messages
    last_user = next((m.text for m in reversed(messages) if m.role == "user"), "")
    examples = sum(1 for m in messages[:-1] if m.role == "assistant" and not m.tool_calls)
    system = next((m.text for m in messages if m.role == "system"), None)
    parts = [f"[{model} {conversation_digest(request)}]"]
    if system:
        parts.append(f"(system: {' '.join(system.split())[:40]})")
    if examples:
        parts.append(f"(after {examples} example(s))")
    results = _tool_results(request)
    if results:
        parts.append("Using the tool results " + "; ".join(f"{name} -> {_short(out, 60)}" for name, out in results) + ":")
    parts.append(f"Answer to: {_short(last_user)}")
    return " ".join(parts)


def _tool_results(request: LLMRequest) -> list[tuple[str, str]]:
    """(tool name, result) of the tool turns after the last user turn."""
    names = {}
    results = []
    for m in request.messages:
        if m.role == "user":
            results = []
        for call in m.tool_calls or ():
            names[call.id] = call.function.name
        if m.role == "tool":
            results.append((m.name or names.get(m.tool_call_id, "tool"), m.text))
    return results


def mock_reasoning(request: LLMRequest) -> str:
    last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    return (f"The user asks: {_short(last_user, 120)} Let me think step by step "
            f"({conversation_digest(request)}): restate the question, recall what applies, then answer.")


@dataclass
class _MockBatch:
    ends_at: float
    requests: list[tuple[str, LLMRequest]]
    cancelled: bool = False


class MockProvider(BatchAPI, Provider):
    local = True
    default_batch_size = 64
    default_concurrency = 4
    supports_response_format = True
    Options = MockOptions
    operational_options = frozenset({"latency_s", "batch_latency_s"})
    batch_limits = BatchLimits(100_000, 256 * 10**6)

    @property
    def batch_poll_s(self) -> float:  # a mock batch ends after batch_latency_s: look a few times in that
        return self.config.batch_poll_s or max(0.05, self.options.batch_latency_s / 4)

    #: the batches this process submitted (a mock batch lives as long as its process)
    _batches: ClassVar[dict[str, _MockBatch]] = {}

    # -- batch mode: answers as online, `batch_latency_s` after the batch was submitted ------

    def batch_item(self, custom_id: str, request: LLMRequest) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "request": request.model_dump(mode="json", exclude={"metadata"})})

    async def create_batch(self, items: list[bytes], tag: str) -> BatchState:
        batch_id = f"mockbatch_{tag}"
        requests = [(d["custom_id"], LLMRequest.model_validate(d["request"])) for d in map(orjson.loads, items)]
        self._batches[batch_id] = _MockBatch(time.monotonic() + self.options.batch_latency_s, requests)
        return self._batch_state(batch_id)

    def _known(self, batch_id: str) -> _MockBatch:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise BatchCallError(ResponseError(type=ErrorType.NOT_FOUND, status_code=404, message=(
                f"mock batch {batch_id} is unknown to this process (a mock batch lives as long as the run that "
                f"submitted it)")))
        return batch

    def _batch_state(self, batch_id: str) -> BatchState:
        batch = self._known(batch_id)
        ended = batch.cancelled or time.monotonic() >= batch.ends_at
        total = len(batch.requests)
        return BatchState(id=batch_id, status="cancelled" if batch.cancelled else "ended" if ended else "in_progress",
                          ended=ended, total=total, succeeded=0 if batch.cancelled or not ended else total,
                          failed=total if batch.cancelled else 0, cancelled=batch.cancelled)

    async def get_batch(self, batch_id: str) -> BatchState:
        return self._batch_state(batch_id)

    finds_batches = True  # its ids are made from the tag

    async def find_batch(self, tag: str, since: float) -> str | None:
        batch_id = f"mockbatch_{tag}"
        return batch_id if batch_id in self._batches else None

    async def cancel_batch(self, batch_id: str) -> BatchState:
        batch = self._known(batch_id)
        if time.monotonic() < batch.ends_at:
            batch.cancelled = True
        return self._batch_state(batch_id)

    async def batch_results(self, state: BatchState) -> AsyncIterator[tuple[str, ModelResponse]]:
        batch = self._known(state.id)
        for custom_id, request in batch.requests:
            if batch.cancelled:
                yield custom_id, item_error(ErrorType.BATCH_CANCELLED, "the batch was cancelled before this request ran",
                                            retryable=False)
            else:
                yield custom_id, self._answer(request)

    async def generate_batch(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        if self.options.latency_s:
            await anyio.sleep(self.options.latency_s)
        return [self._answer(r) for r in requests]

    def _answer(self, request: LLMRequest) -> ModelResponse:
        model = self.config.model
        params = request.params
        last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
        prompt_tokens = sum(len(m.text.split()) + 3 for m in request.messages)
        trigger = self.options.fail_when_contains
        if trigger and trigger in last_user:
            return ModelResponse(
                model=model,
                error=ResponseError(type=ErrorType.MOCK, message=f"mock failure: prompt contains {trigger!r}"),
                usage=Usage(prompt_tokens=prompt_tokens),
            )
        refuse = self.options.refuse_when_contains
        if refuse and refuse in last_user:
            return ModelResponse(model=model, text="", refusal="I can't help with that.", finish_reason="refusal",
                                 usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=6))
        reasoning = mock_reasoning(request) if (self.options.reasoning or params.get("reasoning_effort")) else None
        reasoning_tokens = len(reasoning.split()) if reasoning else 0
        calls = mock_tool_calls(request)
        if calls:
            completion = reasoning_tokens + sum(len(c.function.arguments.split()) for c in calls)
            return ModelResponse(model=model, text="", reasoning=reasoning, tool_calls=calls,
                                 finish_reason="tool_calls",
                                 usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                                             reasoning_tokens=reasoning_tokens))
        text = mock_reply(model, request)
        finish = "stop"
        max_tokens = params.get("max_tokens", params.get("max_completion_tokens"))
        response_format = params.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
            schema = (response_format.get("json_schema") or {}).get("schema")
            data = schema_instance(schema, conversation_digest(request), last_user) if schema else {"answer": text}
            text, max_tokens = json.dumps(data, ensure_ascii=False), None
        if isinstance(max_tokens, int) and max_tokens > 0:
            words = text.split(" ")
            if len(words) > max_tokens:
                text, finish = " ".join(words[:max_tokens]), "length"
        return ModelResponse(
            text=text,
            reasoning=reasoning,
            model=model,
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split()) + reasoning_tokens,
                        reasoning_tokens=reasoning_tokens),
        )


def mock_tool_calls(request: LLMRequest) -> list[ToolCall]:
    """Offered tools and not yet answered by a tool turn: a call of one (the one `tool_choice`
    names, else the first) with arguments made from its JSON schema."""
    tools = request.params.get("tools") or []
    choice = request.params.get("tool_choice", "auto")
    if not tools or choice == "none" or request.messages[-1].role == "tool":
        return []
    tool = tools[0]
    if isinstance(choice, dict) and choice.get("type") == "function":
        wanted = choice["function"]["name"]
        tool = next((t for t in tools if t["function"]["name"] == wanted), tool)
    function = tool["function"]
    digest = conversation_digest(request)
    last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    arguments = schema_instance(schema, digest, last_user)
    return [ToolCall(id=f"call_{digest}", function={"name": function["name"],
                                                     "arguments": json.dumps(arguments, ensure_ascii=False)})]
