"""The prompt generator: determinism, weights, areas, no repeats, sources, preview.

The shipped coding mix itself is tested in tests/test_coding_mix.py."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from shaping.errors import ConfigError
from shaping.prompts import PromptGenerator
from shaping.prompts.sources import CuratedPrompt, Template, TemplateFile
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
    assert all(set(r.model_dump()) == {"id", "prompt", "category", "area", "language", "source"} for r in first)


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


def test_preview_shows_a_sample_and_the_mix(tmp_path):
    """A mix without areas: the category table with each share beside its target."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "a.toml").write_text(
        'category = "alpha"\n[values]\nx = [' + ", ".join(f'"{i}"' for i in range(50)) + ']\n'
        '[[templates]]\ntext = "alpha {x} in {language}"\n')
    (tmp_path / "curated").mkdir()
    (tmp_path / "curated" / "story.txt").write_text("\n\n".join(f"story {i}" for i in range(40)))
    (tmp_path / "gen.toml").write_text('templates = "templates"\ncurated = "curated"\nexisting_weight = 0.25\n'
                                       '[languages]\nPython = 0.5\nGo = 0.5\n')
    result = isf(tmp_path, "prompts", "preview", "gen.toml", "--count", "120", "--seed", "2", "--show", "4")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 of 120 prompts (seed 2)" in out
    assert "mix: category x source x language" in out and "areas:" not in out
    header = next(line for line in out.splitlines() if line.startswith("category"))
    assert header.split() == ["category", "curated", "template", "Python", "Go", "any", "total", "share", "target"]
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split()[:1] in (["alpha"], ["story"])}
    assert rows["alpha"][-1] == "75.0%" and rows["story"][-1] == "25.0%"  # 1 - existing_weight, existing_weight
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[-3:] == ["120", "100.0%", "100.0%"]
    bad = isf(tmp_path, "prompts", "preview", "gen.toml", "--count", "0")
    assert bad.returncode == 1 and "--count must be at least 1" in bad.stderr


# -- areas -------------------------------------------------------------------------------------

def area_generator(categories=None, **kwargs):
    words = [f"w{i}" for i in range(40)]
    templates = [TemplateFile(category=c, values={"a": words}, templates=[{"text": f"{c} {{a}} in {{language}}"}])
                 for c in ("alpha", "beta", "gamma", "delta")]
    curated = [CuratedPrompt(prompt=f"curated alpha {i}", category="alpha") for i in range(30)]
    areas = {"big": {"weight": 0.6, "categories": ["alpha", "beta"]},
             "small": {"weight": 0.4, "categories": ["gamma", "delta"]}}
    return PromptGenerator(templates, curated, {"Python": 0.7, "Go": 0.3}, categories or {}, 0.5,
                           kwargs.get("areas", areas))


def test_areas_make_the_weights_shares_of_the_whole_mix():
    generator = area_generator(categories={"gamma": 3.0})
    targets = generator.targets()
    assert targets == pytest.approx({"alpha": 0.3, "beta": 0.3, "gamma": 0.3, "delta": 0.1})
    records = generator.sample(10_000, seed=5)
    shares = Counter(r.category for r in records)
    for category, target in targets.items():
        # small pools (80 prompts each): categories repeat their own prompts, the shares still hold
        assert abs(shares[category] / 10_000 - target) < 0.02, category
    assert {r.area for r in records if r.category in ("alpha", "beta")} == {"big"}
    first = generator.sample(200, seed=5)
    assert len({r.prompt for r in first}) == 200  # no repeats while the pools last
    assert first == area_generator(categories={"gamma": 3.0}).sample(200, seed=5)


def test_with_areas_curated_prompts_come_from_their_own_category():
    records = area_generator().sample(60, seed=1)
    alpha = [r for r in records if r.category == "alpha"]
    curated = [r for r in records if r.source == "curated"]
    assert curated and all(r.category == "alpha" for r in curated)
    assert 0.2 < len(curated) / len(alpha) < 0.8  # existing_weight 0.5 within the category
    alpha = [r.prompt for r in area_generator().sample(3000, seed=1) if r.category == "alpha"]
    first_repeat = next(i for i, prompt in enumerate(alpha) if prompt in alpha[:i])
    assert first_repeat >= 100  # 110 distinct prompts: 30 curated, 80 templated
    assert sum(prompt.startswith("curated") for prompt in alpha[:first_repeat]) == 30  # all used before a repeat


