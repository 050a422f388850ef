"""`PromptGenerator`: a deterministic mix of curated and templated prompts, by weight.

    generator = PromptGenerator.from_file("pipelines/prompts/coding.toml")
    records = generator.sample(500, existing_weight=0.5, seed=7)
    # [{"id", "prompt", "category", "area", "language", "source"}, ...]

Generator file (TOML), paths relative to it:

    templates = "templates"
    curated = "curated"
    existing_weight = 0.5
    [languages]          # weight per language; {language} in templates takes the name
    Python = 0.35
    [areas.debugging]    # optional: areas and their share of the whole mix
    weight = 0.20
    description = "Finding and fixing bugs"
    categories = ["debugging", "debugging_errors", "debugging_trace"]
    [categories]         # optional weight per category (default 1); with areas: within its area
    debugging = 2.0

How a draw goes:
- With `[areas]`, every category belongs to exactly one area and the weights are shares of the
  whole mix: a category's target is its area's weight (areas normalised to sum to 1) times its
  weight within the area. Each draw picks a category by its target; a category that has curated
  prompts left gives one with probability `existing_weight`, else a templated one (and the other
  source when one runs dry). The realised shares match the targets at any count: a category whose
  prompts are all used up starts repeating its own, the others go on without repeats.
- Without areas, each draw takes a curated prompt with probability `existing_weight`, else a
  templated one; categories are drawn by weight within the source; no prompt repeats until both
  pools are used up.
- A templated prompt's language is drawn by the `[languages]` weights among the languages its
  category applies to (a template file's own `languages`, else all of them) for which one of its
  templates has values. Languages a template file names that `[languages]` does not weigh (such
  as "any" or "SQL") are drawn evenly.
A repeated prompt gets an id of its own, its first's with `-r2`, `-r3`... (the repeat's number),
so the records' ids stay unique at any count.
The same seed gives the same records.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shaping.errors import ConfigError, describe_validation_error
from shaping.prompts.sources import (ANY_LANGUAGE, CuratedPrompt, Template, TemplateFile, _toml, load_curated,
                                     load_templates)

TRIES = 40  # random fills of a (category, language) before it counts as used up


class PromptRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: str
    category: str
    area: str | None = None
    language: str
    source: Literal["curated", "template"]


class Area(BaseModel):
    """A group of categories with its share of the whole mix."""

    model_config = ConfigDict(extra="forbid")

    weight: float = Field(ge=0)
    description: str = ""
    categories: list[str] = Field(min_length=1)


class GeneratorFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    templates: str | None = None
    curated: str | None = None
    existing_weight: float = Field(default=0.5, ge=0, le=1)
    languages: dict[str, float] = Field(default_factory=lambda: {ANY_LANGUAGE: 1.0})
    areas: dict[str, Area] = Field(default_factory=dict)
    categories: dict[str, float] = Field(default_factory=dict)


@dataclass
class _Pool:
    """One category's state during a draw: what was drawn, what is left."""

    curated: list[CuratedPrompt]
    unused: list[CuratedPrompt] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    exhausted: set[str] = field(default_factory=set)  # languages with no unseen templated prompt

    def reset(self, rng: random.Random) -> None:
        self.seen.clear()
        self.exhausted.clear()
        self.unused = rng.sample(self.curated, len(self.curated))


def _record(prompt: str, category: str, area: str | None, language: str, source: str,
            given_id: str | None = None) -> PromptRecord:
    digest = hashlib.sha1(prompt.encode()).hexdigest()[:12]
    return PromptRecord(id=given_id or f"{source[0]}-{digest}", prompt=prompt, category=category, area=area,
                        language=language, source=source)


def _unique_ids(records: list[PromptRecord]) -> list[PromptRecord]:
    """`records` with each repeat of a prompt given an id of its own: its first's with `-r2`,
    `-r3`... (the next number still free), so a run's record ids stay unique at any count."""
    used = {r.id for r in records}
    times: dict[str, int] = {}
    seen: set[str] = set()
    out = []
    for record in records:
        if record.id in seen:
            n = times.get(record.id, 1)
            while (candidate := f"{record.id}-r{n + 1}") in used:
                n += 1
            times[record.id] = n + 1
            used.add(candidate)
            record = record.model_copy(update={"id": candidate})
        else:
            seen.add(record.id)
        out.append(record)
    return out


def _pick(rng: random.Random, items: list[str], weight: Callable[[str], float]) -> str:
    return rng.choices(items, weights=[weight(x) for x in items])[0]


