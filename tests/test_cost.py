"""Cost before and during a run: prices, `--dry-run`, `--max-cost`."""

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from shaping import run_pipeline
from shaping.config import ModelConfig, PriceTable, Project
from shaping.discovery import discover
from shaping.dry_run import dry_run_pipeline
from shaping.errors import PipelineDefinitionError
from shaping.pipeline import Pipeline
from shaping.prices import FREE, prices_for
from tests.conftest import read_jsonl, write_project
from tests.test_cli import isf

REPO = Path(__file__).resolve().parents[1]


# -- prices -----------------------------------------------------------------------------------

def test_built_in_prices_are_for_the_exact_id_or_a_snapshot_and_only_on_the_provider_host():
    mini = prices_for("m", ModelConfig(model="gpt-4o-mini-2024-07-18"))
    assert (mini.input, mini.output, mini.cached_input) == (0.15, 0.60, 0.075)
    assert "gpt-4o-mini" in mini.source
    sonnet = prices_for("m", ModelConfig(model="claude-sonnet-4-5-20250929"))
    assert (sonnet.input, sonnet.output, sonnet.cache_write) == (3.0, 15.0, 3.75)
    assert prices_for("m", ModelConfig(model="claude-sonnet-4-5-latest")).input == 3.0
    assert prices_for("m", ModelConfig(model="gpt-4o", base_url="https://api.openai.com/v1")).input == 2.5
    # the same name behind another server (vLLM, a proxy) is not OpenAI's price list
    assert prices_for("m", ModelConfig(model="gpt-4o", provider="openai", base_url="http://127.0.0.1:8000/v1")) is None
    # variants priced otherwise are not their base model: no price rather than a wrong one
    for variant in ("o3-pro", "gpt-5-pro", "o1-mini", "gpt-4o-mini-tts", "gpt-4o-realtime-preview", "claude-opus-4-6",
                    "gpt-4omni"):
        assert prices_for("m", ModelConfig(model=variant)) is None, variant
    assert prices_for("m", ModelConfig(model="Qwen/Qwen3-8B", provider="openai")) is None
    assert prices_for("m", ModelConfig(model="mock-x", provider="mock")) is FREE and FREE.local


def test_shaping_toml_overrides_the_table_and_batch_is_half_unless_given():
    own = prices_for("m", ModelConfig(model="gpt-4o", price_per_million_input=1.0, price_per_million_output=4.0))
    assert (own.input, own.output, own.source) == (1.0, 4.0, "shaping.toml models.m")
    table = {"gpt-4o": PriceTable(input=2.0, output=6.0, batch_input=0.5, batch_output=3.0)}
    listed = prices_for("m", ModelConfig(model="gpt-4o"), table)
    assert listed.source == 'shaping.toml prices."gpt-4o"'
    assert listed.cost(1_000_000, 1_000_000) == pytest.approx(8.0)
    assert listed.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(3.5)
    assert own.cost(1_000_000, 1_000_000, batch=True) == pytest.approx(2.5)
    # cache reads at their price, the rest at the input price
    assert prices_for("m", ModelConfig(model="gpt-4o")).cost(1000, 0, cached=400) == pytest.approx(
        (600 * 2.5 + 400 * 1.25) / 1e6)


# -- dry runs ---------------------------------------------------------------------------------

def shipped(tmp_path):
    """A copy of the repository's project (its pipelines on the mock models), with its own cache."""
    for part in ("shaping.toml", "pipelines", "identity"):
        source = REPO / part
        (shutil.copytree if source.is_dir() else shutil.copy)(source, tmp_path / part)
    shutil.rmtree(tmp_path / "pipelines" / "__pycache__", ignore_errors=True)
    return Project.load(tmp_path)


@pytest.mark.parametrize("name", ["identity-qa", "tool-use", "honesty-dataset", "coding-distillation",
                                  "reasoning-distillation", "moral-stories"])
