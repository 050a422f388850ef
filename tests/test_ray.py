"""Scale-out with Ray in local mode: same output as a plain run, a dead worker's shard run
again with nothing lost or doubled, one rate limit shared by every worker."""

import os
import sqlite3
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is installed by `make test` (the ray extra)")

from shaping import run_pipeline  # noqa: E402
from shaping.pipeline import Pipeline, TrainingSample, model_request  # noqa: E402
from tests.conftest import write_project  # noqa: E402
from shaping.testing import LoopbackServer  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Twostep(Pipeline):
    name = "twostep"
    annotated = False
    api = Pipeline.model_dep("api")
    count = 24
    die_at: str | None = None  # a marker file: the worker handling record r7 dies once

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{i}", "n": i} for i in range(self.count)])

    def task(self, record):
        if self.die_at and record["id"] == "r7" and not Path(self.die_at).exists():
            Path(self.die_at).touch()
            os._exit(1)
        a = yield model_request(f"{record['id']} first", model=self.api)
        b, c = yield [model_request(f"{record['id']} second {a.get_text()}", model=self.api),
                      model_request(f"{record['id']} third", model=self.api)]
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": a.get_text()}, {"role": "assistant", "content": b.get_text() + c.get_text()}])


@pytest.fixture
def server():
    with LoopbackServer("openai") as s:
        yield s


def project(root, server, extra=""):
    return write_project(root, f'[models.api]\nprovider = "openai"\nmodel = "m"\nbase_url = "{server.base_url}"\n'
                               f"retry_backoff_s = 0.01\n{extra}")


def test_ray_run_writes_what_a_plain_run_writes(tmp_path, server):
    plain_root, ray_root = tmp_path / "plain", tmp_path / "ray"
    plain_root.mkdir(), ray_root.mkdir()
    plain = run_pipeline(Twostep(project(plain_root, server)))
    server.reset()
    result = run_pipeline(Twostep(project(ray_root, server)), executor="ray")
    assert result.paths.samples.read_bytes() == plain.paths.samples.read_bytes()
    assert result.manifest.counts.samples == 24 and result.manifest.usage["api"].requests == 72
    assert len(server.received) == 72
    db = sqlite3.connect(ray_root / "training/.cache/requests.sqlite")
    assert db.execute("SELECT COUNT(*) FROM answers").fetchone()[0] == 72  # the workers' answers reached the cache
    server.reset()
    again = run_pipeline(Twostep(project(ray_root, server)), executor="ray")
    assert server.received == [] and again.manifest.usage["api"].cached == 72


def test_a_dead_worker_is_replaced_and_every_record_written_once(tmp_path, server):
    pipeline = Twostep(project(tmp_path, server))
    pipeline.die_at = str(tmp_path / "died-once")
    result = run_pipeline(pipeline, executor="ray")
    assert Path(pipeline.die_at).exists()  # a worker really died
    ids = [line.split('"id":"')[1].split('"')[0] for line in result.paths.samples.read_text().splitlines()]
    assert ids == [f"r{i}" for i in range(24)]
    assert not result.paths.errors.exists()  # no record failed


def test_one_request_rate_shared_by_all_workers(tmp_path, server):
    pipeline = Twostep(project(tmp_path, server, "requests_per_minute = 1200\n"))  # 20 a second
    pipeline.count = 20
    run_pipeline(pipeline, executor="ray", use_cache=False)
    times = sorted(r.at for r in server.received)
    assert len(times) == 60
    # a burst of at most 20, then 20 a second for all workers together: 60 requests need about 2 s
    assert times[-1] - times[0] >= 1.8
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 1.0) <= 41
