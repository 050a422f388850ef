"""Prompt A/B: variants assigned by record id, the same in every run and process; the variant in
each sample's metadata; validate and report compare the variants side by side."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from shaping.errors import PipelineDefinitionError, TaskContractError
from shaping.output import OutputPaths
from shaping.pipeline import Pipeline
from shaping.quality import Dataset
from shaping.quality.variants import compare_variants
from shaping.variants import variant_of
from tests.conftest import read_errors, read_jsonl, write_project
from tests.test_cli import isf

REPO = Path(__file__).resolve().parents[1]
NAMES = ("plain", "step_by_step")


def test_assignment_is_pinned_balanced_and_moves_little_when_a_variant_is_added():
    # pinned: a change of the assignment function would move every running A/B test
    assert [variant_of(str(i), NAMES) for i in range(12)] == PINNED
    assert variant_of(3, NAMES) == variant_of("3", NAMES)
    shares = Counter(variant_of(f"rec-{i}", NAMES) for i in range(4000))
    assert set(shares) == set(NAMES) and all(0.46 < n / 4000 < 0.54 for n in shares.values())
    assert variant_of("x", ["step_by_step", "plain"]) == variant_of("x", ["plain", "step_by_step"])  # order free
    three = NAMES + ("terse",)
    moved = [i for i in range(4000) if variant_of(f"rec-{i}", NAMES) != variant_of(f"rec-{i}", three)]
    assert all(variant_of(f"rec-{i}", three) == "terse" for i in moved)  # only to the new one
    assert 0.28 < len(moved) / 4000 < 0.38


PINNED = ["step_by_step"] * 4 + ["plain"] + ["step_by_step"] * 3 + ["plain"] * 3 + ["step_by_step"]


def test_assignment_is_the_same_in_another_process_whatever_its_hash_seed():
    code = ("import json; from shaping.variants import variant_of; "
            "print(json.dumps([variant_of(f'r{i}', ['plain', 'step_by_step', 'terse']) for i in range(300)]))")
    here = [variant_of(f"r{i}", ["plain", "step_by_step", "terse"]) for i in range(300)]
    for seed in ("1", "4242"):
        result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                                env={**os.environ, "PYTHONHASHSEED": seed})
        assert json.loads(result.stdout) == here


@pytest.mark.parametrize("variants, fragment", [
    ({}, "must be a dict of at least one name"),
    (["plain"], "must be a dict of at least one name"),
    ({"has space": "x"}, "name 'has space' must be letters"),
    ({3: "x"}, "name 3 must be letters"),
])
def test_bad_variants_are_a_definition_error(variants, fragment):
    with pytest.raises(PipelineDefinitionError, match=fragment):
        type("Bad", (Pipeline,), {"name": "bad", "variants": variants})


def test_variant_outside_a_task_needs_the_record(tmp_path):
    project = write_project(tmp_path)

    class AB(Pipeline):
        name = "ab"
        variants = {"plain": "P", "step_by_step": "S"}

    class Plain(Pipeline):
        name = "plain"

    ab = AB(project)
    assert ab.variant({"id": "7"}) == (variant_of("7", NAMES), {"plain": "P", "step_by_step": "S"}[variant_of("7", NAMES)])
    assert ab.variant("7") == ab.variant({"id": 7})
    with pytest.raises(TaskContractError, match="outside a task needs the record"):
        ab.variant({"topic": "no id"})
    with pytest.raises(TaskContractError, match="needs variants"):
        Plain(project).variant({"id": "1"})


AB = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

class AB(Pipeline):
    name = "ab"
    writer = Pipeline.model_dep("writer")
    judge_model = Pipeline.model_dep("judge")
    variants = {"plain": "Answer plainly.", "step_by_step": "Think step by step, then answer."}
    quality = {"min_samples": 1, "max_error_rate": 0.9}

    def run(self):
        return self.run_task(self.task, records=RECORDS)

    def task(self, record):
        name, system = self.variant(record)
        answer = yield model_request([{"role": "system", "content": system},
                                      {"role": "user", "content": f"question {record['n']}"}], model=self.writer)
        if name == "step_by_step" and record["n"] % 3 == 0:
            raise PipelineError("the steps were missing", error_type="validation_error")
        if record["n"] % 7 == 0:
            raise PipelineError("off topic", error_type="off_topic")
        text = answer.get_text() + (" Step 1, step 2, step 3." if name == "step_by_step" else "")
        sample = TrainingSample(id=f"s{record['n']}", messages=[{"role": "user", "content": f"question {record['n']}"},
                                                                {"role": "assistant", "content": text}])
        return (yield from self.judge_sample(self.judge_model, sample, rubric="Is the answer good?"))
'''


def write_ab(root, records):
    (root / "pipelines" / "ab.py").write_text(AB.replace("RECORDS", repr(records)))


def expected(records, id_of):
    """(samples, errors by type) per variant, as the task above decides them."""
    figures = {name: [0, Counter()] for name in NAMES}
    for record in records:
        name = variant_of(id_of(record), NAMES)
        if name == "step_by_step" and record["n"] % 3 == 0:
            figures[name][1]["validation_error"] += 1
        elif record["n"] % 7 == 0:
            figures[name][1]["off_topic"] += 1
        else:
            figures[name][0] += 1
    return figures


def test_variants_through_isf_stable_across_runs_and_compared_side_by_side(tmp_path):
    write_project(tmp_path)
    records = [{"id": f"r{n}", "n": n} for n in range(40)]
    write_ab(tmp_path, records)
    assert isf(tmp_path, "pipeline", "run", "ab", "-q").returncode == 0
    samples = read_jsonl(tmp_path / "training/data/ab.jsonl")
    by_record = {s["input_data"]["id"]: s for s in samples}
    for record_id, sample in by_record.items():
        name = variant_of(record_id, NAMES)
        assert sample["metadata"]["variant"] == name  # in the metadata, by the record's id
        assert sample["steps"][0]["messages"][0]["content"] == {
            "plain": "Answer plainly.", "step_by_step": "Think step by step, then answer."}[name]
    assert {s["metadata"]["variant"] for s in samples} == set(NAMES)

    # another run, another process, no cache: every record gets the same variant
    assert isf(tmp_path, "pipeline", "run", "ab", "-q", "--force", "--no-cache").returncode == 0
    again = read_jsonl(tmp_path / "training/data/ab.jsonl")
    assert [(s["id"], s["metadata"]["variant"]) for s in again] == [(s["id"], s["metadata"]["variant"]) for s in samples]

    want = expected(records, lambda r: r["id"])
    result = isf(tmp_path, "pipeline", "validate", "ab")
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variants"))
    rows = {line.split()[0]: line for line in lines[header + 2:header + 4]}
    assert set(rows) == set(NAMES), result.stdout
    for name in NAMES:
        samples_n, errors = want[name]
        total = sum(errors.values())
        cells = rows[name].split()
        assert cells[1] == str(samples_n) and cells[2] == str(total), rows[name]
        assert f"({total / (total + samples_n):.1%})" in rows[name]
        for kind, n in errors.items():
            assert f"{kind} {n}" in rows[name]
    judge = {}
    for name in NAMES:
        scores = [x["metadata"]["judge"]["score"] for x in again if x["metadata"]["variant"] == name]
        lengths = [len(x["messages"][-1]["content"]) for x in again if x["metadata"]["variant"] == name]
        judge[name] = f"mean {sum(scores) / len(scores):.2f} ({len(scores)} judged)"
        assert judge[name] in rows[name] and f"mean {sum(lengths) / len(lengths):.0f}," in rows[name]

    assert isf(tmp_path, "pipeline", "report", "ab").returncode == 0
    html = (tmp_path / "training/data/ab.report.html").read_text()
    assert '<table id="variants">' in html
    for name in NAMES:
        samples_n, errors = want[name]
        assert f"<tr><td>{name}</td><td>{samples_n}</td><td>{sum(errors.values())} (" in html
        assert f"<td>{judge[name]}</td></tr>" in html


def test_records_without_an_id_are_known_by_their_position(tmp_path):
    write_project(tmp_path)
    records = [{"n": n} for n in range(30)]
    write_ab(tmp_path, records)
    assert isf(tmp_path, "pipeline", "run", "ab", "-q").returncode == 0
    samples = read_jsonl(tmp_path / "training/data/ab.jsonl")
    for sample in samples:
        assert sample["metadata"]["variant"] == variant_of(str(sample["input_data"]["n"]), NAMES)
    errors = read_errors(tmp_path / "training/data/errors/ab.jsonl")
    assert {e["id"] for e in errors} == {str(r["n"]) for r in records} - {str(s["input_data"]["n"]) for s in samples}
    result = isf(tmp_path, "pipeline", "validate", "ab")
    want = expected(records, lambda r: str(r["n"]))
    for name in NAMES:
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert line.split()[1:3] == [str(want[name][0]), str(sum(want[name][1].values()))], line


def judged(i, variant, score=None, response="an answer"):
    metadata = {"variant": variant} if variant else {}
    if score is not None:
        metadata["judge"] = {"score": score, "rationale": "r", "scale": [1, 5]}
    return {"id": str(i), "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": response}],
            "metadata": metadata, "input_data": {"id": f"r{i}"}}


def test_compare_variants_judge_scores_lengths_and_recomputed_variants():
    samples = [judged(1, "plain", 4, "x" * 10), judged(2, "plain", 2, "x" * 30), judged(3, "step_by_step", 5),
               judged(4, None, None, "y" * 7)]  # no metadata: worked out from its record id
    errors = [{"id": "r10", "error": "validation_error", "message": "m"}]
    data = Dataset("ab", OutputPaths.for_samples(Path("/nowhere/ab.jsonl")), samples, errors)
    figures = {f.name: f for f in compare_variants(data, NAMES)}
    assert [f for f in figures] == list(NAMES)
    assert figures["plain"].scores == [4.0, 2.0] and figures["plain"].row()["judge"] == "mean 3.00 (2 judged)"
    assert figures["step_by_step"].row()["judge"] == "mean 5.00 (1 judged)"
    assert variant_of("r4", NAMES) == "plain"  # the fourth sample's, worked out from its record id
    assert figures["plain"].lengths == [10, 30, 7] and figures["plain"].row()["length"] == "mean 16, median 10"
    assert figures["plain"].samples == 3 and figures["step_by_step"].samples == 1
    assert figures[variant_of("r10", NAMES)].errors == Counter({"validation_error": 1})
    assert compare_variants(Dataset("x", data.paths, [judged(1, None)], []), ()) == []  # no variants anywhere
