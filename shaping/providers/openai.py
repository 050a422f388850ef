"""OpenAI-compatible chat completions: OpenAI, vLLM, Ollama (`/v1`), xAI, Together, any base_url.

Messages go as they are (OpenAI's shape is ours), except `reasoning_content` of earlier
assistant turns, which OpenAI and DeepSeek refuse as input (`options.send_reasoning = true`
sends it, for servers whose chat template uses it), and a tool turn's `name` (the API takes
`tool_call_id` alone). Params go as top-level fields; reasoning
models get theirs (see `shaping.providers.reasoning`).

An answer is read whole: `content` (a string or a list of parts), `refusal`,
`reasoning_content` or `reasoning` (vLLM, DeepSeek, OpenRouter), `tool_calls`, the finish
reason, and usage with its cached and reasoning token details.

Batch mode (shaping.providers.batch): the Batch API, each line `{custom_id, method: POST, url:
/v1/chat/completions, body}` with the body an online request would have; results are read by the
same parsing, and a line's HTTP error as an online one would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import Field

from shaping.error_types import ErrorType
from shaping.providers.base import UnsupportedRequest
from shaping.providers.batch import BatchAPI, BatchLimits, BatchState, item_error
from shaping.providers.http import HTTPOptions, HTTPProvider
from shaping.providers.reasoning import openai_params
from shaping.requests import LLMRequest, ModelResponse, ResponseError, ToolCall

FINISH_REASONS = {"stop": "stop", "length": "length", "tool_calls": "tool_calls", "function_call": "tool_calls",
                  "content_filter": "content_filter", "refusal": "refusal", "eos": "stop", "end_turn": "stop",
                  "max_tokens": "length", "stop_sequence": "stop"}
#: the endpoint every line of a batch goes to (relative to the API's root, not to base_url)
BATCH_ENDPOINT = "/v1/chat/completions"
#: the batch metadata key that holds shaping's tag for a submission
TAG_KEY = "shaping_tag"
#: batches asked for a page when one is looked up by its tag (the API's most)
FIND_PAGE = 100
#: how far the provider's clock may be behind ours when a batch is looked up by its tag
CLOCK_SLACK_S = 600
#: base URLs whose server enforces `response_format` (the schema need not be in the prompt)
HONOURS_RESPONSE_FORMAT = ("https://api.openai.com/",)


class OpenAIOptions(HTTPOptions):
    send_reasoning: bool = Field(default=False, description="send reasoning_content of earlier assistant turns")
    response_format_honoured: bool | None = Field(
        default=None, description="whether the server enforces response_format (default: only api.openai.com)")


class OpenAIProvider(BatchAPI, HTTPProvider):
    default_base_url = "https://api.openai.com/v1"
    list_price_hosts = frozenset({"api.openai.com"})
    path = "/chat/completions"
    supports_response_format = True
    Options = OpenAIOptions
    #: Batch API: a JSONL file of up to 50,000 requests or 200 MB
    batch_limits = BatchLimits(50_000, 200 * 10**6)
    finds_batches = True  # by the tag in its metadata

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
        messages = [m.wire() for m in request.messages]
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
            return self.failure(ErrorType.INCOMPLETE, f"the answer ended with finish_reason {finish!r}, "
                                f"not a finished answer", retryable=True)
        return ModelResponse.model_validate({  # one validation, usage included
            "text": text,
            "reasoning": reasoning or None,
            "tool_calls": tool_calls or None,
            "refusal": refusal or None,
            "model": str(data.get("model") or self.config.model),
            "finish_reason": FINISH_REASONS.get(finish) if finish else None,
            "usage": _usage(data.get("usage") or {}),
        })


    # -- the Batch API: upload a JSONL file (POST /files, purpose batch), POST /batches, poll
    # GET /batches/{id}, read output_file_id and error_file_id (GET /files/{id}/content) ------

    def batch_item(self, custom_id: str, request: LLMRequest) -> bytes:
        return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT,
                             "body": self.body(request)})

    async def create_batch(self, items: list[bytes], tag: str) -> BatchState:
        from pyreqwest.multipart import FormBuilder, PartBuilder

        content = b"\n".join(items) + b"\n"
        form = (FormBuilder().text("purpose", "batch")
                .part("file", PartBuilder.from_bytes(content).file_name(f"shaping-{tag}.jsonl")
                      .mime("application/jsonl")))
        file = await self.api_call("POST", "/files", form=form)
        data = await self.api_call("POST", "/batches", {
            "input_file_id": file["id"], "endpoint": BATCH_ENDPOINT, "completion_window": "24h",
            "metadata": {TAG_KEY: tag}})
        return self._batch_state(data)

    async def get_batch(self, batch_id: str) -> BatchState:
        return self._batch_state(await self.api_call("GET", f"/batches/{batch_id}"))

    async def cancel_batch(self, batch_id: str) -> BatchState:
        return self._batch_state(await self.api_call("POST", f"/batches/{batch_id}/cancel"))

    async def find_batch(self, tag: str, since: float) -> str | None:
        """The batch whose metadata holds `tag`, created since `since`: the list (newest first)
        is read page by page until a batch older than that."""
        oldest = since - CLOCK_SLACK_S
        after = None
        while True:
            data = await self.api_call("GET", f"/batches?limit={FIND_PAGE}" + (f"&after={after}" if after else ""))
            page = data.get("data") or []
            for batch in page:
                if (batch.get("metadata") or {}).get(TAG_KEY) == tag:
                    return batch["id"]
            if not page or not data.get("has_more") or min(int(b.get("created_at") or 0) for b in page) < oldest:
                return None
            after = data.get("last_id") or page[-1]["id"]

    def _batch_state(self, data: dict[str, Any]) -> BatchState:
        status = data["status"]
        counts = data.get("request_counts") or {}
        error = None
        refused: dict[int, ResponseError] = {}
        if status == "failed":  # validation of the file failed: no result per request
            errors = (data.get("errors") or {}).get("data") or []
            message = "; ".join(f"{e.get('code')}: {e.get('message')}" + (f" (line {e['line']})" if e.get("line") else "")
                                for e in errors[:3]) or "the batch failed"
            # the organisation's queue of batch tokens was full: it empties as batches end
            retryable = any(e.get("code") == "token_limit_exceeded" for e in errors)
            error = ResponseError(type=ErrorType.BATCH_FAILED, message=self.scrub(f"batch {data['id']} failed: {message}"),
                                  retryable=retryable)
            if errors and all(isinstance(e.get("line"), int) for e in errors):  # bad lines, named: only they fail
                for e in errors:
                    line = e["line"]
                    said = f"{e.get('code')}: {e.get('message')}"
                    if line in refused:
                        refused[line].message += f"; {self.scrub(said)}"
                    else:
                        refused[line] = ResponseError(type=ErrorType.BAD_REQUEST, retryable=False, message=self.scrub(
                            f"batch {data['id']} refused this request (line {line}): {said}"))
        return BatchState(
            id=data["id"], status=status, ended=status in ("completed", "failed", "expired", "cancelled"),
            total=int(counts.get("total") or 0), succeeded=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            results=[f for f in (data.get("output_file_id"), data.get("error_file_id")) if f],
            error=error, refused=refused, cancelled=status in ("cancelling", "cancelled"))

    async def batch_results(self, state: BatchState) -> AsyncIterator[tuple[str, ModelResponse]]:
        for file_id in state.results:
            async for line in self.api_lines(f"/files/{file_id}/content"):
                if not line.strip():
                    continue
                try:
                    data = orjson.loads(line)
                    custom_id = data["custom_id"]
                except (ValueError, KeyError, TypeError):
                    continue  # unreadable: its request counts as missing
                yield custom_id, self._batch_answer(data)

    def _batch_answer(self, data: dict[str, Any]) -> ModelResponse:
        """One output or error line: the answer, an HTTP failure (as online), or expired/cancelled."""
        error = data.get("error")
        response = data.get("response")
        if error or not isinstance(response, dict):
            code = (error or {}).get("code") or "batch_error"
            message = self.scrub(f"{code}: {(error or {}).get('message') or 'no response in the batch output'}")
            if code == "batch_expired":
                return item_error(ErrorType.BATCH_EXPIRED, message, retryable=True)
            if code == "batch_cancelled":
                return item_error(ErrorType.BATCH_CANCELLED, message, retryable=False)
            return item_error("batch_error", message, retryable=True)
        status = int(response.get("status_code") or 0)
        body = response.get("body")
        raw = orjson.dumps(body)
        if status >= 300 or status == 0:
            return self.http_failure(status or 500, raw, {}, None, self.base_url, f"{self.path} (in a batch)")
        return self.read_answer(body, raw)


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


def _usage(usage: dict[str, Any]) -> dict[str, int]:
    """`Usage`'s fields from the API's usage object."""
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return {
        "prompt_tokens": int(usage.get("prompt_tokens") or 0),
        "completion_tokens": int(usage.get("completion_tokens") or 0),
        "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
        "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0),
    }


__all__ = ["OpenAIProvider", "UnsupportedRequest"]
