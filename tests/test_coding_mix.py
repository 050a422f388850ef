"""The shipped coding mix (pipelines/prompts/coding.toml) and the coding-distillation pipeline:
the categories and areas of the design, templates that render for every language they claim,
the area weights as realised shares (library and `isf prompts preview`), the teacher's system
prompt, and a run through `isf` in a scratch project on the mock teacher."""

import importlib.util
import random
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

from shaping.prompts import PromptGenerator
from tests.conftest import read_errors, read_jsonl
from tests.test_cli import isf

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "pipelines" / "prompts" / "coding.toml"
AREAS = {"code_generation": 0.25, "debugging": 0.20, "tool_usage": 0.15, "testing": 0.10, "multi_step": 0.10,
         "documentation": 0.05, "optimization": 0.05, "real_world": 0.05, "explanation": 0.05}
#: the design's list, each its own category, in its area
DESIGN = {"tool_execution": "tool_usage", "tool_file_operations": "tool_usage", "tool_api_calls": "tool_usage",
          "debugging": "debugging", "debugging_errors": "debugging", "debugging_trace": "debugging",
          "test_generation": "testing", "test_generation_tdd": "testing", "multistep_planning": "multi_step",
          "multistep_refactor": "multi_step", "documentation": "documentation", "explanation": "explanation",
          "code_review": "debugging", "optimization": "optimization", "real_world": "real_world"}
#: the issue's examples of further topics, each a category of its own
TOPICS = {"algorithms", "data_structures", "concurrency", "security", "sql_data", "api_design", "cli_tools",
          "code_translation", "parsing", "configuration_deployment", "git_workflows"}
MAIN_LANGUAGES = {"Python", "JavaScript", "TypeScript", "Go", "Rust", "Java"}
NOT_LANGUAGE_BOUND = {"git_workflows": {"any"}, "sql_data": {"SQL"}}


@pytest.fixture(scope="module")
def generator():
    return PromptGenerator.from_file(SHIPPED)


def test_categories_and_areas_of_the_design(generator):
    assert {name: area.weight for name, area in generator.areas.items()} == AREAS
    categories = generator.all_categories()
    assert len(categories) > 30
    assert {c: generator.area_of(c) for c in DESIGN} == DESIGN
    assert TOPICS <= set(categories)
    assert all(len(area.categories) >= 2 for area in generator.areas.values())
    assert sum(generator.targets().values()) == pytest.approx(1.0)


def test_every_category_has_several_templates_and_values_per_language(generator):
    for category in generator.all_categories():
        assert len(generator.templates[category]) >= 3, category
        languages = set(generator.languages_of(category))
        if category in NOT_LANGUAGE_BOUND:
            assert languages == NOT_LANGUAGE_BOUND[category]
            continue
        assert MAIN_LANGUAGES <= languages, category
        for language in MAIN_LANGUAGES:
            assert len(generator.templates_for(category, language)) >= 3, (category, language)
    for category in DESIGN:  # each of the design's categories has values given per language
        files = {file.category: file for _, file in generator.templates[category]}
        per_language = [field for field, values in files[category].values.items() if isinstance(values, dict)]
        assert per_language, category


def test_every_template_renders_for_every_language_it_claims(generator):
    rng = random.Random(0)
    rendered = 0
    for category in generator.all_categories():
        for language in generator.languages_of(category):
            for template, file in generator.templates_for(category, language):
                fields = [f for f in template.placeholders() if f != "language"]
                for _ in range(5):
                    text = template.fill(language, rng, file.values)
                    assert text is not None, (category, template.name, language)
                    assert not [f for f in fields if "{" + f + "}" in text], (category, template.name, language)
                    if "language" in template.placeholders():
                        assert language in text and "{language}" not in text
                    rendered += 1
        if category not in NOT_LANGUAGE_BOUND:  # a template with per-language values is not drawn elsewhere
            assert "any" not in generator.languages_of(category)
    assert rendered > 2000


def test_code_in_templates_is_fenced_and_tagged(generator):
    fences = Counter()
    for category in generator.all_categories():
        for template, file in generator.templates[category]:
            for values in [*file.values.values(), *template.values.values()]:
                for value in (v for vs in (values.values() if isinstance(values, dict) else [values]) for v in vs):
                    if "```" in value:
                        tags = re.findall(r"```(\w*)", value)
                        assert len(tags) % 2 == 0 and not any(tags[1::2]), (category, value[:60])
                        fences.update(tags[0::2])
    assert not fences[""]  # every opening fence names its language
    assert {"python", "js", "ts", "java", "go", "rust", "cpp", "sql", "json"} <= set(fences)


def test_shares_hold_within_2_percent_over_10000_draws(generator):
    records = generator.sample(10_000, seed=7)
    targets = generator.targets()
    by_category = Counter(r.category for r in records)
    for category, target in targets.items():
        assert abs(by_category[category] / 10_000 - target) < 0.02, category
    by_area = Counter(r.area for r in records)
    for area, weight in AREAS.items():
        assert abs(by_area[area] / 10_000 - weight) < 0.02, area
    first = generator.sample(200, seed=7)  # a default run: no repeats, curated prompts among them
    assert len({r.prompt for r in first}) == 200 and {r.source for r in first} == {"curated", "template"}
    assert not [r for r in first if r.source == "curated" and generator.area_of(r.category) is None]


def scratch_project(root: Path) -> Path:
    """The coding-distillation pipeline, its prompts and the mock models, copied away from the repository."""
    (root / "pipelines").mkdir()
    shutil.copy(REPO / "shaping.toml", root / "shaping.toml")
    shutil.copy(REPO / "pipelines" / "coding_distillation.py", root / "pipelines")
    shutil.copytree(REPO / "pipelines" / "prompts", root / "pipelines" / "prompts")
    return root


