"""Reasoning models and the params they take, so a pipeline written with `max_tokens` (and a
temperature) runs unchanged when shaping.toml points it at one.

    OpenAI o1/o3/o4 and gpt-5 (not gpt-5-chat): `max_tokens` is sent as `max_completion_tokens`;
        `reasoning_effort` is passed on; temperature, top_p, penalties, logprobs and `stop`,
        which these models refuse, are not sent.
    Anthropic: API version 2026-10-21 (the default) takes no sampling params: temperature,
        top_k and top_p are not sent (with `anthropic_version = "2023-06-01"` they are, except
        with thinking). Extended thinking (`thinking = {type = "enabled", budget_tokens = N}`, or
        `reasoning_effort` minimal/low/medium/high): `max_tokens` is the answer's budget and the
        thinking budget is added to it (the API counts both in `max_tokens`).

What is sent is what the step records, so the translation is visible in annotated output.
"""

from __future__ import annotations

import functools
import re
from typing import Any

#: OpenAI model names (after an optional "org/" prefix) that are reasoning models
OPENAI_REASONING = re.compile(r"^(?:[\w.-]+/)?(?:o1|o3|o4|gpt-5)(?!-chat)(?:[-.]|$)")
#: what those models refuse
OPENAI_REFUSED = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "logprobs",
                  "top_logprobs", "logit_bias", "stop")

#: Anthropic: reasoning_effort -> thinking budget (tokens)
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}
ANTHROPIC_THINKING_REFUSED = ("temperature", "top_k", "top_p")


@functools.cache
def is_openai_reasoning(model: str) -> bool:
    """Asked for every request: a model's answer is kept (a run has a handful of models)."""
    return bool(OPENAI_REASONING.match(model))


def openai_params(model: str, params: dict[str, Any]) -> dict[str, Any]:
    if not is_openai_reasoning(model):
        return params
    out = {k: v for k, v in params.items() if k not in OPENAI_REFUSED}
    if "max_tokens" in out:
        limit = out.pop("max_tokens")
        out.setdefault("max_completion_tokens", limit)
    return out


def anthropic_params(params: dict[str, Any], default_max_tokens: int, sampling: bool = False) -> dict[str, Any]:
    """Params with `thinking` set up (from `thinking` or `reasoning_effort`), `max_tokens` set.
    `sampling=False` (API version 2026-10-21 and later, which refuse them even at their
    defaults): temperature, top_k and top_p are not sent."""
    out = dict(params)
    if not sampling:
        for key in ANTHROPIC_THINKING_REFUSED:
            out.pop(key, None)
    effort = out.pop("reasoning_effort", None)
    thinking = out.get("thinking")
    if thinking is None and effort is not None:
        if effort not in THINKING_BUDGETS:
            raise ValueError(f"reasoning_effort must be one of {', '.join(THINKING_BUDGETS)}, got {effort!r}")
        thinking = out["thinking"] = {"type": "enabled", "budget_tokens": THINKING_BUDGETS[effort]}
    answer_tokens = out.get("max_tokens") or default_max_tokens
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise ValueError(f"thinking.budget_tokens must be an integer of at least 1024, got {budget!r}")
        for key in ANTHROPIC_THINKING_REFUSED:
            out.pop(key, None)
        answer_tokens += budget
    out["max_tokens"] = answer_tokens
    return out
