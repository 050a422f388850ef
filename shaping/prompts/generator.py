"""`PromptGenerator`: a deterministic mix of curated and templated prompts, by weight.

    generator = PromptGenerator.from_file("pipelines/prompts/coding.toml")
    records = generator.sample(500, existing_weight=0.5, seed=7)
    # [{"id", "prompt", "category", "language", "source"}, ...]

Each draw takes a curated prompt with probability `existing_weight`, else a templated one;
languages and categories are drawn by their weights; no prompt repeats until both pools are
exhausted. The same seed gives the same records.

Generator file (TOML), paths relative to it:

    templates = "templates"
    curated = "curated"
    existing_weight = 0.5
    [languages]          # weight per language; {language} in templates takes the name
    Python = 0.35
    [categories]         # optional weight per category (default 1)
    debugging = 2.0
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shaping.errors import ConfigError, describe_validation_error
from shaping.prompts.sources import CuratedPrompt, Template, TemplateFile, _toml, load_curated, load_templates

ANY_LANGUAGE = "any"
TRIES = 40


class PromptRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str
    category: str
    language: str
    source: Literal["curated", "template"]


class GeneratorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    templates: str | None = None
    curated: str | None = None
    existing_weight: float = Field(default=0.5, ge=0, le=1)
    languages: dict[str, float] = Field(default_factory=lambda: {ANY_LANGUAGE: 1.0})
    categories: dict[str, float] = Field(default_factory=dict)


def _record(prompt: str, category: str, language: str, source: str, given_id: str | None = None) -> PromptRecord:
    digest = hashlib.sha1(prompt.encode()).hexdigest()[:12]
    return PromptRecord(id=given_id or f"{source[0]}-{digest}", prompt=prompt, category=category,
                        language=language, source=source)


class PromptGenerator:
    def __init__(self, templates: list[TemplateFile], curated: list[CuratedPrompt],
                 languages: dict[str, float] | None = None, categories: dict[str, float] | None = None,
                 existing_weight: float = 0.5) -> None:
        self.templates: dict[str, list[tuple[Template, TemplateFile]]] = defaultdict(list)
        for file in templates:
            for template in file.templates:
                self.templates[file.category].append((template, file))
        self.curated: dict[str, list[CuratedPrompt]] = defaultdict(list)
        for prompt in curated:
            self.curated[prompt.category].append(prompt)
        self.languages = languages or {ANY_LANGUAGE: 1.0}
        self.categories = categories or {}
        self.existing_weight = existing_weight
        if any(w < 0 for w in [*self.languages.values(), *self.categories.values()]):
            raise ConfigError("prompt generator: weights must not be negative")

    @classmethod
    def from_file(cls, path: Path | str) -> "PromptGenerator":
        path = Path(path)
        try:
            config = GeneratorFile.model_validate(_toml(path))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, str(path))) from None
        templates = load_templates(path.parent / config.templates) if config.templates else []
        curated = load_curated(path.parent / config.curated) if config.curated else []
        if not templates and not curated:
            raise ConfigError(f"{path}: names neither templates nor curated prompts")
        return cls(templates, curated, config.languages, config.categories, config.existing_weight)

    def weight(self, category: str) -> float:
        return self.categories.get(category, 1.0)

    def sample(self, count: int, existing_weight: float | None = None, seed: int = 0) -> list[PromptRecord]:
        """`count` records, deterministic for `seed`; no repeats until every pool is used up."""
        share = self.existing_weight if existing_weight is None else existing_weight
        rng = random.Random(seed)
        seen: set[str] = set()
        unused = {c: rng.sample(prompts, len(prompts)) for c, prompts in sorted(self.curated.items())}
        exhausted: set[tuple[str, str]] = set()
        records: list[PromptRecord] = []
        while len(records) < count:
            curated_first = rng.random() < share
            order = (self._curated, self._templated) if curated_first else (self._templated, self._curated)
            record = order[0](rng, seen, unused, exhausted) or order[1](rng, seen, unused, exhausted)
            if record is None:  # every pool is used up: start over, repeats from here on
                if not seen:
                    raise ConfigError("prompt generator: no prompts can be drawn (no templates or curated prompts "
                                      "for the weighted categories and languages)")
                seen.clear()
                exhausted.clear()
                unused = {c: rng.sample(prompts, len(prompts)) for c, prompts in sorted(self.curated.items())}
                continue
            seen.add(record.prompt)
            records.append(record)
        return records

    def _curated(self, rng, seen, unused, exhausted) -> PromptRecord | None:
        categories = [c for c, left in unused.items() if left and self.weight(c) > 0]
        while categories:
            category = rng.choices(categories, weights=[self.weight(c) for c in categories])[0]
            left = unused[category]
            while left:
                prompt = left.pop()
                if prompt.prompt not in seen:
                    return _record(prompt.prompt, category, prompt.language or ANY_LANGUAGE, "curated", prompt.id)
            categories.remove(category)
        return None

    def _templated(self, rng, seen, unused, exhausted) -> PromptRecord | None:
        pairs = [(c, lang) for c in sorted(self.templates) for lang in self.languages
                 if (c, lang) not in exhausted and self.weight(c) > 0 and self.languages[lang] > 0]
        while pairs:
            languages = sorted({lang for _, lang in pairs})
            language = rng.choices(languages, weights=[self.languages[x] for x in languages])[0]
            categories = [c for c, lang in pairs if lang == language]
            category = rng.choices(categories, weights=[self.weight(c) for c in categories])[0]
            for _ in range(TRIES):
                template, file = rng.choice(self.templates[category])
                text = self._fill(template, file, language, rng)
                if text is not None and text not in seen:
                    return _record(text, category, language, "template")
            exhausted.add((category, language))
            pairs.remove((category, language))
        return None

    @staticmethod
    def _fill(template: Template, file: TemplateFile, language: str, rng: random.Random) -> str | None:
        chosen = {"language": language}
        for field in template.placeholders():
            if field in chosen:
                continue
            values = template.values.get(field, file.values.get(field))
            if isinstance(values, dict):
                values = values.get(language) or values.get(language.lower())
            if not values:
                return None  # no values for this language: the template does not apply
            chosen[field] = rng.choice(values)
        return template.text.format(**chosen)