class PromptGenerator:
    def __init__(self, templates: list[TemplateFile], curated: list[CuratedPrompt],
                 languages: dict[str, float] | None = None, categories: dict[str, float] | None = None,
                 existing_weight: float = 0.5, areas: Mapping[str, Area | dict] | None = None) -> None:
        self.languages = languages or {ANY_LANGUAGE: 1.0}
        self.categories = categories or {}
        self.existing_weight = existing_weight
        if any(w < 0 for w in [*self.languages.values(), *self.categories.values()]):
            raise ConfigError("prompt generator: weights must not be negative")
        self.templates: dict[str, list[tuple[Template, TemplateFile]]] = defaultdict(list)
        #: category -> language -> the templates that apply to it; category -> language -> weight
        self._candidates: dict[str, dict[str, list[tuple[Template, TemplateFile]]]] = defaultdict(dict)
        self._language_weights: dict[str, dict[str, float]] = defaultdict(dict)
        for file in templates:
            weights = self._file_languages(file)
            for template in file.templates:
                self.templates[file.category].append((template, file))
                for language, weight in weights.items():
                    if weight > 0 and template.applies_to(language, file.values):
                        self._candidates[file.category].setdefault(language, []).append((template, file))
                        self._language_weights[file.category][language] = weight
        self.curated: dict[str, list[CuratedPrompt]] = defaultdict(list)
        for prompt in curated:
            self.curated[prompt.category].append(prompt)
        self.areas = {name: area if isinstance(area, Area) else Area.model_validate(area)
                      for name, area in (areas or {}).items()}
        self._area_of = {category: name for name, area in self.areas.items() for category in area.categories}
        self._check_areas()

    @classmethod
    def from_file(cls, path: Path | str) -> "PromptGenerator":
        path = Path(path)
        try:
            config = GeneratorFile.model_validate(_toml(path))
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, str(path))) from exc
        templates = load_templates(path.parent / config.templates) if config.templates else []
        curated = load_curated(path.parent / config.curated) if config.curated else []
        if not templates and not curated:
            raise ConfigError(f"{path}: names neither templates nor curated prompts")
        try:
            return cls(templates, curated, config.languages, config.categories, config.existing_weight, config.areas)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from exc

    # -- what the mix is made of -----------------------------------------------------------------

    def _file_languages(self, file: TemplateFile) -> dict[str, float]:
        named = file.languages or list(self.languages)
        weighed = [x for x in named if x in self.languages]
        if not weighed:
            return dict.fromkeys(named, 1.0)  # languages of its own (["any"], ["SQL"]): drawn evenly
        if len(weighed) < len(named):
            others = ", ".join(x for x in named if x not in self.languages)
            raise ConfigError(f"category '{file.category}': languages {others} have no weight in [languages] "
                              f"(name only weighed languages, or only others, which are drawn evenly)")
        return {x: self.languages[x] for x in named}

    def _check_areas(self) -> None:
        if not self.areas:
            return
        areas_of = defaultdict(list)
        for name, area in self.areas.items():
            for category in area.categories:
                areas_of[category].append(name)
        for category, names in areas_of.items():
            if len(names) > 1:
                raise ConfigError(f"category '{category}' is in more than one area: {', '.join(names)}")
            if category not in self.all_categories():
                raise ConfigError(f"area '{names[0]}' names category '{category}', which has no templates (for "
                                  f"the weighed languages) or curated prompts")
        lost = [c for c in self.all_categories() if c not in self._area_of]
        if lost:
            raise ConfigError(f"categories in no area (add them to an [areas.*] table): {', '.join(lost)}")

    def all_categories(self) -> list[str]:
        """Every category that has something to draw: templates for some language, or curated prompts."""
        return sorted({*self._language_weights, *(c for c, prompts in self.curated.items() if prompts)})

    def weight(self, category: str) -> float:
        return self.categories.get(category, 1.0)

    def area_of(self, category: str) -> str | None:
        return self._area_of.get(category)

    def languages_of(self, category: str) -> dict[str, float]:
        """The languages a category's templates are drawn for, with their weights."""
        return dict(self._language_weights.get(category, {}))

    def templates_for(self, category: str, language: str) -> list[tuple[Template, TemplateFile]]:
        """The templates of a category that apply to a language."""
        return list(self._candidates.get(category, {}).get(language, []))

    def targets(self, existing_weight: float | None = None) -> dict[str, float]:
        """Each category's expected share of the whole mix (summing to 1).

        With areas: the area's normalised weight times the category's share of its area. Without:
        the curated and templated shares split by category weight (before pools run dry)."""
        categories = self.all_categories()
        if self.areas:
            inside = {name: sum(self.weight(c) for c in area.categories) for name, area in self.areas.items()}
            total = sum(area.weight for name, area in self.areas.items() if inside[name] > 0)
            if total <= 0:
                raise ConfigError("prompt generator: every area weighs 0")
            return {c: (self.areas[a].weight / total * self.weight(c) / inside[a]) if inside[a] > 0 else 0.0
                    for c in categories for a in [self._area_of[c]]}
        share = self.existing_weight if existing_weight is None else existing_weight
        curated = {c: self.weight(c) for c in categories if self.curated.get(c)}
        templated = {c: self.weight(c) for c in self._language_weights}
        curated_total, templated_total = sum(curated.values()), sum(templated.values())
        if curated_total <= 0:
            share = 0.0
        elif templated_total <= 0:
            share = 1.0
        return {c: (share * curated[c] / curated_total if c in curated else 0.0)
                + ((1 - share) * templated[c] / templated_total if c in templated else 0.0)
                for c in categories}

    # -- drawing -----------------------------------------------------------------------------------

    def sample(self, count: int, existing_weight: float | None = None, seed: int = 0) -> list[PromptRecord]:
        """`count` records, deterministic for `seed` (see the module's docstring for how)."""
        share = self.existing_weight if existing_weight is None else existing_weight
        rng = random.Random(seed)
        pools = {c: _Pool(self.curated.get(c, [])) for c in self.all_categories()}
        for category in sorted(pools):
            pools[category].reset(rng)
        draw = self._sample_by_category if self.areas else self._sample_by_source
        return _unique_ids(draw(count, share, rng, pools))

    def _sample_by_category(self, count: int, share: float, rng: random.Random,
                            pools: dict[str, _Pool]) -> list[PromptRecord]:
        targets = self.targets()
        categories = [c for c in sorted(targets) if targets[c] > 0]
        if not categories:
            raise ConfigError("prompt generator: every category weighs 0")
        cumulative = list(accumulate(targets[c] for c in categories))
        records = []
        while len(records) < count:
            category = rng.choices(categories, cum_weights=cumulative)[0]
            pool = pools[category]
            record = self._from_category(category, pool, share, rng)
            if record is None:  # the category's pool is used up: it repeats from here on
                pool.reset(rng)
                record = self._from_category(category, pool, share, rng)
                if record is None:
                    raise ConfigError(f"prompt generator: category '{category}' has no prompt to draw")
            pool.seen.add(record.prompt)
            records.append(record)
        return records

    def _sample_by_source(self, count: int, share: float, rng: random.Random,
                          pools: dict[str, _Pool]) -> list[PromptRecord]:
        records: list[PromptRecord] = []
        while len(records) < count:
            sources = (self._any_curated, self._any_templated)
            if rng.random() >= share:
                sources = sources[::-1]
            record = sources[0](pools, rng) or sources[1](pools, rng)
            if record is None:  # every pool is used up: start over, repeats from here on
                if not any(pool.seen for pool in pools.values()):
                    raise ConfigError("prompt generator: no prompts can be drawn (no templates or curated prompts "
                                      "for the weighted categories and languages)")
                for category in sorted(pools):
                    pools[category].reset(rng)
                continue
            pools[record.category].seen.add(record.prompt)
            records.append(record)
        return records

    def _any_curated(self, pools: dict[str, _Pool], rng: random.Random) -> PromptRecord | None:
        categories = [c for c in sorted(pools) if pools[c].unused and self.weight(c) > 0]
        while categories:
            category = _pick(rng, categories, self.weight)
            if record := self._curated(category, pools[category]):
                return record
            categories.remove(category)
        return None

    def _any_templated(self, pools: dict[str, _Pool], rng: random.Random) -> PromptRecord | None:
        categories = [c for c in sorted(self._language_weights) if self.weight(c) > 0]
        while categories:
            category = _pick(rng, categories, self.weight)
            if record := self._templated(category, pools[category], rng):
                return record
            categories.remove(category)
        return None

    def _from_category(self, category: str, pool: _Pool, share: float, rng: random.Random) -> PromptRecord | None:
        if pool.unused and rng.random() < share and (record := self._curated(category, pool)):
            return record
        return self._templated(category, pool, rng) or self._curated(category, pool)

    def _curated(self, category: str, pool: _Pool) -> PromptRecord | None:
        while pool.unused:
            prompt = pool.unused.pop()
            if prompt.prompt not in pool.seen:
                return _record(prompt.prompt, category, self.area_of(category), prompt.language or ANY_LANGUAGE,
                               "curated", prompt.id)
        return None

    def _templated(self, category: str, pool: _Pool, rng: random.Random) -> PromptRecord | None:
        weights = self._language_weights.get(category, {})
        languages = [x for x in sorted(weights) if x not in pool.exhausted]
        while languages:
            language = _pick(rng, languages, weights.__getitem__)
            candidates = self._candidates[category][language]
            for _ in range(TRIES):
                template, file = rng.choice(candidates)
                text = template.fill(language, rng, file.values)
                if text is not None and text not in pool.seen:
                    return _record(text, category, self.area_of(category), language, "template")
            pool.exhausted.add(language)
            languages.remove(language)
        return None
