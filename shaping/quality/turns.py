"""What each assistant turn of a data set is: empty, cut off, refused, with reasoning, calling
tools. Read from the turns themselves and, in annotated output, from the step whose answer
became the turn (its `finish_reason`, `refusal`). Minimal output records no steps, so there
whether a turn was cut off or refused cannot be known.

Everything here reads output as written, which may be hand-made or from an older version:
content may be a string, a list of parts or None, and any field may be missing or malformed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

#: a `<think>...</think>` block inline in the content; one left open (cut off while thinking)
#: runs to the end
THINK = re.compile(r"<think>(.*?)(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
REFUSAL_REASONS = ("refusal", "content_filter")


def content_text(content: Any) -> str:
    """The text of a message's content: the string, the text parts of a list joined, "" for None."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "".join(texts)
    return str(content)


def message_text(message: Any) -> str:
    return content_text(message.get("content")) if isinstance(message, dict) else ""


def split_think(text: str) -> tuple[str, str]:
    """(the answer without inline `<think>` blocks, the reasoning inside them), both stripped."""
    reasoning = "\n".join(m.group(1).strip() for m in THINK.finditer(text)).strip()
    return THINK.sub("", text).strip(), reasoning


def tool_calls_of(message_or_step: Any) -> list[dict]:
    calls = message_or_step.get("tool_calls") if isinstance(message_or_step, dict) else None
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def _call_sig(call: dict) -> tuple[str, str]:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    return str(function.get("name")), str(function.get("arguments"))


def calls_text(calls: list[dict]) -> str:
    """Tool calls as text, `name(arguments)` a line: what a tool-call-only turn says."""
    return "\n".join(f"{name}({arguments})" for name, arguments in map(_call_sig, calls))


def response_text(message: Any) -> str:
    """What an assistant turn answers, for the text checks (error-like, duplicates, lengths): its
    text without inline reasoning, or its tool calls when it has no text."""
    answer, _ = split_think(message_text(message))
    return answer or calls_text(tool_calls_of(message))


@dataclass(frozen=True)
class Turn:
    """One assistant turn. `truncated` and `refused` are None where they cannot be known (the
    sample has no steps: minimal output)."""

    sample_id: str
    #: its index in the sample's messages
    position: int
    empty: bool
    tool_calls: int
    #: "field" (reasoning_content), "inline" (a <think> block in the content), or None
    reasoning: str | None
    truncated: bool | None
    refused: bool | None
    #: the index of the step whose answer became this turn, where one was found
    step: int | None = None
    #: why it was cut off or refused, from that step
    detail: str = ""

    def where(self) -> str:
        return f"sample {self.sample_id}: message {self.position} (assistant)"


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _is_refusal(step: dict) -> bool:
    return step.get("refusal") is not None or step.get("finish_reason") in REFUSAL_REASONS


def _same_calls(turn_calls: list[dict], step_calls: list[dict]) -> bool:
    if not turn_calls or not step_calls:
        return False
    ids = [c.get("id") for c in turn_calls]
    if all(ids) and ids == [c.get("id") for c in step_calls]:
        return True
    return [_call_sig(c) for c in turn_calls] == [_call_sig(c) for c in step_calls]


def find_step(message: dict, steps: list[dict]) -> dict | None:
    """The step whose answer became this assistant turn: the same tool calls, the same text,
    the same reasoning; else a step whose text (or refusal) the turn contains; for an empty turn,
    an empty answer. The latest such step wins (repairs and later requests come last)."""
    candidates = [s for s in reversed(steps) if isinstance(s, dict) and not s.get("error")]
    text = content_text(message.get("content")).strip()
    calls = tool_calls_of(message)
    reasoning = _str(message.get("reasoning_content"))
    for step in candidates:
        if _same_calls(calls, tool_calls_of(step)):
            return step
        if text and text == _str(step.get("text")):
            return step
        if reasoning and reasoning == _str(step.get("reasoning")):
            return step
    if text:
        for step in candidates:
            said = _str(step.get("text")) or _str(step.get("refusal"))
            if said and said in text:
                return step
    elif not calls:
        for step in candidates:
            if not _str(step.get("text")) and not tool_calls_of(step):
                return step
    return None


def _detail(step: dict) -> str:
    usage = step.get("usage") if isinstance(step.get("usage"), dict) else {}
    finish = step.get("finish_reason")
    where = f"step {step.get('index')}"
    if finish == "length":
        tokens = usage.get("completion_tokens")
        return f"{where} ended with finish_reason length{f' after {tokens} tokens' if tokens else ''}"
    if finish == "content_filter":
        return f"{where} was stopped by the provider's content filter"
    said = _str(step.get("refusal")) or _str(step.get("text"))
    return f"{where} refused{': ' + repr(said[:80]) if said else ''}"


def analyse(sample: dict) -> list[Turn]:
    """The assistant turns of one sample."""
    sample_id = str(sample.get("id"))
    messages = sample.get("messages")
    if not isinstance(messages, list):
        return []
    steps = sample.get("steps")
    known = isinstance(steps, list)  # annotated output writes `steps`, if only []
    steps = [s for s in steps if isinstance(s, dict)] if known else []
    refusals = [s for s in steps if _is_refusal(s) and not s.get("error")]
    turns = []
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") != "assistant":
            continue
        full = message_text(message)
        answer, inline = split_think(full)
        calls = tool_calls_of(message)
        reasoning = "field" if _str(message.get("reasoning_content")) else "inline" if inline else None
        truncated = refused = None
        step, detail = None, ""
        if known:
            source = find_step(message, steps)
            truncated = source is not None and source.get("finish_reason") == "length"
            refused = source is not None and _is_refusal(source)
            if not refused:  # a refused answer's words elsewhere in the turn
                source_of_refusal = next((s for s in refusals if any(
                    said and said in full for said in (_str(s.get("text")), _str(s.get("refusal"))))), None)
                if source_of_refusal is not None:
                    refused, source = True, source_of_refusal
            if source is not None:
                step = source.get("index") if isinstance(source.get("index"), int) else None
                if truncated or refused:
                    detail = _detail(source)
        turns.append(Turn(sample_id, position, empty=not answer and not calls, tool_calls=len(calls),
                          reasoning=reasoning, truncated=truncated, refused=refused, step=step, detail=detail))
    return turns
