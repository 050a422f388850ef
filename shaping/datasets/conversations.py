"""Conversations from local JSONL in the shapes public chat data sets use; the first user turn
becomes the prompt.

Accepted per line: `{"messages": [{"role", "content"}]}` (OpenAI style), `{"conversation":
[...]}` (LMSYS style), `{"conversations": [{"from": "human"|"gpt"|"system", "value"}]}`
(ShareGPT style), or `{"prompt": "..."}`. A line with no user turn keeps `prompt = None`, so
the pipeline can record it as an error rather than drop it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from shaping.errors import DependencyError

SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
            "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system"}


class ConversationRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str | None
    turns: int
    source_line: int


def first_user_turn(row: dict[str, Any]) -> str | None:
    if isinstance(row.get("prompt"), str):
        return row["prompt"]
    turns = row.get("messages") or row.get("conversation") or row.get("conversations") or []
    for turn in turns if isinstance(turns, list) else []:
        if not isinstance(turn, dict):
            continue
        role = SPEAKERS.get(str(turn.get("role", turn.get("from", ""))).lower())
        content = turn.get("content", turn.get("value"))
        if role == "user" and isinstance(content, str) and content.strip():
            return content.strip()
    return None


def load_conversations(path: Path, limit: int | None = None) -> list[ConversationRecord]:
    records = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DependencyError(f"{path}: cannot read conversations: {exc.strerror}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DependencyError(f"{path}: line {number}: invalid JSON at column {exc.colno}: {exc.msg}") from exc
        if not isinstance(row, dict):
            raise DependencyError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
        turns = row.get("messages") or row.get("conversation") or row.get("conversations") or []
        records.append(ConversationRecord(id=str(row.get("id", f"line-{number}")), prompt=first_user_turn(row),
                                          turns=len(turns) if isinstance(turns, list) else 0, source_line=number))
        if limit is not None and len(records) >= limit:
            break
    return records
