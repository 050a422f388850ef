"""Where prompts come from: templates with placeholders (TOML), and curated collections.

Template file (`templates/*.toml`), one category per file:

    category = "debugging"
    [values]                                  # placeholders for every template in the file
    error = ["KeyError: 'id'", "TypeError: ..."]
    snippet = { python = ["..."], go = ["..."] }   # per language: usable only for those
    [[templates]]
    name = "error-message"
    text = "My {language} script fails with `{error}`. What does it mean?"

`{language}` is filled with the language being drawn. Curated collections are a folder of
`.jsonl` files (`{"prompt", "category", "language"?, "id"?}` per line) and `.txt` files (one
prompt per blank-line-separated paragraph, the category being the file's name).
"""

from __future__ import annotations

import json
import string
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shaping.errors import ConfigError, describe_validation_error

Values = dict[str, list[str] | dict[str, list[str]]]


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    text: str = Field(min_length=1)
    values: Values = Field(default_factory=dict)

    def placeholders(self) -> list[str]:
        return [field for _, field, _, _ in string.Formatter().parse(self.text) if field]


class TemplateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str = Field(min_length=1)
    description: str = ""
    values: Values = Field(default_factory=dict)
    templates: list[Template] = Field(min_length=1)

    @model_validator(mode="after")
    def _placeholders_have_values(self) -> "TemplateFile":
        for i, template in enumerate(self.templates):
            for field in template.placeholders():
                if field != "language" and field not in template.values and field not in self.values:
                    raise ValueError(f"templates[{i}] uses {{{field}}} but no values are given for it")
        return self


class CuratedPrompt(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    category: str = Field(min_length=1)
    language: str | None = None
    id: str | None = None


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def load_templates(folder: Path) -> list[TemplateFile]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: template folder not found")
    files = []
    for path in sorted(folder.glob("*.toml")):
        try:
            files.append(TemplateFile.model_validate(_toml(path)))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, str(path))) from None
    return files


def load_curated(folder: Path) -> list[CuratedPrompt]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: curated prompt folder not found")
    prompts: list[CuratedPrompt] = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".jsonl":
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    prompts.append(CuratedPrompt.model_validate(json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}: line {number}: invalid JSON: {exc.msg}") from None
                except ValidationError as exc:
                    raise ConfigError(describe_validation_error(exc, f"{path}: line {number}")) from None
        elif path.suffix == ".txt":
            for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
                if paragraph.strip():
                    prompts.append(CuratedPrompt(prompt=paragraph.strip(), category=path.stem))
    return prompts
