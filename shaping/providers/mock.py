"""A deterministic, offline model for demos and tests.

Its answer depends on the whole conversation (a digest of every turn, the count of example
turns before the last user turn), so a test can prove that system and k-shot turns arrived.
The same conversation always gets the same answer. Asked for structured output
(`response_format={"type": "json_schema", ...}`) it answers with JSON valid for that schema
(`mock_json`); asked for `{"type": "json_object"}` it answers `{"answer": "..."}`.
"""

from __future__ import annotations

import hashlib
import json

import anyio
from pydantic import BaseModel, ConfigDict, Field

from shaping.providers.base import Provider
from shaping.providers.mock_json import schema_instance
from shaping.requests import LLMRequest, ModelResponse, ResponseError, Usage


class MockOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latency_s: float = Field(default=0.0, ge=0, description="sleep this long per batch")
    fail_when_contains: str | None = Field(
        default=None, description="fail requests whose last user turn contains this text"
    )


def conversation_digest(request: LLMRequest) -> str:
    turns = [[m.role, m.content] for m in request.messages]
    return hashlib.sha256(json.dumps(turns).encode()).hexdigest()[:10]


def mock_reply(model: str, request: LLMRequest) -> str:
    messages = request.messages
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    examples = sum(1 for m in messages[:-1] if m.role == "assistant")
    system = next((m.content for m in messages if m.role == "system"), None)
    prompt = " ".join(last_user.split())
    if len(prompt) > 160:
        prompt = prompt[:157] + "..."
    parts = [f"[{model} {conversation_digest(request)}]"]
    if system:
        parts.append(f"(system: {' '.join(system.split())[:40]})")
    if examples:
        parts.append(f"(after {examples} example(s))")
    parts.append(f"Answer to: {prompt}")
    return " ".join(parts)


class MockProvider(Provider):
    default_batch_size = 64
    default_concurrency = 4
    supports_response_format = True
    Options = MockOptions

    async def generate_batch(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        if self.options.latency_s:
            await anyio.sleep(self.options.latency_s)
        return [self._answer(r) for r in requests]

    def _answer(self, request: LLMRequest) -> ModelResponse:
        model = self.config.model
        last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
        prompt_tokens = sum(len(m.content.split()) + 3 for m in request.messages)
        trigger = self.options.fail_when_contains
        if trigger and trigger in last_user:
            return ModelResponse(
                model=model,
                error=ResponseError(type="mock_error", message=f"mock failure: prompt contains {trigger!r}"),
                usage=Usage(prompt_tokens=prompt_tokens),
            )
        text = mock_reply(model, request)
        finish = "stop"
        max_tokens = request.params.get("max_tokens")
        response_format = request.params.get("response_format")
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
            model=model,
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(text.split())),
        )
