"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama (`/v1`), xAI, Together, any base_url.

Messages go as they are (OpenAI's shape is ours), except `reasoning_content` of earlier
assistant turns, which OpenAI and DeepSeek refuse as input (`options.send_reasoning = true`
sends it, for servers whose chat template uses it), and a tool turn's `name` (the API takes
`tool_call_id` alone). Params go as top-level fields; reasoning
models get theirs (see `shaping.providers.reasoning`).

An answer is read whole: `content` (a string or a list of parts), `refusal`,
`reasoning_content` or `reasoning` (vLLM, DeepSeek, OpenRouter), `tool_calls`, the finish
reason, and usage with its cached and reasoning token details.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from shaping.providers.base import UnsupportedRequest
from shaping.providers.http import HTTPOptions, HTTPProvider
from shaping.providers.reasoning import openai_params
from shaping.requests import LLMRequest, ModelResponse, ToolCall, Usage

FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
                  "content_filter": "content_filter", "refusal": "refusal", "eos": "stop", "end_turn": "stop",
                  "max_tokens": "length", "stop_sequence": "stop"}
#: base URLs whose server enforces `response_format` (the schema need not be in the prompt)
HONOURS_RESPONSE_FORMAT = ("https://api.openai.com/",)


class OpenAIOptions(HTTPOptions):
    send_reasoning: bool = Field(default=False, description="send reasoning_content of earlier assistant turns")
    response_format_honoured: bool | None = Field(
        default=None, description="whether the server enforces response_format (default: only api.openai.com)")


class OpenAIProvider(HTTPProvider):
    default_base_url = "https://api.openai.com/v1"
    path = "/chat/completions"
    supports_response_format = True
    Options = OpenAIOptions

    @property
    def honours_response_format(self) -> bool:
        if self.options.response_format_honoured is not None:
            return self.options.response_format_honoured
        return all(b.startswith(HONOURS_RESPONSE_FORMAT) for b in self.base_urls)

    def prepare_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return openai_params(self.config.model, params)

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def body(self, request: LLMRequest) -> dict[str, Any]:
        messages = [m.model_dump() for m in request.messages]
        for m in messages:
            if m["role"] == "tool":  # the API knows a tool turn by tool_call_id alone
                m.pop("name", None)
            elif not self.options.send_reasoning:
                m.pop("reasoning_content", None)
        return {**request.params, "model": self.config.model, "messages": messages}

    def parse(self, data: Any) -> ModelResponse:
        choice = data["choices"][0]
        message = choice["message"]
        text, refusal = _content(message.get("content"))
        refusal = message.get("refusal") or refusal
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning is not None and not isinstance(reasoning, str):
            raise TypeError("message.reasoning is not a string")
        calls = message.get("tool_calls") or []
        if message.get("function_call"):  # the legacy single call
            calls = [{"id": "call_0", "type": "function", "function": message["function_call"]}]
        tool_calls = [ToolCall(id=c["id"], function={"name": c["function"]["name"],
                                                     "arguments": _arguments(c["function"].get("arguments"))})
                      for c in calls]
        finish = choice.get("finish_reason")
        if finish is not None and finish not in FINISH_REASONS:  # "error" (OpenRouter), "abort" (vLLM)...
            return self.failure("incomplete_response", f"the answer ended with finish_reason {finish!r}, "
                                f"not a finished answer", retryable=True)
        return ModelResponse(
            text=text,
            reasoning=reasoning or None,
            tool_calls=tool_calls or None,
            refusal=refusal or None,
            model=str(data.get("model") or self.config.model),
            finish_reason=FINISH_REASONS.get(finish) if finish else None,
            usage=_usage(data.get("usage") or {}),
        )


def _content(content: Any) -> tuple[str, str | None]:
    """(text, refusal) from `content`: None, a string, or a list of text/refusal parts."""
    if content is None or isinstance(content, str):
        return content or "", None
    if not isinstance(content, list):
        raise TypeError("message.content is neither a string nor a list of parts")
    texts, refusals = [], []
    for part in content:
        kind = part.get("type")
        if kind in ("text", "output_text"):
            texts.append(part["text"])
        elif kind == "refusal":
            refusals.append(part["refusal"])
    return "".join(texts), "".join(refusals) or None


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, str):
        return arguments
    import json

    return json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)


def _usage(usage: dict[str, Any]) -> Usage:
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


__all__ = ["OpenAIProvider", "UnsupportedRequest"]