def test_a_dry_run_counts_the_requests_a_real_run_sends(tmp_path, name):
    project = shipped(tmp_path)
    cls = discover(project)[name].cls
    estimate = dry_run_pipeline(cls(project), limit=3)
    assert not (tmp_path / "training" / "data").exists()  # nothing written
    assert not (project.cache_dir / "requests.sqlite").exists()
    real = run_pipeline(cls(project), limit=3)
    sent = {model: u.requests for model, u in real.manifest.usage.items()}
    assert sent and {m.model: m.requests for m in estimate.models} == sent
    assert all(m.cached == 0 and m.local and m.cost() == 0 for m in estimate.models)
    # after the run, every answer is in the cache: the estimate is nothing to send
    again = dry_run_pipeline(cls(project), limit=3)
    assert {m.model: (m.requests, m.cached) for m in again.models} == {k: (v, v) for k, v in sent.items()}
    assert all(m.prompt_tokens == m.completion_tokens == 0 for m in again.models)


PRICED = """
[models.judge]
provider = "openai"
model = "gpt-4o-mini"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "SHAPING_DRY_RUN_UNSET_KEY"

[models.judge.params]
max_tokens = 50

[models.writer]
provider = "mock"
model = "mock-writer"
price_per_million_input = 10.0
price_per_million_output = 20.0
"""

TWO_MODELS = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Two(Pipeline):
    name = "two"
    judge = Pipeline.model_dep("judge")
    writer = Pipeline.model_dep("writer")

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(5)])

    def task(self, record):
        question = yield model_request("ask " + "x" * 400, model=self.judge)
        answer = yield model_request(question.get_text(), model=self.writer)
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": question.get_text()}, answer.as_message()])
'''


def test_a_dry_run_needs_no_key_sends_nothing_and_prices_what_it_counts(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPING_DRY_RUN_UNSET_KEY", raising=False)
    write_project(tmp_path, PRICED.replace("http://127.0.0.1:9/v1", "https://api.openai.com/v1"))
    (tmp_path / "pipelines" / "two.py").write_text(TWO_MODELS)
    result = isf(tmp_path, "pipeline", "run", "two", "--dry-run", "--answer-tokens", "writer=100")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "dry run over 5 records; nothing was sent" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1] in (["judge"], ["writer"])}
    # judge: 5 requests of ~105 estimated tokens, answers capped at its max_tokens (50 < the default 256)
    assert rows["judge"][:2] == ["5", "0"] and rows["judge"][3] == "250"
    assert rows["writer"][:2] == ["5", "0"] and rows["writer"][3] == "500"
    judge_in = int(rows["judge"][2].replace(",", ""))
    judge_cost = (judge_in * 0.15 + 250 * 0.60) / 1e6
    assert rows["judge"][4] == f"${judge_cost:,.4f}" and rows["judge"][5] == f"${judge_cost / 2:,.4f}"
    assert "built-in list price of gpt-4o-mini" in out and "prices: shaping.toml models.writer" in out
    assert "answers of 100 tokens (--answer-tokens)" in out
    assert not (tmp_path / "training" / "data").exists()
    # a server that is not there was never asked (a real run fails on the key first)
    assert "SHAPING_DRY_RUN_UNSET_KEY is not set" in isf(tmp_path, "pipeline", "run", "two").stderr


def test_unknown_prices_are_named_and_left_out_of_the_total(tmp_path):
    write_project(tmp_path, PRICED)  # gpt-4o-mini behind 127.0.0.1: not OpenAI's prices
    (tmp_path / "pipelines" / "two.py").write_text(TWO_MODELS)
    result = isf(tmp_path, "pipeline", "run", "two", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "no price for judge: their cost is not in the total" in result.stdout.replace("\n", " ")
    bad = isf(tmp_path, "pipeline", "run", "two", "--dry-run", "--answer-tokens", "writer=lots")
    assert bad.returncode == 1 and "--answer-tokens: expected N or MODEL=N" in bad.stderr


def test_answer_lengths_come_from_the_cache_when_it_has_them(tmp_path):
    project = write_project(tmp_path)
    (tmp_path / "pipelines" / "two.py").write_text(TWO_MODELS.replace('"judge"', '"writer"'))
    cls = discover(project)["two"].cls
    run_pipeline(cls(project), limit=2)
    with sqlite3.connect(project.cache_dir / "requests.sqlite") as db:
        tokens = [json.loads(r)["usage"]["completion_tokens"] for (r,) in db.execute("SELECT response FROM answers")]
    estimate = dry_run_pipeline(cls(project))
    (writer,) = estimate.models
    mean = round(sum(tokens) / len(tokens))
    assert (writer.requests, writer.cached) == (10, 4)
    assert writer.answer_tokens.startswith(f"{mean} tokens (the mean of 4 cached answers)")
    assert writer.completion_tokens == 6 * mean


# -- the cost cap -----------------------------------------------------------------------------

CAPPED = """
[models.judge]
provider = "mock"
model = "mock-judge"
price_per_million_input = 1000.0
price_per_million_output = 1000.0
[models.judge.params]
max_tokens = 40
[models.judge.options]
latency_s = 0.02
"""

MANY = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Many(Pipeline):
    name = "many"
    judge = Pipeline.model_dep("judge")

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(40)])

    def task(self, record):
        first = yield model_request(f"first step of {record['id']}", model=self.judge)
        second = yield model_request(f"second step of {record['id']}", model=self.judge)
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": first.get_text()}, second.as_message()])
'''


