"""Runs that tell the truth: a failed run exits non-zero, keeps the good outputs, shows FAILED,
and the next run retries it without paying again for what succeeded."""

import hashlib

import pytest

from tests.conftest import read_errors, read_jsonl, write_project
from tests.servers import Fault, LoopbackServer
from tests.test_cli import isf
from tests.test_http_providers import KEY, model_toml

PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Ask(Pipeline):
    name = "ask"
    annotated = False
    judge = Pipeline.model_dep("m")
    {quality}

    def run(self):
        return self.run_task(self.task, records=[{{"id": f"r{{i}}"}} for i in range(8)])

    def task(self, record):
        answer = yield model_request(f"question {{record['id']}}", model=self.judge)
        return TrainingSample(id=record["id"], messages=[
            {{"role": "user", "content": f"question {{record['id']}}"}}, answer.as_message()])
'''


def make(root, server, quality=""):
    write_project(root, model_toml("m", server))
    (root / "pipelines" / "ask.py").write_text(PIPELINE.format(quality=quality))


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    with LoopbackServer("openai", api_key=KEY) as s:
        yield s


def test_a_run_with_a_wrong_key_fails_keeps_the_output_and_is_retried(tmp_path, server, monkeypatch):
    make(tmp_path, server)
    assert isf(tmp_path, "pipeline", "run", "ask").returncode == 0
    output = tmp_path / "training" / "data" / "ask.jsonl"
    good = sha(output)

    monkeypatch.setenv("SHAPING_TEST_KEY", "sk-wrong-key-0000000000")
    # a new prompt: not in the request cache
    (tmp_path / "pipelines" / "ask.py").write_text(PIPELINE.format(quality="").replace("question", "Question"))
    failed = isf(tmp_path, "pipeline", "run", "ask")
    assert failed.returncode == 1
    line = [l for l in failed.stderr.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "pipeline 'ask' failed: authentication failed" in line[0]
    assert "HTTP 401" in line[0] and "check SHAPING_TEST_KEY" in line[0] and "sk-wrong" not in failed.stderr
    assert sha(output) == good  # the good output is untouched
    assert len(read_errors(tmp_path / "training" / "data" / "ask.failed.errors.jsonl")) == 8

    status = isf(tmp_path, "pipeline", "status")
    assert "ask: FAILED" in status.stdout and "last run failed: authentication failed" in status.stdout
    assert isf(tmp_path, "pipeline", "status", "--check").returncode == 1

    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)  # fixed: a plain run retries it, as does --stale
    rerun = isf(tmp_path, "pipeline", "run", "--stale")
    assert rerun.returncode == 0, rerun.stderr
    assert "nothing to do" not in rerun.stdout
    assert "ask: CURRENT (8 samples)" in isf(tmp_path, "pipeline", "status").stdout
    assert not (tmp_path / "training" / "data" / "ask.failed.json").exists()
    assert not (tmp_path / "training" / "data" / "ask.failed.errors.jsonl").exists()


def test_an_error_rate_over_the_threshold_fails_and_only_failures_are_sent_again(tmp_path, server):
    make(tmp_path, server, quality='quality = {"max_error_rate": 0.2}')
    server.fail_when(lambda r: r.last_user in ("question r1", "question r2", "question r3"), Fault(status=400))
    failed = isf(tmp_path, "pipeline", "run", "ask")
    assert failed.returncode == 1
    assert "38% of records failed, over max_error_rate 20%" in failed.stderr
    assert "bad_request 3" in failed.stderr
    assert not (tmp_path / "training" / "data" / "ask.jsonl").exists()  # nothing half-good in its place
    assert "ask: FAILED" in isf(tmp_path, "pipeline", "status").stdout

    server.reset()
    rerun = isf(tmp_path, "pipeline", "run", "ask")
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(r.last_user for r in server.received) == ["question r1", "question r2", "question r3"]
    assert len(read_jsonl(tmp_path / "training" / "data" / "ask.jsonl")) == 8


def test_errors_under_the_threshold_are_a_good_run(tmp_path, server):
    make(tmp_path, server)  # default: a run fails when more than half its records failed
    server.fail_when(lambda r: r.last_user == "question r1", Fault(status=400))
    run = isf(tmp_path, "pipeline", "run", "ask")
    assert run.returncode == 0, run.stderr
    assert "ask: CURRENT (7 samples)" in isf(tmp_path, "pipeline", "status").stdout


def test_a_server_that_is_down_fails_the_run(tmp_path, server):
    make(tmp_path, server)
    server.fail_when(lambda r: True, Fault(status=503))
    toml = (tmp_path / "shaping.toml").read_text().replace("retry_max_wait_s = 5", "retry_max_wait_s = 0\nmax_retries = 1")
    (tmp_path / "shaping.toml").write_text(toml)
    failed = isf(tmp_path, "pipeline", "run", "ask")
    assert failed.returncode == 1 and "every record failed (8 of 8 records: server_error 8)" in failed.stderr
    assert not (tmp_path / "training" / "data" / "ask.manifest.json").exists()
