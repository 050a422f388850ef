"""Anthropic's native Messages API.

System turns move to the `system` field; consecutive turns of one role are joined (the API
wants user and assistant to alternate); `stop` becomes `stop_sequences`. `max_tokens` is
required by the API: it comes from the request, the model's params, or `options.max_tokens`.
Params the API does not take (`seed`, `response_format`) are not sent.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shaping.providers.http import HTTPOptions, HTTPProvider
from shaping.requests import LLMRequest, ModelResponse, Usage

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls"}
UNSUPPORTED = {"seed", "response_format", "n", "presence_penalty", "frequency_penalty"}


class AnthropicOptions(HTTPOptions):
    max_tokens: int = Field(default=1024, gt=0, description="when neither request nor params give one")
    anthropic_version: str = "2023-06-01"


class AnthropicProvider(HTTPProvider):
    default_base_url = "https://api.anthropic.com"
    path = "/v1/messages"
    needs_key = True
    Options = AnthropicOptions

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key or "", "anthropic-version": self.options.anthropic_version}

    def body(self, request: LLMRequest) -> dict[str, Any]:
        system = [m.content for m in request.messages if m.role == "system"]
        turns: list[dict[str, str]] = []
        for m in request.messages:
            if m.role == "system":
                continue
            if turns and turns[-1]["role"] == m.role:
                turns[-1]["content"] += "\n\n" + m.content
            else:
                turns.append({"role": m.role, "content": m.content})
        params = {k: v for k, v in request.params.items() if k not in UNSUPPORTED}
        if "stop" in params:
            stop = params.pop("stop")
            params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        body: dict[str, Any] = {
            **params,
            "model": self.config.model,
            "max_tokens": params.get("max_tokens") or self.options.max_tokens,
            "messages": turns,
        }
        if system:
            body["system"] = "\n\n".join(system)
        return body

    def parse(self, data: Any) -> ModelResponse:
        if data.get("type") == "error":
            raise ValueError(data.get("error"))
        text = "".join(block["text"] for block in data["content"] if block.get("type") == "text")
        usage = data.get("usage") or {}
        return ModelResponse(
            text=text,
            model=str(data.get("model") or self.config.model),
            finish_reason=STOP_REASONS.get(data.get("stop_reason"), data.get("stop_reason")),
            usage=Usage(prompt_tokens=int(usage.get("input_tokens") or 0),
                                        completion_tokens=int(usage.get("output_tokens") or 0)),
        )
