"""Runs that tell the truth: a failed run exits non-zero, keeps the good outputs, shows FAILED,
and the next run retries it without paying again for what succeeded."""

import hashlib
import json

import pytest

from tests.conftest import read_errors, read_jsonl, write_project
from shaping.testing import Fault, LoopbackServer
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
    assert len(read_errors(tmp_path / "training" / "data" / "errors" / "ask.failed.jsonl")) == 8

    status = isf(tmp_path, "pipeline", "status")
    assert "ask: FAILED" in status.stdout and "last run failed: authentication failed" in status.stdout
    assert isf(tmp_path, "pipeline", "status", "--check").returncode == 1

    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)  # fixed: a plain run retries it, as does --stale
    rerun = isf(tmp_path, "pipeline", "run", "--stale")
    assert rerun.returncode == 0, rerun.stderr
    assert "nothing to do" not in rerun.stdout
    assert "ask: CURRENT (8 samples)" in isf(tmp_path, "pipeline", "status").stdout
    assert not (tmp_path / "training" / "data" / "ask.failed.json").exists()
    assert not (tmp_path / "training" / "data" / "errors" / "ask.failed.jsonl").exists()


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


# -- broken neighbours, argument checks, keys, duplicate ids, helpers' errors ---------------------

MOCK_PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Good(Pipeline):
    name = "good"
    judge = Pipeline.model_dep("judge")
    records = [{"id": "a"}, {"id": "b"}]

    def run(self):
        return self.run_task(self.task, records=self.records)

    def task(self, record):
        answer = yield model_request(f"about {record['id']}", model=self.judge)
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": f"about {record['id']}"}, answer.as_message()])
'''


def mock_project(root, pipeline=MOCK_PIPELINE, toml=None):
    project = write_project(root, toml) if toml else write_project(root)
    (root / "pipelines" / "good.py").write_text(pipeline)
    return project


def one_error_line(result):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_a_broken_pipeline_file_does_not_stop_the_others(tmp_path):
    mock_project(tmp_path)
    (tmp_path / "pipelines" / "b.py").write_text("from shaping.pipeline import Pipeline\n\nx = 1\ny = undefined_name\n")
    listed = isf(tmp_path, "pipeline", "list")
    assert listed.returncode == 0 and "good" in listed.stdout
    assert "BROKEN pipelines/b.py:4: failed to import: NameError" in listed.stderr
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    status = isf(tmp_path, "pipeline", "status")
    assert "good: CURRENT (2 samples)" in status.stdout and "BROKEN pipelines/b.py:4" in status.stdout
    assert isf(tmp_path, "pipeline", "status", "--check").returncode == 1
    assert isf(tmp_path, "pipeline", "status", "--check", "good").returncode == 0
    unknown = isf(tmp_path, "pipeline", "run", "b")
    assert "unknown pipeline 'b'" in one_error_line(unknown) and "pipelines/b.py:4" in unknown.stderr


def test_argument_checks_come_before_nothing_to_do(tmp_path):
    mock_project(tmp_path)
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    bad = isf(tmp_path, "pipeline", "run", "good", "--workers", "0")
    assert one_error_line(bad) == "error: --workers must be at least 1, got 0"


def test_changing_only_the_format_rewrites_from_the_cache(tmp_path):
    mock_project(tmp_path)
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    data = tmp_path / "training" / "data"
    assert "steps" in read_jsonl(data / "good.jsonl")[0]
    plain = isf(tmp_path, "pipeline", "run", "good", "--no-annotate")
    assert plain.returncode == 0 and "nothing to do" not in plain.stdout
    assert list(read_jsonl(data / "good.jsonl")[0]) == ["id", "messages"]
    usage = json.loads((data / "good.manifest.json").read_text())["usage"]["judge"]
    assert usage["requests"] == usage["cached"] == 2  # both answers from the cache: nothing paid again


def test_a_missing_key_matters_only_when_the_model_sends(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPING_UNSET_KEY", raising=False)
    toml = ('[models.judge]\nprovider = "openai"\nmodel = "gpt-4o-mini"\nbase_url = "http://127.0.0.1:9/v1"\n'
            'api_key_env = "SHAPING_UNSET_KEY"\n')
    quiet = MOCK_PIPELINE.replace('records = [{"id": "a"}, {"id": "b"}]', "records = []")
    mock_project(tmp_path, quiet, toml)
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0  # sends nothing: needs no key
    (tmp_path / "pipelines" / "good.py").write_text(MOCK_PIPELINE)
    line = one_error_line(isf(tmp_path, "pipeline", "run", "good"))
    assert "environment variable SHAPING_UNSET_KEY is not set" in line and "models.judge.api_key_env" in line


def test_duplicate_record_ids_are_refused_before_any_request(tmp_path):
    mock_project(tmp_path, MOCK_PIPELINE.replace('{"id": "b"}', '{"id": "b"}, {"id": "c"}, {"id": "b"}'))
    line = one_error_line(isf(tmp_path, "pipeline", "run", "good"))
    assert "records 1 and 3 have the same id 'b'" in line
    assert not (tmp_path / "training" / "data" / "good.jsonl").exists()
    assert "good" not in isf(tmp_path, "cache", "stats").stdout  # nothing was asked, so nothing is stored


def test_reading_a_folder_file_dep_is_one_line(tmp_path):
    (tmp_path / "words").mkdir()
    pipeline = MOCK_PIPELINE.replace('    judge = Pipeline.model_dep("judge")',
                                     '    judge = Pipeline.model_dep("judge")\n    words = Pipeline.file_dep("words")')
    pipeline = pipeline.replace("        return self.run_task(", "        self.words.read()\n        return self.run_task(")
    mock_project(tmp_path, pipeline)
    line = one_error_line(isf(tmp_path, "pipeline", "run", "good"))
    assert line.startswith("error: pipeline 'good': file_dep words: words is a folder")


# -- fingerprints: what changes answers, and only that --------------------------------------------

def test_options_are_in_the_fingerprint_and_the_cache_key(tmp_path):
    toml = '[models.judge]\nprovider = "mock"\nmodel = "m"\n[models.judge.options]\nreasoning = false\n'
    mock_project(tmp_path, toml=toml)
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    (tmp_path / "shaping.toml").write_text(toml.replace("reasoning = false", "reasoning = true"))
    status = isf(tmp_path, "pipeline", "status").stdout
    assert "good: STALE" in status and "model 'judge' config changed" in status
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    sample = read_jsonl(tmp_path / "training" / "data" / "good.jsonl")[0]
    assert sample["messages"][1]["reasoning_content"]  # answered anew, not replayed from the cache
    # pacing options change no answer: still CURRENT
    (tmp_path / "shaping.toml").write_text(toml.replace("reasoning = false", "reasoning = true\nlatency_s = 0.01"))
    assert "good: CURRENT" in isf(tmp_path, "pipeline", "status").stdout


def test_comments_and_formatting_do_not_make_a_pipeline_stale(tmp_path):
    mock_project(tmp_path)
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    path = tmp_path / "pipelines" / "good.py"
    path.write_text("# a comment\n" + path.read_text().replace("    def run(self):", "\n    def run(self):  # why\n"))
    assert "good: CURRENT" in isf(tmp_path, "pipeline", "status").stdout
    path.write_text(path.read_text().replace("about {record['id']}", "on {record['id']}"))
    assert "changed_code" in isf(tmp_path, "pipeline", "status", "--json").stdout


def test_one_pipeline_failing_does_not_stop_the_others_in_a_stale_run(tmp_path, monkeypatch):
    monkeypatch.delenv("SHAPING_UNSET_KEY", raising=False)
    toml = ('[models.judge]\nprovider = "mock"\nmodel = "m"\n[models.remote]\nprovider = "openai"\n'
            'model = "gpt-4o-mini"\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "SHAPING_UNSET_KEY"\n')
    mock_project(tmp_path, toml=toml)
    (tmp_path / "pipelines" / "a_remote.py").write_text(MOCK_PIPELINE.replace('"good"', '"a-remote"').replace(
        'model_dep("judge")', 'model_dep("remote")'))
    run = isf(tmp_path, "pipeline", "run", "--stale")
    assert run.returncode == 1
    assert "pipeline 'a-remote': model 'remote': environment variable SHAPING_UNSET_KEY is not set" in run.stderr
    assert "1 pipeline(s) failed: a-remote" in run.stderr
    assert "good: CURRENT (2 samples)" in isf(tmp_path, "pipeline", "status").stdout


def test_a_failure_in_run_itself_is_a_failed_run(tmp_path, server):
    pipeline = MOCK_PIPELINE.replace("        return self.run_task(",
                                     "        self.query(self.judge, 'set-up').get_text()\n        return self.run_task(")
    mock_project(tmp_path, pipeline, toml=model_toml("judge", server))
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    server.fail_when(lambda r: r.last_user == "set-up 2", Fault(status=400, message="bad [/x] request [type=x]"))
    (tmp_path / "pipelines" / "good.py").write_text(pipeline.replace("'set-up'", "'set-up 2'"))  # not in the cache
    line = one_error_line(isf(tmp_path, "pipeline", "run", "good"))
    assert "pipeline 'good' failed: run() failed: bad_request:" in line and "was kept" in line
    status = isf(tmp_path, "pipeline", "status")
    assert status.returncode == 0 and "good: FAILED" in status.stdout
    assert "bad [/x] request [type=x]" in status.stdout  # server text shown as text, not markup
    errors = isf(tmp_path, "pipeline", "errors", "good")
    assert errors.returncode == 0 and "good: FAILED" in errors.stdout


@pytest.mark.parametrize("copy", ["aa_copy.py", "zz_copy.py"])  # before and after good.py
def test_a_name_defined_in_two_files_runs_neither(tmp_path, copy):
    mock_project(tmp_path)
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0
    output = tmp_path / "training" / "data" / "good.jsonl"
    before = output.read_bytes()
    (tmp_path / "pipelines" / copy).write_text(
        MOCK_PIPELINE.replace("class Good", "class Copy").replace('[{"id": "a"}, {"id": "b"}]', "[]"))
    (tmp_path / "pipelines" / "other.py").write_text(
        MOCK_PIPELINE.replace("class Good", "class Other").replace('name = "good"', 'name = "other"'))
    listed = isf(tmp_path, "pipeline", "list")
    assert listed.returncode == 0 and "other" in listed.stdout and "good" not in listed.stdout
    both = "pipeline name 'good' is defined in pipelines/"
    for file in (copy, "good.py"):
        assert f"BROKEN pipelines/{file}: {both}" in listed.stderr
    assert "give all but one another name" in listed.stderr
    line = one_error_line(isf(tmp_path, "pipeline", "run", "good", "--force"))
    assert line.startswith("error: pipeline name 'good' is defined in pipelines/") and "another name" in line
    assert output.read_bytes() == before  # which file would have run is not left to their order
    assert isf(tmp_path, "pipeline", "run", "other").returncode == 0
    assert isf(tmp_path, "pipeline", "status", "--check").returncode == 1


def test_a_class_under_two_names_is_one_pipeline(tmp_path):
    mock_project(tmp_path, MOCK_PIPELINE + "\n\nAlias = Good\n")
    listed = isf(tmp_path, "pipeline", "list")
    assert listed.returncode == 0 and "good" in listed.stdout and "BROKEN" not in listed.stderr
    assert isf(tmp_path, "pipeline", "run", "good").returncode == 0


def test_a_file_whose_two_names_are_taken_names_both(tmp_path):
    two = MOCK_PIPELINE + "\n\nclass Second(Good):\n    name = \"second\"\n"
    mock_project(tmp_path, two)
    (tmp_path / "pipelines" / "good_v2.py").write_text(two)
    listed = isf(tmp_path, "pipeline", "list")
    line = next(l for l in listed.stderr.splitlines() if l.startswith("BROKEN pipelines/good.py"))
    assert "pipeline name 'good' is defined in" in line and "pipeline name 'second' is defined in" in line
    assert "pipeline name 'second' is defined in" in one_error_line(isf(tmp_path, "pipeline", "run", "second"))
