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
        cells = rows[name].split()  # one sample a record: records are the samples and the errors
        assert cells[1:4] == [str(samples_n + total), str(samples_n), str(total)], rows[name]
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
        total = sum(errors.values())
        assert f"<tr><td>{name}</td><td>{samples_n + total}</td><td>{samples_n}</td><td>{total} (" in html
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
        samples_n, failed = want[name][0], sum(want[name][1].values())
        assert line.split()[1:4] == [str(samples_n + failed), str(samples_n), str(failed)], line


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


def test_variant_of_a_string_or_number_record_is_the_one_the_run_labels(project):
    """Records that are not dicts are known by their position: `self.variant(record)` in the task
    names the variant the run writes into the sample's metadata, not the one of the record's text
    taken as an id; outside a task (or for another value) a string or number is an id."""
    from shaping import run_pipeline
    from shaping.pipeline import TrainingSample, model_request

    words = [f"word{i}" for i in range(12)] + [100 + i for i in range(12)]

    class Strings(Pipeline):
        name = "strings"
        writer = Pipeline.model_dep("writer")
        variants = {"plain": "P", "step_by_step": "S"}

        def run(self):
            return self.run_task(self.task, records=words)

        def task(self, record):
            chosen, _ = self.variant(record)
            left_out, _ = self.variant()
            explicit, _ = self.variant("an-id")  # another value: an id, inside a task too
            yield model_request(f"say {record}", model=self.writer)
            return TrainingSample(id=f"s-{record}", messages=[{"role": "user", "content": str(record)},
                                                            {"role": "assistant", "content": "ok"}],
                                  metadata={"chosen": chosen, "left_out": left_out, "explicit": explicit})

    result = run_pipeline(Strings(project), use_cache=False)
    samples = read_jsonl(result.paths.samples)
    assert len(samples) == len(words)
    by_position = {str(i): variant_of(str(i), NAMES) for i in range(len(words))}
    assert sum(by_position[str(i)] != variant_of(str(w), NAMES) for i, w in enumerate(words)) > 5  # the bug's ground
    for i, sample in enumerate(samples):
        assert sample["metadata"]["variant"] == by_position[str(i)]
        assert sample["metadata"]["chosen"] == sample["metadata"]["left_out"] == sample["metadata"]["variant"], i
        assert sample["metadata"]["explicit"] == variant_of("an-id", NAMES)
    assert Strings(project).variant("word3")[0] == variant_of("word3", NAMES)  # outside a task: an id
    assert Strings(project).variant(7)[0] == variant_of("7", NAMES)


MULTI = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

class Multi(Pipeline):
    name = "multi"
    writer = Pipeline.model_dep("writer")
    judge_model = Pipeline.model_dep("judge")
    variants = {"plain": "Answer plainly.", "step_by_step": "Think step by step, then answer."}
    quality = {"min_samples": 1, "max_error_rate": 0.9, "min_judge_score": 3}

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{n}", "n": n} for n in range(60)])

    def task(self, record):
        name, system = self.variant(record)
        n = record["n"]
        answer = yield model_request([{"role": "system", "content": system},
                                      {"role": "user", "content": f"question {n}"}], model=self.writer)
        if n % 5 == 0:
            raise PipelineError("off topic", error_type="off_topic")
        samples = [TrainingSample(id=f"s{n}-{k}", messages=[
            {"role": "user", "content": f"question {n}, part {k}"},
            {"role": "assistant", "content": answer.get_text() + " " + name + "!" * k}])
            for k in range(1 + (n % 4) * (2 if name == "plain" else 1))]
        return (yield from self.judge_samples(self.judge_model, samples, rubric="Is the answer good?"))