def parse_rows(out: str, first: str) -> dict[str, tuple[float, float]]:
    """{name: (share, target)} from the preview's table whose header starts with `first`."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == [first])
    rows = {}
    for line in lines[start + 1:]:
        cells = line.split()
        if not cells or cells[0] == "total":
            break
        rows[cells[0]] = (float(cells[-2].rstrip("%")) / 100, float(cells[-1].rstrip("%")) / 100)
    return rows


def test_preview_prints_each_share_beside_its_target(tmp_path, generator):
    root = scratch_project(tmp_path)
    result = isf(root, "prompts", "preview", "pipelines/prompts/coding.toml", "--count", "10000", "--show", "3",
                 timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "3 of 10000 prompts (seed 0)" in out
    assert "areas: share of 10000 prompts and target" in out and "mix: category x source x language" in out
    areas = parse_rows(out, "area")
    assert set(areas) == set(AREAS)
    for area, (share, target) in areas.items():
        assert target == pytest.approx(AREAS[area]) and abs(share - target) < 0.02, area
    lines = out.splitlines()
    mix_header = next(line for line in lines if line.split()[:2] == ["area", "category"]).split()
    assert mix_header[2:5] == ["curated", "template", "Python"]  # languages in the file's order
    categories = {}
    for line in lines[lines.index(next(x for x in lines if x.split()[:2] == ["area", "category"])) + 1:]:
        cells = line.split()
        if cells[0] in AREAS:
            categories[cells[1]] = (float(cells[-2].rstrip("%")) / 100, float(cells[-1].rstrip("%")) / 100)
    assert set(categories) == set(generator.all_categories())
    for category, (share, target) in categories.items():
        assert target == pytest.approx(generator.targets()[category], abs=0.0005)
        assert abs(share - target) < 0.02, category
    total = next(line for line in lines if line.split()[:1] == ["total"] and "curated" not in line)
    assert total.split()[-3:] == ["10000", "100.0%", "100.0%"]


def load_pipeline_module():
    spec = importlib.util.spec_from_file_location("coding_distillation", REPO / "pipelines" / "coding_distillation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_teacher_is_told_the_designs_remaining_points():
    system = load_pipeline_module().TEACHER_SYSTEM
    assert system.startswith("You are an expert programming teacher")
    assert re.search(r"tool call as JSON\s.* clear one-line description", system, re.DOTALL)
    assert re.search(r"debugging, name the root cause first .* then give the fix", system, re.DOTALL)
    assert re.search(r"multi-step tasks .* the approach and the steps before\s+the implementation", system, re.DOTALL)


def test_coding_distillation_runs_through_isf_on_the_mock(tmp_path):
    root = scratch_project(tmp_path)
    result = isf(root, "pipeline", "run", "coding-distillation", "--limit", "8", timeout=120)
    assert result.returncode == 0, result.stderr
    data = root / "training" / "data"
    samples = read_jsonl(data / "coding-distillation.jsonl")
    assert len(samples) == 8 and read_errors(data / "errors" / "coding-distillation.jsonl") == []
    expected = PromptGenerator.from_file(SHIPPED).sample(200, existing_weight=0.5, seed=7)[:8]
    assert [(s["id"], s["messages"][0]["content"]) for s in samples] == [(r.id, r.prompt) for r in expected]
    for sample, record in zip(samples, expected):
        assert [m["role"] for m in sample["messages"]] == ["user", "assistant"]
        assert sample["steps"][0]["messages"][0]["content"] == load_pipeline_module().TEACHER_SYSTEM
        assert sample["metadata"] == {"category": record.category, "area": record.area,
                                      "language": record.language, "source": record.source}
        assert sample["metadata"]["area"] in AREAS


def test_ids_stay_unique_past_the_pools_with_shares_on_target(generator):
    records = generator.sample(10_000, seed=7)
    ids = [r.id for r in records]
    assert len(set(ids)) == 10_000
    repeats = [r for r in records if re.search(r"-r\d+$", r.id)]
    assert repeats and {r.category for r in repeats} >= {"git_workflows"}  # the smallest pools repeat first
    first = {r.id: r.prompt for r in records if not re.search(r"-r\d+$", r.id)}
    for r in repeats:  # a repeat is its first's prompt, under its first's id and the repeat's number
        assert first[r.id.rsplit("-r", 1)[0]] == r.prompt
    targets = generator.targets()
    by_category = Counter(r.category for r in records)
    assert all(abs(by_category[c] / 10_000 - t) < 0.02 for c, t in targets.items())
    assert [r.id for r in generator.sample(200, seed=7)] == ids[:200]  # the default run's ids are as before
    # without areas (the draw by source): past both pools too
    from shaping.prompts.sources import load_curated, load_templates

    small = [f for f in load_templates(SHIPPED.parent / "templates") if f.category in ("git_workflows", "sql_data")]
    curated = [p for p in load_curated(SHIPPED.parent / "curated") if p.category in ("git_workflows", "sql_data")]
    flat = PromptGenerator(small, curated, existing_weight=0.3)
    drawn = flat.sample(3000, seed=1)
    assert len({r.id for r in drawn}) == 3000 and len({r.prompt for r in drawn}) < 3000


def test_coding_distillation_with_a_large_count_through_set(tmp_path):
    root = scratch_project(tmp_path)
    result = isf(root, "pipeline", "run", "coding-distillation", "-q", "--no-annotate", "--set", "count=2500",
                 timeout=300)
    assert result.returncode == 0, result.stderr
    samples = read_jsonl(root / "training" / "data" / "coding-distillation.jsonl")
    assert len(samples) == 2500 and len({s["id"] for s in samples}) == 2500
