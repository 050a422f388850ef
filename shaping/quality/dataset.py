"""A pipeline's written output, read back for checks, samples and reports."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shaping.errors import ShapingError
from shaping.manifest import Manifest, read_manifest
from shaping.output import OutputPaths


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ShapingError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
    return rows


def last_turn(sample: dict[str, Any], role: str) -> str:
    for message in reversed(sample.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == role:
            return str(message.get("content") or "")
    return ""


@dataclass
class Dataset:
    name: str
    paths: OutputPaths
    samples: list[dict[str, Any]]
    errors: list[dict[str, Any]] = field(default_factory=list)
    manifest: Manifest | None = None

    @classmethod
    def load(cls, name: str, paths: OutputPaths) -> "Dataset":
        if not paths.samples.exists():
            raise ShapingError(f"pipeline '{name}' has no output yet ({paths.samples}); "
                               f"run it first: isf pipeline run {name}")
        errors = _read_jsonl(paths.errors) if paths.errors.exists() else []
        try:
            manifest = read_manifest(paths.manifest) if paths.manifest.exists() else None
        except ValueError:
            manifest = None
        return cls(name, paths, _read_jsonl(paths.samples), errors, manifest)

    @property
    def responses(self) -> list[str]:
        return [last_turn(s, "assistant") for s in self.samples]

    @property
    def prompts(self) -> list[str]:
        return [last_turn(s, "user") for s in self.samples]