'''


def variant_rows(stdout):
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("variants"))
    return {line.split()[0]: line for line in lines[header + 2:] if line.split()[:1] and line.split()[0] in NAMES}


def test_error_rate_is_per_record_and_judge_figures_count_rejected_samples(tmp_path):
    """A record that makes several samples counts once; the samples min_judge_score keeps out
    (training/data/rejected/NAME.jsonl) are in their variant's judge figures."""
    write_project(tmp_path)
    (tmp_path / "pipelines" / "multi.py").write_text(MULTI)
    assert isf(tmp_path, "pipeline", "run", "multi", "-q").returncode == 0
    kept = read_jsonl(tmp_path / "training/data/multi.jsonl")
    rejected = read_jsonl(tmp_path / "training/data/rejected/multi.jsonl")
    assert kept and rejected, "the mock judge's fixed scores put some samples under 3"
    errors = read_errors(tmp_path / "training/data/errors/multi.jsonl")

    def variant_of_sample(sample_id):
        return variant_of("r" + sample_id[1:].split("-")[0], NAMES)

    result = isf(tmp_path, "pipeline", "validate", "multi")
    rows = variant_rows(result.stdout)
    assert set(rows) == set(NAMES), result.stdout
    for name in NAMES:
        records = [n for n in range(60) if variant_of(f"r{n}", NAMES) == name]
        failed = [e for e in errors if variant_of(e["id"], NAMES) == name]
        assert len(failed) == len([n for n in records if n % 5 == 0]) > 0
        samples = [s for s in kept if s["metadata"]["variant"] == name]
        out = [r for r in rejected if variant_of_sample(r["id"]) == name]
        assert all(r["variant"] == name for r in out)  # the rejected file says its variant
        scores = [s["metadata"]["judge"]["score"] for s in samples] + [r["judge"]["score"] for r in out]
        cells = rows[name].split()
        assert cells[1:4] == [str(len(records)), str(len(samples)), str(len(failed))], rows[name]
        assert f"({len(failed) / len(records):.1%})" in rows[name]  # errors per record, not per sample
        judge = f"mean {sum(scores) / len(scores):.2f} ({len(scores)} judged, {len(out)} rejected)"
        assert judge in rows[name], rows[name]

    assert isf(tmp_path, "pipeline", "report", "multi").returncode == 0
    html = (tmp_path / "training/data/multi.report.html").read_text()
    for name in NAMES:
        records = [n for n in range(60) if variant_of(f"r{n}", NAMES) == name]
        assert f"<tr><td>{name}</td><td>{len(records)}</td>" in html


def test_minimal_output_says_the_comparison_needs_annotated_output(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "multi.py").write_text(MULTI)
    assert isf(tmp_path, "pipeline", "run", "multi", "-q", "--no-annotate").returncode == 0
    result = isf(tmp_path, "pipeline", "validate", "multi")
    lines = [line for line in result.stdout.splitlines() if "variant" in line]
    assert lines == ["variants: not compared: minimal output (--no-annotate) does not say which variant made "
                     "each sample; run with --annotate to compare them"], result.stdout
    assert isf(tmp_path, "pipeline", "report", "multi").returncode == 0
    html = (tmp_path / "training/data/multi.report.html").read_text()
    assert '<table id="variants">' not in html and "variants: not compared: minimal output" in html


def test_compare_variants_counts_records_not_samples():
    def sample(record_id, k, variant=None):
        metadata = {"variant": variant} if variant else {}
        return {"id": f"{record_id}-{k}", "messages": [{"role": "user", "content": "q"},
                                                       {"role": "assistant", "content": "a"}],
                "metadata": metadata, "input_data": {"id": record_id, "topic": "t"}}

    plain = [r for r in (f"topic{i:02d}-batch0" for i in range(40)) if variant_of(r, NAMES) == "plain"][:2]
    samples = [sample(plain[0], k) for k in range(5)]  # no metadata: by the record's id, not topic00-batch0-3
    errors = [{"id": plain[1], "error": "validation_error", "message": "m"}]
    data = Dataset("ab", OutputPaths.for_samples(Path("/nowhere/ab.jsonl")), samples, errors)
    figures = {f.name: f for f in compare_variants(data, NAMES)}
    assert figures["plain"].samples == 5 and figures["plain"].records == 2 and figures["plain"].error_rate == 0.5
    assert figures["plain"].row()["errors"] == "1 (50.0%)" and figures["step_by_step"].records == 0


def test_records_without_an_id_count_once_however_their_samples_went(tmp_path):
    """Known by their position in the run and by their content in the outputs: a record with kept
    and rejected samples, or only rejected ones, is one record of its variant."""
    write_project(tmp_path)
    (tmp_path / "pipelines" / "multi.py").write_text(MULTI.replace('{"id": f"r{n}", "n": n}', '{"n": n}'))
    assert isf(tmp_path, "pipeline", "run", "multi", "-q").returncode == 0
    kept = read_jsonl(tmp_path / "training/data/multi.jsonl")
    rejected = read_jsonl(tmp_path / "training/data/rejected/multi.jsonl")
    assert all(r["input_data"] == {"n": int(r["record_id"])} for r in rejected)
    by_record = {}
    for s in kept:
        by_record.setdefault(s["input_data"]["n"], set()).add("kept")
    for r in rejected:
        by_record.setdefault(r["input_data"]["n"], set()).add("rejected")
    assert {"kept", "rejected"} in by_record.values() and {"rejected"} in by_record.values(), by_record
    rows = variant_rows(isf(tmp_path, "pipeline", "validate", "multi").stdout)
    for name in NAMES:
        records = [n for n in range(60) if variant_of(str(n), NAMES) == name]
        assert rows[name].split()[1] == str(len(records)), rows[name]
