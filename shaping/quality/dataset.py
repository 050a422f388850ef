"""A pipeline's written output, read back for checks, samples and reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from shaping.errors import ShapingError
from shaping.manifest import Manifest, read_manifest
from shaping.output import OutputPaths
from shaping.samples import decode_annotated
from shaping.quality.turns import Turn, analyse, message_text, response_text


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ShapingError(f"{path}: line {number}: invalid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise ShapingError(f"{path}: line {number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
    return rows


def _last(sample: dict[str, Any], role: str) -> dict[str, Any] | None:
    messages = sample.get("messages")
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == role:
            return message
    return None


def last_turn(sample: dict[str, Any], role: str) -> str:
    """The text of the sample's last turn of this role (content given as a string, as a list of
    parts or as None); for the assistant, without inline `<think>` reasoning, and its tool calls
    where it has no text."""
    message = _last(sample, role)
    if message is None:
        return ""
    return response_text(message) if role == "assistant" else message_text(message)


def _error_fields(line: dict[str, Any]) -> dict[str, Any]:
    """An error line's fields: `{"__ERROR__": {id, error, message, ...}}`, or those fields beside
    `"__ERROR__": true` (as earlier versions wrote)."""
    inner = line.get("__ERROR__")
    return inner if isinstance(inner, dict) else line


def read_errors(path: Path) -> list[dict[str, Any]]:
    """The error records of a file, each as its fields."""
    return [_error_fields(e) for e in _read_jsonl(path)]


@dataclass
class Dataset:
    name: str
    paths: OutputPaths
    samples: list[dict[str, Any]]
    errors: list[dict[str, Any]] = field(default_factory=list)
    manifest: Manifest | None = None
    #: what dedupe would remove, by its settings (see `dedupe`)
    _dedupe: dict = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, name: str, paths: OutputPaths) -> "Dataset":
        if not paths.samples.exists():
            raise ShapingError(f"pipeline '{name}' has no output yet ({paths.samples}); "
                               f"run it first: isf pipeline run {name}")
        errors = read_errors(paths.errors) if paths.errors.exists() else []
        try:
            manifest = read_manifest(paths.manifest) if paths.manifest.exists() else None
        except ValueError:
            manifest = None
        samples = [decode_annotated(row) for row in _read_jsonl(paths.samples)]
        return cls(name, paths, samples, errors, manifest)

    def dedupe(self, settings: Any) -> Any:
        """What dedupe with these `DedupeSettings` would remove (shaping.quality.dedupe), worked
        out once: validate's check and the report share it."""
        if settings not in self._dedupe:
            from shaping.quality.dedupe import find_duplicates, texts

            self._dedupe[settings] = find_duplicates(texts(self.samples), settings)
        return self._dedupe[settings]

    @cached_property
    def turns(self) -> list[Turn]:
        """Every assistant turn of every sample (see shaping.quality.turns)."""
        return [turn for sample in self.samples for turn in analyse(sample)]

    @property
    def responses(self) -> list[str]:
        return [last_turn(s, "assistant") for s in self.samples]

    @property
    def prompts(self) -> list[str]:
        return [last_turn(s, "user") for s in self.samples]
