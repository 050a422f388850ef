"""Checks before training: each checklist rule on data built to fail it, the CLI, the report."""

import shutil
from pathlib import Path

import pytest

from shaping.output import OutputPaths
from shaping.quality import Dataset, Thresholds, run_checks
from shaping.quality.checks import distinct_2, role_order_ok
from tests.conftest import write_project
from tests.test_cli import isf

LIMITS = Thresholds(min_samples=3)


def sample(i, response=None, prompt=None, messages=None):
    prompt = prompt or f"question number {i} about topic {i * 7}"
    response = f"answer {i}: the {i}th reply talks about item {i * 3} in detail" if response is None else response
    return {"id": str(i), "messages": messages or [{"role": "user", "content": prompt},
                                                   {"role": "assistant", "content": response}]}


def dataset(samples, errors=()):
    return Dataset("crafted", OutputPaths.for_samples(Path("/nowhere/crafted.jsonl")), list(samples), list(errors))


def failing(data, limits=LIMITS):
    return {c.name for c in run_checks(data, limits) if not c.passed}


GOOD = [sample(i) for i in range(20)]


def test_a_good_data_set_passes_everything():
    assert failing(dataset(GOOD)) == set()


@pytest.mark.parametrize("name, data", [
    ("volume", dataset(GOOD[:2])),
    ("empty responses", dataset(GOOD + [sample(99, response="   ")])),
    ("error-like responses", dataset(GOOD[:10] + [sample(50, response="I'm sorry, but as an AI I cannot do that.")])),
    ("error-like responses", dataset(GOOD[:10] + [sample(51, response='{"error": {"message": "Rate limit reached"}}')])),
    ("exact duplicates", dataset(GOOD + [GOOD[0]])),
    ("near duplicates", dataset(GOOD + [sample(100 + i, response="Answer 1:   the 1th reply talks about item 3 in DETAIL!")
                                        for i in range(3)])),
    ("diversity (distinct-2)", dataset([sample(i, response="same words " * 5) for i in range(20)])),
    ("length distribution", dataset(GOOD[:10] + [sample(60 + i, response="ok") for i in range(3)])),
    ("role order", dataset(GOOD + [sample(70, messages=[{"role": "assistant", "content": "hi"},
                                                        {"role": "user", "content": "there"}])])),
    ("error rate", dataset(GOOD, errors=[{"error": "api_error", "id": "x", "message": "m"}] * 2)),
])
def test_each_rule_fails_on_data_made_to_fail_it(name, data):
    assert name in failing(data)


def test_helpers():
    assert distinct_2(["a b c", "a b d"]) == pytest.approx(3 / 4)
    assert role_order_ok([{"role": "system"}, {"role": "user"}, {"role": "assistant"}])
    assert not role_order_ok([{"role": "user"}, {"role": "assistant"}, {"role": "user"}])
    assert not role_order_ok([])


PIPELINE = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

class Small(Pipeline):
    name = "small"
    quality = {QUALITY}
    judge = Pipeline.model_dep("judge")

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(12)])

    def task(self, record):
        answer = yield model_request(f"tell me about item {record['id']} please", model=self.judge)
        if record["id"] == "5":
            raise PipelineError("judge refused", error_type="refused")
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": f"item {record['id']}"}, {"role": "assistant", "content": answer.get_text()}])
'''


@pytest.fixture
def small(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", '{"min_samples": 5, "max_error_rate": 0.1}'))
    assert isf(tmp_path, "pipeline", "run", "small", "-q").returncode == 0
    return tmp_path


def test_validate_cli_uses_the_pipelines_thresholds(small):
    result = isf(small, "pipeline", "validate", "small")
    assert result.returncode == 0, result.stdout
    assert "all 9 checks passed" in result.stdout
    (small / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", "{}"))
    result = isf(small, "pipeline", "validate", "small")
    assert result.returncode == 1
    assert "FAIL  volume" in result.stdout and "11 samples" in result.stdout and "error rate" in result.stdout
    (small / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", '{"min_sample": 5}'))
    result = isf(small, "pipeline", "validate", "small")
    assert result.returncode == 1 and "pipeline 'small': quality: min_sample: Extra inputs" in result.stderr


def test_sample_and_errors_cli(small):
    result = isf(small, "pipeline", "sample", "small", "-n", "3", "--seed", "1")
    assert result.returncode == 0 and "3 of 11 samples, seed 1" in result.stdout
    assert result.stdout == isf(small, "pipeline", "sample", "small", "-n", "3", "--seed", "1").stdout
    full = isf(small, "pipeline", "sample", "small", "-n", "1", "--full").stdout
    assert "user: item" in full and "assistant: [mock-judge" in full
    errors = isf(small, "pipeline", "errors", "small").stdout
    assert "small: 1 failed records" in errors and "refused  1" in errors and "e.g. 5: judge refused" in errors


def test_commands_on_a_pipeline_never_run(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", "{}"))
    result = isf(tmp_path, "pipeline", "validate", "small")
    assert result.returncode == 1 and "has no output yet" in result.stderr and "isf pipeline run small" in result.stderr


def test_report_is_self_contained(small):
    result = isf(small, "pipeline", "report", "small")
    assert result.returncode == 0, result.stderr
    html = (small / "training/data/small.report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert '<div class="figure" id="count-samples">11</div>' in html
    assert "refused" in html and "Checklist" in html and "<svg" in html


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test`; not on this machine")
def test_report_in_a_real_browser(small):
    from playwright.sync_api import sync_playwright

    isf(small, "pipeline", "report", "small")
    report = small / "training/data/small.report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            blocked = []
            page.on("request", lambda r: blocked.append(r.url) if not r.url.startswith("file://") else None)
            page.goto(report.as_uri())
            assert page.inner_text("#count-samples") == "11"
            assert page.inner_text("#count-errors") == "1"
            assert "PASS" in page.inner_text("#checklist")
            first = page.locator("details.sample").first
            step = first.locator(".step").first
            assert not step.is_visible()
            first.locator("summary").click()
            assert step.is_visible()
            assert "step 0" in step.inner_text() and "tell me about item 0 please" in step.inner_text()
            assert blocked == []  # nothing fetched from the network
        finally:
            browser.close()