def manifest(root, name):
    return json.loads((root / "training" / "data" / f"{name}.manifest.json").read_text())


def test_the_cap_stops_taking_records_and_the_next_run_resumes_from_the_cache(tmp_path):
    write_project(tmp_path, CAPPED)
    (tmp_path / "pipelines" / "many.py").write_text(MANY)
    capped = isf(tmp_path, "pipeline", "run", "many", "--max-cost", "0.5")
    assert capped.returncode == 3, capped.stderr
    assert "stopped: pipeline 'many' stopped at the cost cap of $0.50" in capped.stderr
    first = manifest(tmp_path, "many")
    done = first["counts"]["records"]
    assert 0 < done < 40 and first["counts"]["samples"] == done and first["max_cost_usd"] == 0.5
    assert first["stopped"].startswith("stopped at the cost cap of $0.50") and f"{done} of 40 records" in first["stopped"]
    assert len(read_jsonl(tmp_path / "training" / "data" / "many.jsonl")) == done
    spent = first["usage"]["judge"]["cost_usd"]
    per_record = spent / done  # 2 requests, each 7 + 8 tokens at $1,000 a million: $0.03
    assert per_record == pytest.approx(0.03)
    # it stopped when one more record would have passed the cap (here: all records cost the
    # same, and what the running ones were yet to spend was counted, so it stays within)
    assert 0.5 - per_record < spent <= 0.5
    status = isf(tmp_path, "pipeline", "status", "many")
    assert "many: PARTIAL" in status.stdout and "stopped at the cost cap" in status.stdout
    # the next run (no cap) pays only for the records not done
    rest = isf(tmp_path, "pipeline", "run", "many")
    assert rest.returncode == 0, rest.stderr
    second = manifest(tmp_path, "many")
    assert second["counts"]["samples"] == 40 and second["stopped"] is None
    assert second["usage"]["judge"]["cached"] == 2 * done and second["usage"]["judge"]["requests"] == 80
    assert "many: CURRENT (40 samples)" in isf(tmp_path, "pipeline", "status", "many").stdout


def test_the_first_record_runs_whatever_the_cap_its_cost_is_not_known_before(tmp_path):
    write_project(tmp_path, CAPPED)
    (tmp_path / "pipelines" / "many.py").write_text(MANY)
    tiny = isf(tmp_path, "pipeline", "run", "many", "--max-cost", "0.000001")
    assert tiny.returncode == 3 and "1 of 40 records done" in tiny.stderr
    assert manifest(tmp_path, "many")["counts"]["samples"] == 1


def test_a_cap_needs_prices_and_a_positive_amount(tmp_path):
    write_project(tmp_path, CAPPED + '\n[models.other]\nprovider = "openai"\nmodel = "x"\n'
                                     'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "K"\n')
    (tmp_path / "pipelines" / "many.py").write_text(MANY.replace('judge = Pipeline.model_dep("judge")',
                                                                 'judge = Pipeline.model_dep("other")'))
    unpriced = isf(tmp_path, "pipeline", "run", "many", "--max-cost", "5")
    assert unpriced.returncode == 1
    assert "the cost cap (--max-cost, max_cost_usd) needs prices: model 'other' has none" in unpriced.stderr
    zero = isf(tmp_path, "pipeline", "run", "many", "--max-cost", "0")
    assert zero.returncode == 1 and "--max-cost must be more than 0" in zero.stderr
    assert not (tmp_path / "training" / "data" / "many.jsonl").exists()


