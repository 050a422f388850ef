"""Run history: one line per run, good or failed, in training/.history/NAME.jsonl; `isf pipeline
history NAME` shows them; the report plots success rate over runs."""

import json
import re

from tests.conftest import write_project
from tests.test_cli import isf

PIPELINE = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

class Hist(Pipeline):
    name = "hist"
    judge = Pipeline.model_dep("judge")
    flaky = Pipeline.model_dep("flaky")
    quality = {"max_error_rate": 0.5}
    failing = FAILING

    def run(self):
        if self.failing == "run":
            self.query(self.flaky, "FAIL before any record").get_text()
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(10)])

    def task(self, record):
        if self.failing == "contract" and record["id"] == "3":
            yield "not a request"
        model = self.flaky if int(record["id"]) < self.failing_count() else self.judge
        answer = yield model_request(f"FAIL item {record['id']}" if model is self.flaky else f"item {record['id']}",
                                     model=model)
        if record["id"] == "9":
            raise PipelineError("the answer did not parse", error_type="parse_error")
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": "q"},
                                                         {"role": "assistant", "content": answer.get_text()}])

    def failing_count(self):
        return {"none": 0, "some": 2, "most": 8}.get(self.failing, 0)
'''


def write(root, failing):
    (root / "pipelines" / "hist.py").write_text(PIPELINE.replace("FAILING", repr(failing)))


def history(root):
    return [json.loads(line) for line in (root / "training/.history/hist.jsonl").read_text().splitlines()]


def test_every_run_good_or_failed_adds_one_line_and_history_shows_them(tmp_path):
    write_project(tmp_path)
    write(tmp_path, "some")
    assert isf(tmp_path, "pipeline", "run", "hist", "-q").returncode == 0
    [good] = history(tmp_path)
    assert good["status"] == "ok" and good["failure"] is None and good["output"] == "training/data/hist.jsonl"
    assert (good["records"], good["samples"], good["error_count"]) == (10, 7, 3)
    assert good["errors"] == {"mock_error": 2, "parse_error": 1} and good["error_rate"] == 0.3
    manifest = json.loads((tmp_path / "training/data/hist.manifest.json").read_text())
    usage = manifest["usage"]
    assert good["prompt_tokens"] == sum(u["prompt_tokens"] for u in usage.values()) > 0
    assert good["completion_tokens"] == sum(u["completion_tokens"] for u in usage.values()) > 0
    assert good["requests"] == 10 and good["duration_s"] == manifest["duration_s"]
    assert good["started_at"] == manifest["started_at"].replace("Z", "+00:00")
    first_line = (tmp_path / "training/.history/hist.jsonl").read_text()

    write(tmp_path, "most")  # 9 of 10 records fail: the run fails, its outputs are not put in place
    assert isf(tmp_path, "pipeline", "run", "hist", "-q").returncode == 1
    write(tmp_path, "run")  # run() itself fails before any record
    assert isf(tmp_path, "pipeline", "run", "hist", "-q").returncode == 1
    write(tmp_path, "contract")  # a task breaks its contract: the run stops
    assert isf(tmp_path, "pipeline", "run", "hist", "-q").returncode == 1
    write(tmp_path, "none")
    assert isf(tmp_path, "pipeline", "run", "hist", "-q", "--limit", "4").returncode == 0
    assert isf(tmp_path, "pipeline", "run", "hist", "-q").returncode == 0  # PARTIAL before: runs again

    runs = history(tmp_path)
    assert (tmp_path / "training/.history/hist.jsonl").read_text().startswith(first_line)  # appended only
    assert [r["status"] for r in runs] == ["ok", "failed", "failed", "failed", "partial", "ok"]
    most, in_run, contract, partial, last = runs[1:]
    assert (most["records"], most["samples"], most["errors"]) == (10, 1, {"mock_error": 8, "parse_error": 1})
    assert most["failure"].startswith("pipeline 'hist' failed: 90% of records failed, over max_error_rate 50%")
    assert in_run["records"] == 0 and "run() failed: mock_error" in in_run["failure"]
    assert contract["failure"].startswith("TaskContractError: ") and "yielded str 'not a request'" in contract["failure"]
    assert partial["limit"] == 4 and partial["records"] == 4
    assert (last["records"], last["samples"], last["errors"]) == (10, 9, {"parse_error": 1})

    result = isf(tmp_path, "pipeline", "history", "hist")
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if re.match(r"^\d+ +\d{4}-\d\d-\d\d \d\d:\d\d", line)]
    assert len(rows) == 6, result.stdout
    assert re.match(r"^1 +\S+ \S+ +ok +10 +7 +3 \(30\.0%\): mock_error 2, parse_error 1 +[\d,]+ / [\d,]+ +- +\d+\.\ds",
                    rows[0]), rows[0]
    assert re.match(r"^2 .* failed +10 +1 +9 \(90\.0%\): mock_error 8, parse_error 1", rows[1]), rows[1]
    assert re.match(r"^5 .* partial +4 +4 +0 ", rows[4]), rows[4]
    assert "run 2: pipeline 'hist' failed: 90% of records failed" in result.stdout
    assert "run 3: pipeline 'hist' failed: run() failed: mock_error" in result.stdout
    assert "6 runs recorded in training/.history/hist.jsonl" in result.stdout

    last_two = isf(tmp_path, "pipeline", "history", "hist", "-n", "2")
    assert "6 runs recorded" in last_two.stdout and "the latest 2 shown" in last_two.stdout
    assert re.search(r"^5 ", last_two.stdout, re.M) and not re.search(r"^4 ", last_two.stdout, re.M)
    as_json = isf(tmp_path, "pipeline", "history", "hist", "--json", "-n", "1")
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [last]

    # the report plots success over the runs: one point each, the failed ones marked
    assert isf(tmp_path, "pipeline", "report", "hist").returncode == 0
    html = (tmp_path / "training/data/hist.report.html").read_text()
    plot = re.search(r'<svg id="history-plot".*?</svg>', html, re.S).group(0)
    points = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="4" fill="(#[0-9a-f]+)"><title>([^<]*)</title>', plot)
    assert len(points) == 6 and "<polyline" in plot
    assert [fill == "#b3261e" for _, _, fill, _ in points] == [False, True, True, True, False, False]
    heights = [float(cy) for _, cy, _, _ in points]
    assert heights[0] == 130 - 120 * 0.7 and heights[1] == 130 - 120 * 0.1 and heights[2] == 130  # 70%, 10%, none
    assert heights[5] == 130 - 120 * 0.9
    assert "run 1, " in points[0][3] and "70.0% (7 of 10 records), ok" in points[0][3]
    assert "success rate over the last 6 runs" in html


def test_history_of_a_pipeline_never_run_and_of_no_pipeline(tmp_path):
    write_project(tmp_path)
    write(tmp_path, "none")
    result = isf(tmp_path, "pipeline", "history", "hist")
    assert result.returncode == 0 and "hist: no runs recorded yet (training/.history/hist.jsonl)" in result.stdout
    result = isf(tmp_path, "pipeline", "history", "nope")
    assert result.returncode == 1 and result.stderr.startswith("error: unknown pipeline 'nope'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_run_stopped_before_its_first_request_is_no_run(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "hist.py").write_text(PIPELINE.replace("FAILING", "'none'").replace(
        'Pipeline.model_dep("judge")', 'Pipeline.model_dep("no-such-model")'))
    result = isf(tmp_path, "pipeline", "run", "hist", "-q")
    assert result.returncode == 1 and "unknown model 'no-such-model'" in result.stderr
    assert not (tmp_path / "training/.history/hist.jsonl").exists()


def test_the_report_without_a_history_has_no_plot(tmp_path):
    write_project(tmp_path)
    write(tmp_path, "none")
    assert isf(tmp_path, "pipeline", "run", "hist", "-q").returncode == 0
    (tmp_path / "training/.history/hist.jsonl").unlink()
    assert isf(tmp_path, "pipeline", "report", "hist").returncode == 0
    html = (tmp_path / "training/data/hist.report.html").read_text()
    assert "history-plot" not in html and "<svg" in html  # the histograms are still there


def test_a_history_that_cannot_be_written_never_replaces_the_runs_outcome(tmp_path, monkeypatch):
    """Whatever goes wrong writing the line (not only OSError), a good run stays good with a
    warning, and a failed run's own error is the one raised."""
    from types import SimpleNamespace

    import pytest

    import shaping.history as history_module
    from shaping.errors import RunFailedError
    from shaping.history import RunHistory

    def broken(path, entry):
        raise RuntimeError("the history store is in a bad mood")

    monkeypatch.setattr(history_module, "append", broken)
    pipeline = SimpleNamespace(name="hist", project=SimpleNamespace(root=tmp_path))
    result = SimpleNamespace(manifest=None, warnings=[])
    with RunHistory(pipeline, None) as history:
        history.result = result
    assert len(result.warnings) == 1 and "the run history" in result.warnings[0]
    assert "RuntimeError: the history store is in a bad mood" in result.warnings[0]

    with pytest.raises(RunFailedError, match="the run's own failure"):
        with RunHistory(pipeline, None):
            raise RunFailedError("the run's own failure")
    with pytest.raises(KeyError):
        with RunHistory(pipeline, None):
            raise KeyError("a bug in run()")


def test_an_error_of_shapings_own_in_run_is_a_failed_run_and_a_bad_set_is_no_run(tmp_path):
    """As the module says: the checks before a run starts record nothing; once run() is called,
    a ShapingError it raises (a missing file named by a parameter) is recorded as failed."""
    write_project(tmp_path)
    (tmp_path / "pipelines" / "hist.py").write_text(PIPELINE.replace("FAILING", "'none'").replace(
        "    def run(self):\n", "    prompt_file = 'prompts/there.md'\n\n    def run(self):\n"
                               "        self.read_project_file(self.prompt_file, 'prompt_file')\n"))
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "there.md").write_text("x")
    assert isf(tmp_path, "pipeline", "run", "hist", "-q", "--set", "nope=1").returncode == 1
    assert not (tmp_path / "training/.history/hist.jsonl").exists()
    missing = isf(tmp_path, "pipeline", "run", "hist", "-q", "--set", "prompt_file=prompts/gone.md")
    assert missing.returncode == 1 and "prompt_file: prompts/gone.md not found" in missing.stderr
    [failed] = history(tmp_path)
    assert failed["status"] == "failed" and "prompts/gone.md not found" in failed["failure"]
