"""Dry runs: a stand-in answers every request that the cache cannot, and nothing is sent.

The pipeline's generators run as they would for real, so a dry run counts the requests a run
would send, model by model, and the tokens they would take:
- input: the model's own tokenizer where the provider has one here (a local transformers
  model's); otherwise an estimate of about four characters per token, plus four per turn, plus
  the tools' and the schema's JSON (`estimate_prompt_tokens`);
- output: `answer_tokens` given for the model (or for every model), else the mean of this
  model's answers already in the request cache, else `DEFAULT_ANSWER_TOKENS`; never more than
  the request's own max_tokens.
The stand-in's answers have that many words. Where a request asks for structured output or
offers tools, it answers as the mock model does (an instance of the schema; a call of the
offered tool), so the task takes the same path it takes on the mock. A task whose code reads
the text (parses a list, say) may stop early on a stand-in answer: its later steps are not
counted, and the dry run says how many records stopped that way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from shaping.dispatch.limits import estimate_tokens
from shaping.providers.base import Provider
from shaping.providers.mock import conversation_digest, mock_tool_calls
from shaping.providers.mock_json import schema_instance
from shaping.requests import LLMRequest, ModelResponse, Usage

DEFAULT_ANSWER_TOKENS = 256


@dataclass(frozen=True)
class AnswerLength:
    tokens: int
    source: str  # how the length was chosen, for the dry-run table


def estimate_prompt_tokens(request: LLMRequest) -> int:
    extra = 0
    for name in ("tools", "response_format"):
        if request.params.get(name):
            extra += len(json.dumps(request.params[name])) // 4
    return estimate_tokens(request) + extra


def max_tokens_of(params: dict[str, Any]) -> int | None:
    """The answer-length limit a request's params set, if any."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = params.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class StandIn:
    """Answers for a dry run; `lengths` says how each model's answer length was chosen and
    `counted_by` how its prompt tokens were counted."""

    def __init__(self, answer_tokens: dict[str | None, int] | None = None, cache: Any = None) -> None:
        #: model name -> tokens; the key None applies to every model not named
        self.answer_tokens = answer_tokens or {}
        self.cache = cache
        self.lengths: dict[str, AnswerLength] = {}
        self.counted_by: dict[str, str] = {}

    def length(self, model: str) -> AnswerLength:
        found = self.lengths.get(model)
        if found is None:
            if model in self.answer_tokens:
                found = AnswerLength(self.answer_tokens[model], f"{self.answer_tokens[model]} tokens (--answer-tokens)")
            elif None in self.answer_tokens:
                found = AnswerLength(self.answer_tokens[None], f"{self.answer_tokens[None]} tokens (--answer-tokens)")
            else:
                mean, count = self.cache.answer_lengths(model) if self.cache is not None else (None, 0)
                if count:
                    found = AnswerLength(max(1, round(mean)), f"{max(1, round(mean))} tokens (the mean of {count:,} cached answers)")
                else:
                    found = AnswerLength(DEFAULT_ANSWER_TOKENS, f"{DEFAULT_ANSWER_TOKENS} tokens (the default; --answer-tokens to change)")
            self.lengths[model] = found
        return found

    def prompt_tokens(self, model: str, provider: Provider, request: LLMRequest) -> int:
        counted = provider.count_prompt_tokens(request)
        if counted is None:
            self.counted_by.setdefault(model, "prompt tokens estimated (4 characters a token)")
            return estimate_prompt_tokens(request)
        self.counted_by.setdefault(model, "prompt tokens counted by the model's tokenizer")
        return counted

    def answer(self, model: str, provider: Provider, request: LLMRequest, schema: dict[str, Any] | None) -> ModelResponse:
        """What stands in for the model's answer: the right shape, the expected size."""
        tokens = self.length(model).tokens
        ceiling = max_tokens_of(request.params)
        if ceiling is not None:
            tokens = min(tokens, ceiling)
        usage = Usage(prompt_tokens=self.prompt_tokens(model, provider, request), completion_tokens=tokens)
        calls = mock_tool_calls(request)
        if calls:
            return ModelResponse(model=provider.config.model, text="", tool_calls=calls, finish_reason="tool_calls",
                                 usage=usage)
        response_format = request.params.get("response_format")
        if schema is None and isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
        if schema is not None:
            last_user = next((m.text for m in reversed(request.messages) if m.role == "user"), "")
            text = json.dumps(schema_instance(schema, conversation_digest(request), last_user), ensure_ascii=False)
        else:
            text = " ".join(["token"] * tokens)
        return ModelResponse(model=provider.config.model, text=text, finish_reason="stop", usage=usage)
