"""The prompt generator: determinism, weights, no repeats, sources, preview."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from shaping.errors import ConfigError
from shaping.prompts import PromptGenerator
from shaping.prompts.sources import CuratedPrompt, TemplateFile
from tests.test_cli import isf

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "pipelines" / "prompts" / "coding.toml"
LANGUAGES = {"Python": 0.35, "JavaScript": 0.25, "TypeScript": 0.15, "Java": 0.10, "Go": 0.05, "Rust": 0.05, "C++": 0.05}


def big_generator(existing_weight=0.3):
    """A pool far larger than 10,000 draws, so the weights are not bent by exhaustion."""
    words = [f"w{i}" for i in range(60)]
    templates = [TemplateFile(category=c, values={"a": words, "b": words},
                              templates=[{"text": f"{c}: do {{a}} with {{b}} in {{language}}"}])
                 for c in ("alpha", "beta", "gamma")]
    curated = [CuratedPrompt(prompt=f"curated {c} {i}", category=c) for c in ("one", "two") for i in range(4000)]
    return PromptGenerator(templates, curated, LANGUAGES, {"alpha": 2.0, "beta": 1.0, "gamma": 1.0,
                                                           "one": 3.0, "two": 1.0}, existing_weight)


def test_same_seed_same_records_other_seed_other_records():
    generator = PromptGenerator.from_file(SHIPPED)
    first = generator.sample(300, seed=3)
    assert first == PromptGenerator.from_file(SHIPPED).sample(300, seed=3)
    assert [r.id for r in first] != [r.id for r in generator.sample(300, seed=4)]
    assert all(set(r.model_dump()) == {"id", "prompt", "category", "language", "source"} for r in first)


def test_weights_hold_over_10000_draws():
    records = big_generator(existing_weight=0.3).sample(10_000, seed=11)
    assert len({r.prompt for r in records}) == 10_000  # no repeats
    sources = Counter(r.source for r in records)
    assert abs(sources["curated"] / 10_000 - 0.3) < 0.02
    templated = [r for r in records if r.source == "template"]
    languages = Counter(r.language for r in templated)
    for language, weight in LANGUAGES.items():
        assert abs(languages[language] / len(templated) - weight) < 0.02, language
    categories = Counter(r.category for r in templated)
    assert abs(categories["alpha"] / len(templated) - 0.5) < 0.03
    curated = Counter(r.category for r in records if r.source == "curated")
    assert abs(curated["one"] / sources["curated"] - 0.75) < 0.03


def test_no_repeats_until_the_pool_is_exhausted():
    templates = [TemplateFile(category="c", values={"x": ["1", "2", "3"]}, templates=[{"text": "t {x}"}])]
    curated = [CuratedPrompt(prompt="p", category="k")]
    records = PromptGenerator(templates, curated, existing_weight=0.5).sample(12, seed=0)
    first_four = {r.prompt for r in records[:4]}
    assert first_four == {"t 1", "t 2", "t 3", "p"}  # every distinct prompt before any repeat
    assert len(records) == 12


def test_shipped_mix_covers_every_category_and_language():
    generator = PromptGenerator.from_file(SHIPPED)
    assert set(generator.templates) == {"tool_use", "debugging", "test_generation", "planning", "documentation",
                                        "explanation", "code_review", "optimization", "real_world"}
    assert sum(len(v) for v in generator.curated.values()) >= 100
    assert set(generator.curated) == {"algorithm", "bug_fix", "code_review", "data_structure", "explanation",
                                      "function_implementation", "real_world", "refactoring"}
    records = generator.sample(2000, existing_weight=0.0, seed=1)
    assert {r.language for r in records} == set(LANGUAGES)
    python = sum(r.language == "Python" for r in records[:600]) / 600  # before pools run dry
    assert abs(python - 0.35) < 0.06
    assert not [r for r in records if re.search(r"\{[a-z_]+\}", r.prompt)]  # every placeholder filled


def test_language_specific_values_only_apply_to_their_language():
    file = TemplateFile(category="c", values={"err": {"Python": ["KeyError"]}}, templates=[{"text": "{language}: {err}"}])
    records = PromptGenerator([file], [], {"Python": 0.5, "Go": 0.5}).sample(1, seed=0)
    assert records[0].prompt == "Python: KeyError"


def test_template_without_values_for_a_placeholder_is_named(tmp_path):
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "x.toml").write_text('category = "x"\n[[templates]]\ntext = "do {thing}"\n')
    (tmp_path / "gen.toml").write_text('templates = "templates"\n')
    with pytest.raises(ConfigError, match=r"x.toml: .*templates\[0\] uses \{thing\} but no values are given"):
        PromptGenerator.from_file(tmp_path / "gen.toml")


def test_curated_jsonl_and_text(tmp_path):
    (tmp_path / "curated").mkdir()
    (tmp_path / "curated" / "a.jsonl").write_text(json.dumps({"prompt": "p1", "category": "a", "language": "Go"}) + "\n")
    (tmp_path / "curated" / "story.txt").write_text("first prompt\nwith two lines\n\nsecond prompt\n")
    (tmp_path / "gen.toml").write_text('curated = "curated"\nexisting_weight = 1.0\n')
    records = PromptGenerator.from_file(tmp_path / "gen.toml").sample(3, seed=0)
    assert {(r.prompt, r.category, r.language) for r in records} == {
        ("p1", "a", "Go"), ("first prompt\nwith two lines", "story", "any"), ("second prompt", "story", "any")}
    (tmp_path / "curated" / "a.jsonl").write_text('{"prompt": "p1"}\n')
    with pytest.raises(ConfigError, match=r"a.jsonl: line 1: category: Field required"):
        PromptGenerator.from_file(tmp_path / "gen.toml")


def test_preview_shows_a_sample_and_the_mix():
    result = isf(REPO, "prompts", "preview", str(SHIPPED), "--count", "150", "--seed", "2", "--show", "4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 of 150 prompts (seed 2)" in out
    assert "mix: category x source x language" in out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[-2:] == ["150", "100%"]
    for category in ("debugging", "algorithm"):
        assert category in out
    bad = isf(REPO, "prompts", "preview", str(SHIPPED), "--count", "0")
    assert bad.returncode == 1 and "--count must be at least 1" in bad.stderr
