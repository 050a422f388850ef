"""Where prompts come from: templates with placeholders (TOML), and curated collections.

Template file (`templates/*.toml`), one category per file:

    category = "debugging"
    description = "Find and fix the bug in a given snippet."
    languages = ["Python", "Go"]              # optional: the languages it is drawn for (default:
                                              # the generator's); ["any"]: tied to no language
    [values]                                  # placeholders for every template in the file
    symptom = ["hangs", "returns None"]
    snippet = { Python = ["..."], Go = ["..."] }   # per language: usable only for those
    [[templates]]
    name = "find-the-bug"
    text = "This {language} code {symptom}:\n{snippet}\nFind the bug and fix it."

`{language}` is filled with the language being drawn. A template applies to a language when
every placeholder has values for it: a plain list applies to every language, a table only to
the languages it names (a key matches the language's name or its lower-case form). Literal
braces in a template's text are doubled (`{{`); values are inserted as they are.

Curated collections are a folder of `.jsonl` files (`{"prompt", "category", "language"?, "id"?}`
per line) and `.txt` files (one prompt per blank-line-separated paragraph, the category being
the file's name).
"""

from __future__ import annotations

import json
import random
import string
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shaping.errors import ConfigError, describe_validation_error

ANY_LANGUAGE = "any"

Values = dict[str, list[str] | dict[str, list[str]]]


def _values_for(values: list[str] | dict[str, list[str]] | None, language: str) -> list[str] | None:
    if isinstance(values, dict):
        return values.get(language) or values.get(language.lower())
    return values


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    text: str = Field(min_length=1)
    values: Values = Field(default_factory=dict)

    def placeholders(self) -> list[str]:
        return [field for _, field, _, _ in string.Formatter().parse(self.text) if field]

    def choices(self, field: str, language: str, shared: Values) -> list[str] | None:
        """The values `field` may take for `language` (the template's own, else the file's)."""
        return _values_for(self.values.get(field, shared.get(field)), language)

    def applies_to(self, language: str, shared: Values) -> bool:
        return all(self.choices(field, language, shared) for field in self.placeholders() if field != "language")

    def fill(self, language: str, rng: random.Random, shared: Values) -> str | None:
        """The text with every placeholder drawn for `language`; None when it does not apply."""
        chosen = {"language": language}
        for field in self.placeholders():
            if field in chosen:
                continue
            values = self.choices(field, language, shared)
            if not values:
                return None
            chosen[field] = rng.choice(values)
        return self.text.format(**chosen)


class TemplateFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    category: str = Field(min_length=1)
    description: str = ""
    languages: list[str] | None = Field(default=None, min_length=1)
    values: Values = Field(default_factory=dict)
    templates: list[Template] = Field(min_length=1)

    @model_validator(mode="after")
    def _placeholders_have_values(self) -> "TemplateFile":
        for i, template in enumerate(self.templates):
            for field in template.placeholders():
                if field == "language":
                    if self.languages == [ANY_LANGUAGE]:
                        raise ValueError(f"templates[{i}] uses {{language}} but the file is tied to no "
                                         f"language (languages = [\"{ANY_LANGUAGE}\"])")
                elif field not in template.values and field not in self.values:
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
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def load_templates(folder: Path) -> list[TemplateFile]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: template folder not found")
    files = []
    for path in sorted(folder.glob("*.toml")):
        try:
            files.append(TemplateFile.model_validate(_toml(path)))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, str(path))) from exc
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
                    raise ConfigError(f"{path}: line {number}: invalid JSON: {exc.msg}") from exc
                except ValidationError as exc:
                    raise ConfigError(describe_validation_error(exc, f"{path}: line {number}")) from exc
        elif path.suffix == ".txt":
            for paragraph in path.read_text(encoding="utf-8").split("\n\n"):
                if paragraph.strip():
                    prompts.append(CuratedPrompt(prompt=paragraph.strip(), category=path.stem))
    return prompts
