"""The request cache: never pay twice, resume after kill -9 or Ctrl-C, bad cache and lock cases."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from shaping import run_pipeline
from shaping.config import Project
from shaping.discovery import discover
from shaping.dispatch.cache import RequestCache
from shaping.errors import OutputError, ShapingError
from shaping.lock import RunLock
from tests.conftest import write_project
from shaping.testing import LoopbackServer
from tests.test_cli import ISF

PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request

TOPICS = {topics!r}

class Twostep(Pipeline):
    name = "twostep"
    annotated = False
    workers = {workers}
    api = Pipeline.model_dep("api")
    other = Pipeline.model_dep("other")

    def run(self):
        return self.run_task(self.task, records=[{{"id": f"r{{i}}", "topic": t}} for i, t in enumerate(TOPICS)])

    def task(self, record):
        question = yield model_request(f"{{record['id']}} step0 ask about {{record['topic']}}", model=self.api)
        answer, check = yield [model_request(f"{{record['id']}} step1 {{question.get_text()}}", model=self.api),
                               model_request(f"{{record['id']}} step2 check", model=self.other)]
        return TrainingSample(id=record["id"], messages=[
            {{"role": "user", "content": question.get_text()}},
            {{"role": "assistant", "content": answer.get_text() + " / " + check.get_text()}}])

if __name__ == "__main__":
    Twostep().execute()
'''


def toml(server, temperature=0.1):
    return (f'[models.api]\nprovider = "openai"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
            f'retry_backoff_s = 0.01\n[models.api.params]\ntemperature = {temperature}\n'
            f'[models.other]\nprovider = "openai"\nmodel = "o"\nbase_url = "{server.base_url}"\n')


def make(root, server, topics, workers=64, temperature=0.1) -> Project:
    project = write_project(root, toml(server, temperature))
    (root / "pipelines" / "twostep.py").write_text(PIPELINE.format(topics=topics, workers=workers))
    return project


def run(root, **options):
    project = Project.load(root)
    return run_pipeline(discover(project)["twostep"].cls(project), **options)


def prompts(server):
    return [r.last_user for r in server.received]


@pytest.fixture
def server():
    with LoopbackServer("openai") as s:
        yield s


TOPICS = [f"topic {i}" for i in range(10)]


def test_a_second_run_sends_nothing_and_writes_the_same(tmp_path, server):
    make(tmp_path, server, TOPICS)
    first = run(tmp_path)
    assert len(server.received) == 30
    output = first.paths.samples.read_bytes()
    server.reset()
    second = run(tmp_path)
    assert server.received == []
    assert second.paths.samples.read_bytes() == output
    assert second.manifest.usage["api"].cached == 20 and second.manifest.usage["api"].prompt_tokens == 0


def test_changing_one_record_resends_only_that_record(tmp_path, server):
    make(tmp_path, server, TOPICS)
    run(tmp_path)
    server.reset()
    make(tmp_path, server, TOPICS[:3] + ["a new topic"] + TOPICS[4:])
    run(tmp_path)
    assert sorted(prompts(server)) == sorted(["r3 step0 ask about a new topic",
                                              "r3 step1 echo: r3 step0 ask about a new topic"])


def test_changing_params_resends_that_model_only(tmp_path, server):
    make(tmp_path, server, TOPICS)
    run(tmp_path)
    server.reset()
    make(tmp_path, server, TOPICS, temperature=0.7)
    run(tmp_path)
    assert len(server.received) == 20
    assert {r.body["model"] for r in server.received} == {"m"}


def test_no_cache_sends_everything(tmp_path, server):
    make(tmp_path, server, TOPICS)
    run(tmp_path)
    server.reset()
    run(tmp_path, use_cache=False)
    assert len(server.received) == 30


def test_failed_answers_are_not_cached(tmp_path, server):
    from shaping.testing import Fault
    make(tmp_path, server, TOPICS[:2])
    toml_path = tmp_path / "shaping.toml"
    toml_path.write_text(toml_path.read_text().replace("retry_backoff_s = 0.01", "retry_backoff_s = 0.01\nmax_retries = 0"))
    server.fail_when(lambda r: r.last_user.startswith("r1 step0"), Fault(status=500))
    first = run(tmp_path)
    assert first.manifest.counts.errors == {"server_error": 1}
    server.reset()
    second = run(tmp_path)
    assert prompts(server)[0] == "r1 step0 ask about topic 1" and len(server.received) == 3
    assert second.manifest.counts.samples == 2


def test_cache_stats_and_clear(tmp_path, server):
    make(tmp_path, server, TOPICS)
    run(tmp_path)
    env = {**os.environ, "COLUMNS": "200"}
    stats = subprocess.run([ISF, "cache", "stats"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "twostep: 30 answers" in stats.stdout
    cleared = subprocess.run([ISF, "cache", "clear", "twostep"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert "cleared 30 answers of twostep" in cleared.stdout
    server.reset()
    run(tmp_path)
    assert len(server.received) == 30


def test_a_cache_from_an_older_schema_is_kept_aside(tmp_path, server):
    make(tmp_path, server, TOPICS[:2])
    cache_dir = tmp_path / "training" / ".cache"
    cache_dir.mkdir(parents=True)
    old = sqlite3.connect(cache_dir / "requests.sqlite")
    old.execute("CREATE TABLE answers (key TEXT, value TEXT)")
    old.execute("INSERT INTO answers VALUES ('k', 'precious')")
    old.commit()
    old.close()
    result = run(tmp_path)
    assert result.manifest.counts.samples == 2
    assert "another version of shaping" in result.warnings[0]
    (kept,) = cache_dir.glob("requests.sqlite.v0.*.bak")
    assert sqlite3.connect(kept).execute("SELECT value FROM answers").fetchone() == ("precious",)


def test_a_file_that_is_not_a_database_is_kept_aside(tmp_path):
    (tmp_path / "requests.sqlite").write_bytes(b"this is not sqlite at all" * 100)
    cache = RequestCache(tmp_path)
    assert cache.moved_aside.name.startswith("requests.sqlite.unreadable.")
    assert cache.moved_aside.read_bytes().startswith(b"this is not sqlite")
    cache.close()


def test_a_second_run_at_once_is_refused(tmp_path, server):
    project = make(tmp_path, server, TOPICS[:2])
    (tmp_path / "training" / ".cache").mkdir(parents=True)
    with RunLock(project.cache_dir / "twostep.lock", "twostep"):
        with pytest.raises(ShapingError, match=r"pipeline 'twostep' is already running \(pid \d+, started"):
            run(tmp_path)
    assert run(tmp_path).manifest.counts.samples == 2  # the lock is gone with its holder


def test_an_output_folder_that_cannot_be_written(tmp_path, server):
    make(tmp_path, server, TOPICS[:2])
    (tmp_path / "training").mkdir(exist_ok=True)
    (tmp_path / "training" / "data").write_text("a file where the folder should be")
    with pytest.raises(OutputError, match="cannot create output folder"):
        run(tmp_path)
    assert len(server.received) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_a_read_only_output_folder(tmp_path, server):
    make(tmp_path, server, TOPICS[:2])
    data = tmp_path / "training" / "data"
    data.mkdir(parents=True)
    data.chmod(0o555)
    try:
        with pytest.raises(OutputError, match="is not writable"):
            run(tmp_path)
    finally:
        data.chmod(0o755)


def start_run(root):
    return subprocess.Popen([sys.executable, "pipelines/twostep.py", "-q"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(server, count, process, timeout=30):
    deadline = time.monotonic() + timeout
    while len(server.received) < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def cached_prompts(root):
    path = root / "training" / ".cache" / "requests.sqlite"
    if not path.exists():
        return set()
    db = sqlite3.connect(path)
    try:
        return {json.loads(r)["messages"][-1]["content"] for (r,) in db.execute("SELECT request FROM answers")}
    except sqlite3.OperationalError:  # the run has not created the table yet
        return set()
    finally:
        db.close()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_run_resumes_without_repeating_answered_requests(tmp_path, server, sig):
    topics = [f"topic {i}" for i in range(60)]
    clean_root, root = tmp_path / "clean", tmp_path / "killed"
    clean_root.mkdir(), root.mkdir()
    make(clean_root, server, topics, workers=4)
    clean = run(clean_root).paths.samples.read_bytes()

    server.reset()
    server.latency_s = 0.05
    make(root, server, topics, workers=4)
    process = start_run(root)
    wait_for(server, 40, process)
    deadline = time.monotonic() + 10
    while len(cached_prompts(root)) < 10:  # each answer is committed before its task receives it, a few times a second
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=30)
    if sig == signal.SIGINT:
        assert process.returncode == 130, (process.returncode, stderr)
        assert "running the same command again resumes" in stderr and "Traceback" not in stderr
    assert not [p for p in (root / "training/data").glob("*") if not p.name.startswith(".")]  # no real names

    answered = cached_prompts(root)
    assert 10 <= len(answered) < 180
    first_run = prompts(server)
    server.reset()
    server.latency_s = 0
    resumed = start_run(root)
    assert resumed.wait(60) == 0, resumed.communicate()
    second_run = prompts(server)
    assert not answered & set(second_run), "an answered request was sent again"
    assert set(first_run) | set(second_run) >= cached_prompts(root) and len(cached_prompts(root)) == 180
    assert (root / "training/data/twostep.jsonl").read_bytes() == clean
    assert sorted(p.name for p in (root / "training/data").iterdir()) == [
        "twostep.jsonl", "twostep.manifest.json"]  # no failed record: no errors file; the killed run's spools are gone