@pytest.mark.parametrize("areas, message", [
    ({"big": {"weight": 1, "categories": ["alpha", "beta", "gamma"]}}, r"categories in no area .*: delta"),
    ({"a": {"weight": 1, "categories": ["alpha", "beta"]},
      "b": {"weight": 1, "categories": ["beta", "gamma", "delta"]}},
     r"category 'beta' is in more than one area: a, b"),
    ({"a": {"weight": 1, "categories": ["alpha", "beta", "gamma", "delta", "omega"]}},
     r"area 'a' names category 'omega', which has no templates"),
])
def test_area_mistakes_are_named(areas, message):
    with pytest.raises(ConfigError, match=message):
        area_generator(areas=areas)


def test_areas_in_a_generator_file(tmp_path):
    (tmp_path / "templates").mkdir()
    for category in ("alpha", "beta"):
        (tmp_path / "templates" / f"{category}.toml").write_text(
            f'category = "{category}"\n[values]\nx = ["1", "2"]\n[[templates]]\ntext = "{category} {{x}}"\n')
    (tmp_path / "gen.toml").write_text('templates = "templates"\n[areas.one]\nweight = 0.8\ncategories = ["alpha"]\n'
                                       '[areas.two]\nweight = 0.2\ndescription = "the rest"\ncategories = ["beta"]\n')
    generator = PromptGenerator.from_file(tmp_path / "gen.toml")
    assert generator.targets() == pytest.approx({"alpha": 0.8, "beta": 0.2})
    assert generator.areas["two"].description == "the rest"
    (tmp_path / "gen.toml").write_text('templates = "templates"\n[areas.one]\nweight = -1\ncategories = ["alpha"]\n')
    with pytest.raises(ConfigError, match=r"gen.toml: areas.one.weight"):
        PromptGenerator.from_file(tmp_path / "gen.toml")
    (tmp_path / "gen.toml").write_text('templates = "templates"\n[areas.one]\nweight = 1\ncategories = ["alpha"]\n')
    with pytest.raises(ConfigError, match=r"gen.toml: categories in no area .*: beta"):
        PromptGenerator.from_file(tmp_path / "gen.toml")


# -- languages of a template file ----------------------------------------------------------------

def test_a_file_tied_to_no_language_is_drawn_as_any():
    values = {"x": ["1", "2", "3"]}
    tied = TemplateFile(category="git", languages=["any"], values=values, templates=[{"text": "git {x}"}])
    sql = TemplateFile(category="sql", languages=["SQL"], values=values, templates=[{"text": "{language} {x}"}])
    generator = PromptGenerator([tied, sql], [], {"Python": 0.5, "Go": 0.5})
    records = generator.sample(6, seed=0)
    assert {(r.category, r.language) for r in records} == {("git", "any"), ("sql", "SQL")}
    assert {r.prompt for r in records if r.category == "sql"} == {"SQL 1", "SQL 2", "SQL 3"}
    with pytest.raises(ValueError, match=r"uses \{language\} but the file is tied to no language"):
        TemplateFile(category="git", languages=["any"], templates=[{"text": "git in {language}"}])
    mixed = TemplateFile(category="m", languages=["Python", "SQL"], templates=[{"text": "{language}"}])
    with pytest.raises(ConfigError, match=r"category 'm': languages SQL have no weight in \[languages\]"):
        PromptGenerator([mixed], [], {"Python": 1.0})


def test_a_file_can_narrow_the_languages():
    file = TemplateFile(category="c", languages=["Go"], values={"x": ["1", "2"]},
                        templates=[{"text": "{language} {x}"}])
    generator = PromptGenerator([file], [], {"Python": 0.9, "Go": 0.1})
    assert generator.languages_of("c") == {"Go": 0.1}
    assert {r.language for r in generator.sample(4, seed=0)} == {"Go"}


def test_template_applies_only_where_every_placeholder_has_values():
    template = Template(text="{language}: {err} in {where}", values={"err": {"Python": ["KeyError"], "go": ["panic"]}})
    shared = {"where": ["a loop"]}
    assert template.applies_to("Python", shared) and template.applies_to("Go", shared)  # lower-case key matches
    assert not template.applies_to("Rust", shared) and not template.applies_to("Python", {})
