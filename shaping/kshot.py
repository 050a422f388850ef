"""K-shot examples: user/assistant turns placed before the real prompt, from JSON or text.

JSON (`load_json`):

    {"description": "...", "format": "chat",
     "configurations": [{"name": "short-moral", "description": "...", "k_shot_count": 2,
                         "messages": [{"role": "user", "content": "..."},
                                      {"role": "assistant", "content": "..."}, ...],
                         "metadata": {}}],
     "usage_notes": "..."}

Text (`load_text`), one configuration named after the file:

    PROMPT:
    Words: fox, grapes
    RESPONSE:
    A fox could not reach the grapes...

Every problem is a `KShotError` naming the file and what was expected, raised before any
request is sent: turns must alternate user/assistant, start on user and end on assistant,
`k_shot_count` must equal the number of pairs, content must not be empty.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shaping.errors import ShapingError, describe_validation_error


class KShotError(ShapingError):
    pass


class KShotMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: str

    @field_validator("content")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content is empty")
        return value


class KShotConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    k_shot_count: int = Field(ge=1)
    messages: list[KShotMessage] = Field(min_length=2)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _pairs(self) -> "KShotConfig":
        for i, message in enumerate(self.messages):
            expected = "user" if i % 2 == 0 else "assistant"
            if message.role != expected:
                raise ValueError(f"messages[{i}] is {message.role}; turns must alternate user, assistant, "
                                 f"starting on user")
        if len(self.messages) % 2:
            raise ValueError("messages end on a user turn; the last example needs its assistant turn")
        if self.k_shot_count != len(self.messages) // 2:
            raise ValueError(f"k_shot_count is {self.k_shot_count} but messages hold "
                             f"{len(self.messages) // 2} user/assistant pairs")
        return self

    def pairs(self, count: int | None = None) -> list[dict[str, str]]:
        """The first `count` example pairs (all by default) as message dicts."""
        available = self.k_shot_count
        if count is not None and not 1 <= count <= available:
            raise KShotError(f"k-shot configuration '{self.name}': count {count} asked for, "
                             f"{available} example pair(s) available")
        n = available if count is None else count
        return [m.model_dump() for m in self.messages[: 2 * n]]


class KShotSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    format: str = "chat"
    configurations: list[KShotConfig] = Field(min_length=1)
    usage_notes: str = ""
    path: str = Field(default="", exclude=True)

    @model_validator(mode="after")
    def _unique_names(self) -> "KShotSource":
        names = [c.name for c in self.configurations]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"configuration names must be unique; repeated: {', '.join(duplicates)}")
        return self

    def get(self, name: str | None = None) -> KShotConfig:
        """The configuration `name`, or the only one when no name is given."""
        known = ", ".join(c.name for c in self.configurations)
        if name is None:
            if len(self.configurations) == 1:
                return self.configurations[0]
            raise KShotError(f"{self.path}: {len(self.configurations)} configurations ({known}); "
                             f"choose one (config=... or --k-shot-config-name)")
        for config in self.configurations:
            if config.name == name:
                return config
        raise KShotError(f"{self.path}: no configuration '{name}' (known: {known})")


def _validate(data: Any, path: Path | str) -> KShotSource:
    try:
        source = KShotSource.model_validate(data)
    except ValidationError as exc:
        raise KShotError(describe_validation_error(exc, str(path))) from exc
    source.path = str(path)
    return source


def _read(path: Path, shown: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KShotError(f"{shown}: k-shot file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KShotError(f"{shown}: cannot read k-shot file: {exc}") from exc


def load_json(path: Path | str, shown: str | None = None) -> KShotSource:
    """Load a JSON k-shot file; `shown` is how errors name it (default: the path)."""
    path = Path(path)
    shown = shown or str(path)
    text = _read(path, shown)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KShotError(f"{shown}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    return _validate(data, shown)


MARKER = re.compile(r"^(PROMPT|RESPONSE):\s?(.*)$")


def load_text(path: Path | str, shown: str | None = None) -> KShotSource:
    """PROMPT:/RESPONSE: blocks, any number, content on the marker's line or the lines after."""
    path = Path(path)
    shown = shown or str(path)
    messages: list[dict[str, Any]] = []
    for number, line in enumerate(_read(path, shown).splitlines(), start=1):
        match = MARKER.match(line)
        if match:
            role = "user" if match.group(1) == "PROMPT" else "assistant"
            expected = "user" if len(messages) % 2 == 0 else "assistant"
            if role != expected:
                want = "PROMPT:" if expected == "user" else "RESPONSE:"
                raise KShotError(f"{shown}: line {number}: {match.group(1)}: where {want} was expected")
            messages.append({"role": role, "content": match.group(2), "line": number})
        elif messages:
            messages[-1]["content"] += "\n" + line
        elif line.strip():
            raise KShotError(f"{shown}: line {number}: text before the first PROMPT: marker")
    for m in messages:
        m["content"] = m["content"].strip("\n")
        if not m["content"].strip():
            marker = "PROMPT:" if m["role"] == "user" else "RESPONSE:"
            raise KShotError(f"{shown}: line {m['line']}: {marker} block is empty")
    if not messages:
        raise KShotError(f"{shown}: no PROMPT:/RESPONSE: blocks")
    if len(messages) % 2:
        raise KShotError(f"{shown}: line {messages[-1]['line']}: PROMPT: has no RESPONSE:")
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    config = {"name": path.stem, "k_shot_count": len(turns) // 2, "messages": turns}
    return _validate({"format": "text", "configurations": [config]}, shown)


def load(path: Path | str, shown: str | None = None) -> KShotSource:
    """JSON for `.json` files, PROMPT:/RESPONSE: text for anything else."""
    loader = load_json if Path(path).suffix.lower() == ".json" else load_text
    return loader(path, shown)
