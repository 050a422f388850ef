"""Anthropic's native Messages API, mapped both ways.

Out: system turns move to the `system` field; text parts become text blocks and image_url
parts image blocks (a `data:` URL as base64, any other URL as a url source); an assistant
turn's `tool_calls` become tool_use blocks and `tool` turns tool_result blocks in a user turn;
consecutive turns of one role are joined (the API wants user and assistant to alternate);
`stop` becomes `stop_sequences`; OpenAI-shaped `tools` and `tool_choice` become Anthropic's;
params the API does not take (`seed`, `n`, penalties, logprobs) are refused by name.
`max_tokens` is required: from the request, the model's params, or `options.max_tokens`.
Extended thinking (`thinking`, or `reasoning_effort`) is set up by `shaping.providers.reasoning`.
The reasoning of earlier assistant turns is not sent: the API takes thinking back only with
its signature, and leaves earlier turns' thinking out of the context anyway. For the same reason
a tool-use follow-up (earlier tool calls) is refused with extended thinking on.

In: text blocks are the text, thinking blocks the reasoning, tool_use blocks the tool calls;
`stop_reason` refusal / max_tokens / tool_use are normalised; usage counts cache reads and
writes as input tokens (and says which).

Batch mode (shaping.providers.batch): Message Batches, each request `{custom_id, params}` with
the body an online request would have; a succeeded result is read as an online answer, an
errored one by its error type (invalid_request_error fails at once, overloaded_error is retried).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import orjson
from pydantic import Field

from shaping.error_types import ErrorType
from shaping.providers.base import UnsupportedRequest
from shaping.providers.batch import BatchAPI, BatchLimits, BatchState, item_error
from shaping.providers.http import HTTPOptions, HTTPProvider
from shaping.providers.reasoning import anthropic_params
from shaping.requests import ImagePart, LLMMessage, LLMRequest, ModelResponse, TextPart, ToolCall, Usage

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "refusal": "refusal", "pause_turn": "length", "model_context_window_exceeded": "length"}
#: params the API does not take: refused by name
UNSUPPORTED = {"seed", "n", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "logit_bias"}


class AnthropicOptions(HTTPOptions):
    max_tokens: int = Field(default=1024, gt=0, description="when neither request nor params give one")
    #: 2026-10-21 refuses sampling params (temperature, top_k, top_p), so they are not sent;
    #: "2023-06-01" still takes them on the models that do
    anthropic_version: str = "2026-10-21"


class AnthropicProvider(BatchAPI, HTTPProvider):
    default_base_url = "https://api.anthropic.com"
    list_price_hosts = frozenset({"api.anthropic.com"})
    path = "/v1/messages"
    needs_key = True
    Options = AnthropicOptions
    #: Message Batches: up to 100,000 requests or 256 MB
    batch_limits = BatchLimits(100_000, 256 * 10**6)

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self._api_key or "", "anthropic-version": self.options.anthropic_version}

    def prepare_params(self, params: dict[str, Any]) -> dict[str, Any]:
        if "response_format" in params:
            raise UnsupportedRequest("response_format is not an Anthropic param (use response_model=: the "
                                     "schema goes into the prompt)")
        refused = sorted(k for k in params if k in UNSUPPORTED)
        if refused:
            raise UnsupportedRequest(f"Anthropic's API does not take {', '.join(refused)} (remove it from the "
                                     f"request or from shaping.toml [models.{self.name}.params])")
        try:
            return anthropic_params(params, self.options.max_tokens,
                                    sampling=self.options.anthropic_version < "2026-10-21")
        except ValueError as exc:
            raise UnsupportedRequest(str(exc)) from exc

    def body(self, request: LLMRequest) -> dict[str, Any]:
        thinking = request.params.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled" and any(
                m.tool_calls for m in request.messages):
            raise UnsupportedRequest("a conversation with earlier tool calls cannot be sent with extended thinking: "
                                     "the API wants each earlier turn's signed thinking block back, and shaping "
                                     "does not keep signatures (turn thinking off for tool-use pipelines)")
        system = [_system_text(m) for m in request.messages if m.role == "system"]
        turns: list[dict[str, Any]] = []
        for m in request.messages:
            if m.role == "system":
                continue
            role = "user" if m.role == "tool" else m.role
            blocks = _blocks(m)
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += blocks
            else:
                turns.append({"role": role, "content": blocks})
        for turn in turns:  # plain text stays a plain string
            if all(b["type"] == "text" for b in turn["content"]):
                turn["content"] = "\n\n".join(b["text"] for b in turn["content"])
        params = dict(request.params)
        if "stop" in params:
            stop = params.pop("stop")
            params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        if "tools" in params:
            params["tools"] = [_tool(t) for t in params["tools"]]
        if "tool_choice" in params:
            params["tool_choice"] = _tool_choice(params["tool_choice"])
        body: dict[str, Any] = {**params, "model": self.config.model, "messages": turns}
        if system:
            body["system"] = "\n\n".join(system)
        return body

    def parse(self, data: Any) -> ModelResponse:
        if data.get("type") == "error":
            raise ValueError(data.get("error"))
        texts, thinking, calls = [], [], []
        for block in data["content"]:
            kind = block.get("type")
            if kind == "text":
                texts.append(block["text"])
            elif kind == "thinking":
                thinking.append(block["thinking"])
            elif kind == "tool_use":
                calls.append(ToolCall(id=block["id"], function={
                    "name": block["name"], "arguments": json.dumps(block.get("input") or {}, ensure_ascii=False)}))
        stop = data.get("stop_reason")
        return ModelResponse(
            text="".join(texts),
            reasoning="\n\n".join(thinking) or None,
            tool_calls=calls or None,
            model=str(data.get("model") or self.config.model),
            finish_reason=STOP_REASONS.get(stop, "stop" if stop else None),
            usage=_usage(data.get("usage") or {}),
        )


    # -- Message Batches: POST /v1/messages/batches {requests: [{custom_id, params}]}, poll
    # GET /v1/messages/batches/{id}, read results_url (JSONL) once processing has ended ---------

    def batch_item(self, custom_id: str, request: LLMRequest) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "params": self.body(request)})

    async def create_batch(self, items: list[bytes], tag: str) -> BatchState:
        body = b'{"requests":[' + b",".join(items) + b"]}"
        return self._batch_state(await self.api_call("POST", f"{self.path}/batches", body))

    async def get_batch(self, batch_id: str) -> BatchState:
        return self._batch_state(await self.api_call("GET", f"{self.path}/batches/{batch_id}"))

    async def cancel_batch(self, batch_id: str) -> BatchState:
        return self._batch_state(await self.api_call("POST", f"{self.path}/batches/{batch_id}/cancel"))

    def _batch_state(self, data: dict[str, Any]) -> BatchState:
        counts = data.get("request_counts") or {}
        failed = sum(int(counts.get(k) or 0) for k in ("errored", "canceled", "expired"))
        succeeded = int(counts.get("succeeded") or 0)
        status = data["processing_status"]
        url = data.get("results_url")
        if url and urlsplit(url).netloc != urlsplit(self.base_url).netloc:  # base_url is a gateway: ask it
            url = None
        return BatchState(
            id=data["id"], status=status, ended=status == "ended",
            total=succeeded + failed + int(counts.get("processing") or 0), succeeded=succeeded, failed=failed,
            results=[url or f"{self.path}/batches/{data['id']}/results"],
            cancelled=data.get("cancel_initiated_at") is not None)

    async def batch_results(self, state: BatchState) -> AsyncIterator[tuple[str, ModelResponse]]:
        async for line in self.api_lines(state.results[0]):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                custom_id, result = data["custom_id"], data["result"]
                kind = result["type"]
            except (ValueError, KeyError, TypeError):
                continue  # unreadable: its request counts as missing
            if kind == "succeeded":
                yield custom_id, self.read_answer(result.get("message"))
            elif kind == "errored":
                error = ((result.get("error") or {}).get("error")) or {}
                name, retryable, status = BATCH_ERRORS.get(error.get("type"), (ErrorType.SERVER_ERROR, True, None))
                yield custom_id, item_error(name, self.scrub(f"{error.get('type')}: {error.get('message')}"),
                                            retryable, status)
            elif kind == "canceled":
                yield custom_id, item_error(ErrorType.BATCH_CANCELLED, "the batch was cancelled before this request ran",
                                            retryable=False)
            else:  # expired: the batch ended (24 h) before this request ran
                yield custom_id, item_error(ErrorType.BATCH_EXPIRED, f"{kind}: the batch ended before this request ran",
                                            retryable=True)


#: an errored batch result's error type -> (our error type, retryable, the HTTP status it stands for)
BATCH_ERRORS = {
    "invalid_request_error": (ErrorType.BAD_REQUEST, False, 400),
    "authentication_error": (ErrorType.AUTH, False, 401),
    "billing_error": ("billing_error", False, 402),
    "permission_error": (ErrorType.PERMISSION, False, 403),
    "not_found_error": (ErrorType.NOT_FOUND, False, 404),
    "request_too_large": (ErrorType.BAD_REQUEST, False, 413),
    "rate_limit_error": (ErrorType.RATE_LIMITED, True, 429),
    "api_error": (ErrorType.SERVER_ERROR, True, 500),
    "timeout_error": (ErrorType.TIMEOUT, True, 504),
    "overloaded_error": (ErrorType.SERVER_ERROR, True, 529),
}


def _system_text(message: LLMMessage) -> str:
    if isinstance(message.content, list) and any(isinstance(p, ImagePart) for p in message.content):
        raise UnsupportedRequest("an image in a system turn cannot be sent to Anthropic (put it in a user turn)")
    return message.text


def _blocks(message: LLMMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": _content_blocks(message.content)}]
    blocks = _content_blocks(message.content)
    for call in message.tool_calls or ():
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError as exc:
            raise UnsupportedRequest(f"tool call {call.id}: arguments are not JSON, and Anthropic takes "
                                     f"tool input as a JSON object") from exc
        blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments})
    return blocks


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        if isinstance(part, TextPart):
            blocks.append({"type": "text", "text": part.text})
        else:
            blocks.append({"type": "image", "source": _image_source(part.image_url.url)})
    return blocks


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, _, data = url.partition(",")
        media_type = head[5:].split(";")[0]
        if ";base64" not in head or not media_type:
            raise UnsupportedRequest("an image data: URL must be base64 with a media type (data:image/png;base64,...)")
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function" or "function" not in tool:
        raise UnsupportedRequest(f"tools: expected OpenAI's {{type: function, function: {{name, parameters}}}}, "
                                 f"got {str(tool)[:80]}")
    function = tool["function"]
    out = {"name": function["name"], "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if isinstance(choice, str):
        mapped = {"auto": "auto", "required": "any", "none": "none"}.get(choice)
        if mapped is None:
            raise UnsupportedRequest(f"tool_choice: expected auto, required, none or a function, got {choice!r}")
        return {"type": mapped}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": choice["function"]["name"]}
    return choice  # already Anthropic's shape


def _usage(usage: dict[str, Any]) -> Usage:
    read = int(usage.get("cache_read_input_tokens") or 0)
    write = int(usage.get("cache_creation_input_tokens") or 0)
    return Usage(
        prompt_tokens=int(usage.get("input_tokens") or 0) + read + write,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cached_tokens=read,
        cache_write_tokens=write,
    )