def test_max_cost_usd_on_the_class(tmp_path):
    with pytest.raises(PipelineDefinitionError, match="max_cost_usd must be a positive number"):
        type("Bad", (Pipeline,), {"max_cost_usd": -1})
    write_project(tmp_path, CAPPED)
    (tmp_path / "pipelines" / "many.py").write_text(MANY.replace('name = "many"', 'name = "many"\n    max_cost_usd = 0.3'))
    result = isf(tmp_path, "pipeline", "run", "many")
    assert result.returncode == 3 and "cost cap of $0.30" in result.stderr
    assert manifest(tmp_path, "many")["max_cost_usd"] == 0.3


OVERLAP = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request

RUNNING = {"now": 0, "most": 0, "first_alone": None}


class Overlap(Pipeline):
    name = "overlap"
    judge = Pipeline.model_dep("judge")
    workers = 8

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(24)])

    def task(self, record):
        RUNNING["now"] += 1
        RUNNING["most"] = max(RUNNING["most"], RUNNING["now"])
        if record["id"] == "0":
            alone = RUNNING["now"] == 1
        a = yield model_request(f"one {record['id']}", model=self.judge)
        b = yield model_request(f"two {record['id']}", model=self.judge)
        if record["id"] == "0":
            RUNNING["first_alone"] = alone and RUNNING["most"] == 1
        RUNNING["now"] -= 1
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": "x"}, b.as_message()])
'''


@pytest.mark.parametrize("priced", [False, True])
def test_records_still_run_side_by_side_under_a_cap(tmp_path, priced):
    toml = CAPPED if priced else CAPPED.replace("price_per_million_input = 1000.0\nprice_per_million_output = 1000.0\n", "")
    project = write_project(tmp_path, toml)
    (tmp_path / "pipelines" / "overlap.py").write_text(OVERLAP)
    cls = discover(project)["overlap"].cls
    running = __import__("sys").modules[cls.__module__].RUNNING
    result = run_pipeline(cls(project), max_cost=1000.0)
    assert result.manifest.counts.samples == 24 and result.stopped is None
    assert running["most"] > 1  # not one record at a time
    # a priced model: the first record runs alone, until what a record costs is known
    assert running["first_alone"] is priced


def test_one_cap_for_several_pipelines_and_what_failed_counts(tmp_path):
    write_project(tmp_path, CAPPED)
    for name in ("a", "b", "c"):
        (tmp_path / "pipelines" / f"{name}.py").write_text(
            MANY.replace('name = "many"', f'name = "{name}"').replace("class Many", f"class {name.upper()}")
            .replace("range(40)", "range(10)"))
    result = isf(tmp_path, "pipeline", "run", "a", "b", "c", "--max-cost", "0.5")
    assert result.returncode == 3, result.stderr
    spent = [manifest(tmp_path, n)["usage"]["judge"]["cost_usd"] for n in ("a", "b")]
    assert spent[0] == pytest.approx(0.3)  # a: 10 records at $0.03
    assert manifest(tmp_path, "b")["max_cost_usd"] == pytest.approx(0.2)  # what a left of the cap
    assert sum(spent) <= 0.5 + 1e-9 and manifest(tmp_path, "b")["stopped"]
    assert "c: not run (the cost cap stopped b)" in result.stderr
    assert not (tmp_path / "training" / "data" / "c.jsonl").exists()


def test_a_dry_run_reports_a_run_that_reads_its_stand_in_answers(tmp_path):
    write_project(tmp_path, CAPPED)
    (tmp_path / "pipelines" / "parse.py").write_text(MANY.replace('name = "many"', 'name = "parse"').replace(
        "    def run(self):\n", "    def run(self):\n        import json\n"
        "        json.loads(self.query(self.judge, 'facts as JSON').get_text())\n"))
    result = isf(tmp_path, "pipeline", "run", "parse", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "run() stopped on a stand-in answer: JSONDecodeError" in out
    assert out.split("judge ")[1].split()[:2] == ["1", "0"]  # the query was counted
    bad = isf(tmp_path, "pipeline", "run", "parse", "--dry-run", "-o", "x.jsonl", "--max-cost", "3")
    assert bad.returncode == 1 and "--dry-run writes and spends nothing: leave out -o, --max-cost" in bad.stderr
