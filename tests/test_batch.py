"""Batch mode (shaping.dispatch.batch): a model's run_task requests through its provider's batch
API, round by round, against a loopback fake of OpenAI's Batch API and Anthropic's Message
Batches (shaping/testing/batch.py): rounds, retries, identical output, resume after kill -9,
`isf batch list | cancel`, the SDKs' batch types, cost at batch prices, the mock's batches."""

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import anyio
import orjson
import pytest

from shaping import run_pipeline
from shaping.config import Project
from shaping.discovery import discover
from shaping.dispatch.batch_store import BatchStore
from shaping.error_types import ErrorType
from shaping.errors import ConfigError, RunFailedError, ShapingError
from shaping.providers.batch import BatchCallError, BatchLimits
from shaping.requests import LLMMessage, LLMRequest, ResponseError
from tests.conftest import read_errors, write_project
from tests.sdk_types import anthropic_params_type, check_body, openai_params_type
from shaping.testing.batch import BatchServer, answer_text
from tests.test_cli import ISF

KEY = "sk-test-batch-0123456789SECRET"
RECORDS = 200

PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Twostep(Pipeline):
    name = "twostep"
    annotated = False
    q = Pipeline.model_dep("q")
    a = Pipeline.model_dep("a")

    def run(self):
        if {query!r}:
            self.query(self.q, "say hello")
        return self.run_task(self.task, records=[{{"id": f"r{{i}}"}} for i in range({records})])

    def task(self, record):
        question = yield model_request(f"{{record['id']}} write a question", model=self.q, max_tokens=50)
        answer = yield model_request([{{"role": "system", "content": "Answer briefly."}},
                                      {{"role": "user", "content": question.get_text()}}], model=self.a)
        return TrainingSample(id=record["id"], messages=[
            {{"role": "user", "content": question.get_text()}},
            {{"role": "assistant", "content": answer.get_text()}}])


if __name__ == "__main__":
    Twostep().execute()
'''


def toml(server, batch=True, poll=0.05, max_retries=2, extra="", a_extra=""):
    flag = "batch = true\n" if batch else ""
    return (f'[models.q]\nprovider = "openai"\nmodel = "gpt-4o-mini"\nbase_url = "{server.openai_url}"\n'
            f'api_key_env = "SHAPING_BATCH_KEY"\nretry_backoff_s = 0.01\nmax_retries = {max_retries}\n'
            f'batch_poll_s = {poll}\nprice_per_million_input = 1.0\nprice_per_million_output = 2.0\n{flag}{extra}'
            f'[models.a]\nprovider = "anthropic"\nmodel = "claude-sonnet-4-5"\nbase_url = "{server.anthropic_url}"\n'
            f'api_key_env = "SHAPING_BATCH_KEY"\nretry_backoff_s = 0.01\nmax_retries = {max_retries}\n'
            f'batch_poll_s = {poll}\nprice_per_million_input = 3.0\nprice_per_million_output = 15.0\n{flag}{a_extra}')


def make(root: Path, server, records=RECORDS, query=False, **options) -> Project:
    root.mkdir(parents=True, exist_ok=True)
    project = write_project(root, toml(server, **options))
    (root / "pipelines" / "twostep.py").write_text(PIPELINE.format(records=records, query=query))
    return project


def run(root: Path, **options):
    project = Project.load(root)
    return run_pipeline(discover(project)["twostep"].cls(project), **options)


def isf(root, *args, timeout=120):
    return subprocess.run([ISF, *args], cwd=root, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "250"})


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("SHAPING_BATCH_KEY", KEY)
    with BatchServer(api_key=KEY, delay_s=0.05) as s:
        yield s


def rid(body) -> str:
    """The record a request is for (its prompt starts with the record id, or quotes it)."""
    return re.search(r"\br(\d+)\b", json.dumps(body["messages"])).group(0)


def on(api, *records):
    return lambda a, custom_id, body: a == api and rid(body) in records


def lines_by_id(path: Path) -> dict[str, bytes]:
    return {json.loads(line)["id"]: line for line in path.read_bytes().splitlines()}


# -- the whole run: rounds, retries, identical output, cost ------------------------------------

def test_a_two_step_pipeline_runs_round_by_round_with_no_online_call(tmp_path, server):
    online = run(make(tmp_path / "online", server, batch=False).root)
    assert len(server.online) == 2 * RECORDS and not server.batches
    server.online.clear()

    server.fail("errored", on("openai", "r3"))
    server.fail("expired", on("openai", "r5"))
    server.fail("missing", on("openai", "r7"))
    server.fail("invalid", on("openai", "r9"))          # a 400: not retried
    server.fail("errored", on("anthropic", "r11"))
    server.fail("errored", on("anthropic", "r13"), times=99)  # every time: gives up after max_retries
    result = run(make(tmp_path / "batch", server).root)

    assert server.online == []  # every request went through a batch
    rounds = {}
    for batch in result.manifest.batches:
        rounds.setdefault(batch.round, []).append((batch.model, batch.requests))
    # two steps, and two rounds of retries: r3/r5/r7's first steps, then their second steps with
    # r11's and r13's retries, then r13's last try
    assert rounds == {1: [("q", 200)], 2: [("q", 3), ("a", 196)], 3: [("a", 5)], 4: [("a", 1)]}
    assert result.stats.batch_rounds == 4
    assert sorted(b.id for b in result.manifest.batches) == sorted(server.batches)

    errors = {e["id"]: e for e in read_errors(result.paths.errors)}
    assert sorted(errors) == ["r13", "r9"]
    assert errors["r9"]["error"] == "bad_request" and "injected invalid request" in errors["r9"]["message"]
    assert errors["r9"]["steps"][0]["attempts"] == 1
    assert errors["r13"]["error"] == "server_error"
    assert "Overloaded" in errors["r13"]["message"] and "gave up after 3 attempts" in errors["r13"]["message"]

    # the same samples, byte for byte, as the online run against the same server
    online_lines, batch_lines = lines_by_id(online.paths.samples), lines_by_id(result.paths.samples)
    assert len(batch_lines) == RECORDS - 2
    assert batch_lines == {k: v for k, v in online_lines.items() if k not in ("r9", "r13")}
    assert list(batch_lines) == [f"r{i}" for i in range(RECORDS) if i not in (9, 13)]

    # at batch prices: half the online ones
    q = result.manifest.usage["q"]
    assert q.batch_requests == RECORDS - 1 and q.requests == RECORDS
    assert q.cost_usd == pytest.approx((q.prompt_tokens * 1.0 + q.completion_tokens * 2.0) / 1e6 / 2)
    online_q = online.manifest.usage["q"]
    assert online_q.cost_usd == pytest.approx((online_q.prompt_tokens * 1.0 + online_q.completion_tokens * 2.0) / 1e6)
    a = result.manifest.usage["a"]
    assert a.cost_usd == pytest.approx((a.prompt_tokens * 3.0 + a.completion_tokens * 15.0) / 1e6 / 2)

    # a second run: every answer from the cache; only the two failed records are asked again
    before = set(server.batches)
    again = run(tmp_path / "batch")
    assert server.online == []
    assert again.manifest.usage["q"].cached == RECORDS - 1 and again.manifest.usage["a"].cached == RECORDS - 2
    asked = {rid(body) for bid, b in server.batches.items() if bid not in before for _, body in b.items}
    assert asked == {"r9", "r13"}


def test_batch_lines_are_valid_for_the_sdks_and_the_fake_answers_as_the_sdks_read(tmp_path, server):
    from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
    from anthropic.types.messages.batch_create_params import BatchCreateParams as AnthropicCreate
    from openai.types import Batch, FileObject
    from openai.types.batch_create_params import BatchCreateParams as OpenAICreate

    server.fail("errored", on("openai", "r1"))
    server.fail("expired", on("anthropic", "r2"))
    run(make(tmp_path, server, records=12).root)
    assert len(server.uploads) == 2
    for fields, lines in server.uploads:
        assert fields == {"purpose": "batch"}
        for line in lines:
            assert set(line) == {"custom_id", "method", "url", "body"}
            assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
            check_body(line["body"], openai_params_type())
        assert len({line["custom_id"] for line in lines}) == len(lines)
    for api, body in server.creates:
        if api == "openai":
            check_body(body, OpenAICreate)
            assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        else:
            check_body(body, AnthropicCreate)
            for request in body["requests"]:
                assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", request["custom_id"])
                check_body(request["params"], anthropic_params_type())
                assert request["params"]["system"] == "Answer briefly."
    # what the fake sends is what the SDKs read
    kinds = set()
    for path, value in server.sent:
        if path == "/v1/files":
            FileObject.model_validate(value)
        elif re.fullmatch(r"/v1/batches(/[^/]+(/cancel)?)?", path) and "data" not in value:
            Batch.model_validate(value)
        elif re.fullmatch(r"/v1/messages/batches(/[^/]+)?", path):
            MessageBatch.model_validate(value)
        elif path.endswith("/results"):
            kinds.add(MessageBatchIndividualResponse.model_validate(value).result.type)
        elif path.endswith("/content"):
            assert set(value) == {"id", "custom_id", "response", "error"}
    assert kinds == {"succeeded", "expired"}


def test_requests_are_split_by_the_providers_limits(tmp_path, server, monkeypatch):
    from shaping.providers.anthropic import AnthropicProvider
    from shaping.providers.openai import OpenAIProvider

    monkeypatch.setattr(OpenAIProvider, "batch_limits", BatchLimits(60, 10**9))
    monkeypatch.setattr(AnthropicProvider, "batch_limits", BatchLimits(10**6, 30_000))
    result = run(make(tmp_path, server).root)
    q = [b for b in result.manifest.batches if b.model == "q"]
    a = [b for b in result.manifest.batches if b.model == "a"]
    assert [b.requests for b in q] == [60, 60, 60, 20] and {b.round for b in q} == {1}
    assert len(a) > 1 and sum(b.requests for b in a) == RECORDS and {b.round for b in a} == {2}
    for api, body in server.creates:
        if api == "anthropic":
            assert len(json.dumps(body, separators=(",", ":"), ensure_ascii=False)) <= 30_000
    assert result.manifest.counts.samples == RECORDS


def test_query_stays_online_and_the_key_is_never_written(tmp_path, server):
    result = run(make(tmp_path, server, records=5, query=True).root)
    assert [path for path, _ in server.online] == ["/v1/chat/completions"]
    assert result.manifest.counts.samples == 5
    for path in (tmp_path / "training").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def test_a_wrong_key_fails_the_run_without_showing_the_key(tmp_path, server, monkeypatch):
    make(tmp_path, server, records=3)
    monkeypatch.setenv("SHAPING_BATCH_KEY", "sk-wrong-key-9876543210XYZ")
    with pytest.raises(RunFailedError) as failed:
        run(tmp_path)
    assert "authentication failed" in str(failed.value) and "9876543210" not in str(failed.value)
    assert not server.batches


def test_batch_mode_needs_the_cache_the_local_executor_and_no_cost_cap(tmp_path, server):
    make(tmp_path, server, records=2)
    with pytest.raises(ShapingError, match="leave out --no-cache"):
        run(tmp_path, use_cache=False)
    with pytest.raises(ShapingError, match="--max-cost works with online models only"):
        run(tmp_path, max_cost=5.0)
    assert not server.batches


def test_batch_needs_a_provider_with_a_batch_api(tmp_path):
    from shaping.providers.base import Provider
    from shaping.providers.registry import PROVIDERS, register

    class Plain(Provider):
        async def generate_batch(self, requests):
            raise AssertionError

    register("plain-test", Plain)
    try:
        write_project(tmp_path, '[models.q]\nprovider = "plain-test"\nmodel = "p"\nbatch = true\n'
                                '[models.a]\nprovider = "mock"\nmodel = "m"\n')
        (tmp_path / "pipelines" / "twostep.py").write_text(PIPELINE.format(records=2, query=False))
        with pytest.raises(ConfigError, match="models.q.batch: provider 'plain-test' has no batch API"):
            run(tmp_path)
    finally:
        PROVIDERS.pop("plain-test", None)


# -- kill -9 while waiting, then resume --------------------------------------------------------

def start_run(root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([ISF, "pipeline", "run", "twostep", "-q", *args], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "250"})


def polled(server, batch, timeout=60) -> None:
    """Wait until the client has polled `batch` (so its id is on disk)."""
    path = f"/v1/batches/{batch.id}" if batch.api == "openai" else f"/v1/messages/batches/{batch.id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p == path for p, _ in server.sent):
            return
        time.sleep(0.02)
    raise AssertionError("the run never polled its batch")


def first_batch(server, api="openai", timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.of(api):
            return server.of(api)[0]
        time.sleep(0.02)
    raise AssertionError("no batch was created")


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_run_killed_while_waiting_reattaches_and_pays_nothing_twice(tmp_path, server, api):
    """Killed while round 1 (OpenAI, the first steps) or round 2 (Anthropic) is in progress."""
    root = tmp_path / "batch"
    make(root, server)

    def slow(batch):  # the batch that will be in progress at the kill
        if batch.api == api:
            batch.ends_at = time.time() + 3600

    server.on_create = slow
    first = start_run(root)
    try:
        batch = first_batch(server, api)
        polled(server, batch)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    server.on_create = None
    assert first.returncode == -signal.SIGKILL
    assert len(batch.items) == RECORDS and len(server.batches) == (1 if api == "openai" else 2)

    listed = isf(root, "batch", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if batch.id in line)
    model = "q" if api == "openai" else "a"
    assert f" {model} " in row and "twostep" in row and "200" in row
    assert "in_progress" in row

    batch.ends_at = time.time() + 0.3  # the provider finishes it while nothing runs
    second = start_run(root)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr

    assert len(server.of("openai")) == 1 and len(server.of("anthropic")) == 1, "requests were submitted again"
    assert batch.results_fetched >= 1
    seen = [cid for b in server.batches.values() for cid, _ in b.items]
    assert len(seen) == len(set(seen)) == 2 * RECORDS
    assert server.online == []
    manifest = json.loads((root / "training" / "data" / "twostep.manifest.json").read_text())
    assert {b["id"]: b["reattached"] for b in manifest["batches"]}[batch.id] is True
    assert len(manifest["batches"]) == (2 if api == "openai" else 1)
    # the answers the online API gives
    samples = [json.loads(line) for line in (root / "training" / "data" / "twostep.jsonl").read_text().splitlines()]
    assert [s["id"] for s in samples] == [f"r{i}" for i in range(RECORDS)]
    asked = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "r7 write a question"}]}
    question = answer_text("openai", asked)
    assert samples[7]["messages"][0]["content"] == question
    store = sqlite3.connect(root / "training" / ".cache" / "batches.sqlite")
    assert store.execute("SELECT COUNT(*) FROM batches WHERE state != 'closed'").fetchone() == (0,)
    assert store.execute("SELECT COUNT(*) FROM batch_items").fetchone() == (0,)


def test_killed_before_the_batch_id_was_recorded_the_next_run_finds_it_by_its_tag(tmp_path, server):
    root = tmp_path
    make(root, server, records=20)
    pid = []

    def kill(batch):  # the batch exists at the provider; the client never hears its id
        if batch.api == "openai" and len(server.batches) == 1:
            os.kill(pid[0], signal.SIGKILL)

    server.on_create = kill
    first = start_run(root)
    pid.append(first.pid)
    first.communicate(timeout=60)
    assert first.returncode == -signal.SIGKILL
    server.on_create = None
    (batch,) = server.batches.values()
    assert batch.metadata and set(batch.metadata) == {"shaping_tag"}

    second = start_run(root)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    assert server.of("openai") == [batch] and len(server.of("anthropic")) == 1


def test_isf_batch_cancel_and_the_next_run_asks_again(tmp_path, server):
    root = tmp_path
    make(root, server, records=20)
    server.delay_s = 3600
    first = start_run(root)
    try:
        batch = first_batch(server)
        polled(server, batch)
        os.kill(first.pid, signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()

    unknown = isf(root, "batch", "cancel", "batch_nope")
    assert unknown.returncode == 1 and "no batch batch_nope in this project" in unknown.stderr
    cancelled = isf(root, "batch", "cancel", batch.id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert batch.id in cancelled.stdout and "cancelled" in cancelled.stdout
    assert batch.cancelled_at is not None
    listed = isf(root, "batch", "list")
    assert "cancelled" in next(line for line in listed.stdout.splitlines() if batch.id in line)

    server.delay_s = 0.05
    second = start_run(root)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr
    # the cancelled batch answered nothing: its requests went into a new one, once
    q_batches = server.of("openai")
    assert len(q_batches) == 2 and {cid for cid, _ in q_batches[1].items} == {cid for cid, _ in batch.items}
    assert len((root / "training" / "data" / "twostep.jsonl").read_text().splitlines()) == 20
    assert "no open batches" in isf(root, "batch", "list").stdout


# -- the mock provider -------------------------------------------------------------------------

MOCK_TOML = '''
[models.q]
provider = "mock"
model = "mock-q"
batch_poll_s = 0.02
[models.q.options]
batch_latency_s = 0.1
[models.a]
provider = "mock"
model = "mock-a"
batch_poll_s = 0.02
[models.a.options]
batch_latency_s = 0.1
'''


def test_the_mock_provider_answers_batches_as_it_answers_online(tmp_path):
    for folder in ("online", "batch"):
        (tmp_path / folder).mkdir()
        write_project(tmp_path / folder, MOCK_TOML)
        (tmp_path / folder / "pipelines" / "twostep.py").write_text(PIPELINE.format(records=30, query=True))
    online = isf(tmp_path / "online", "pipeline", "run", "twostep")
    assert online.returncode == 0, online.stderr
    batch = isf(tmp_path / "batch", "pipeline", "run", "twostep", "--batch")
    assert batch.returncode == 0, batch.stderr
    assert "batches: 2 in 2 rounds" in batch.stdout and "at batch prices" not in batch.stdout
    data = "training/data/twostep.jsonl"
    assert (tmp_path / "batch" / data).read_bytes() == (tmp_path / "online" / data).read_bytes()
    manifest = json.loads((tmp_path / "batch" / "training/data/twostep.manifest.json").read_text())
    assert [(b["model"], b["requests"], b["round"]) for b in manifest["batches"]] == [("q", 30, 1), ("a", 30, 2)]
    assert all(b["id"].startswith("mockbatch_") for b in manifest["batches"])
    assert manifest["usage"]["q"]["batch_requests"] == 30 and manifest["usage"]["q"]["requests"] == 31


def test_the_progress_line_shows_rounds_batches_and_the_wait():
    from rich.console import Console

    from shaping.dispatch.stats import BatchInfo, RunStats
    from shaping.progress import RunDisplay

    stats = RunStats(records_total=200, batch_rounds=2)
    stats.batches["t1"] = BatchInfo(model="q", tag="t1", requests=200, round=1, id="batch_1", status="ended", done=True)
    stats.batches["t2"] = BatchInfo(model="a", tag="t2", requests=196, round=2, id="msgbatch_2", status="in_progress",
                                    succeeded=120, failed=3)
    stats.batch_waiting_since = time.monotonic() - 75
    console = Console(width=200, record=True)
    console.print(RunDisplay(console, stats, "twostep").render())
    text = console.export_text()
    assert "round 2 · 1 batch open (1 in_progress) · 123/196 requests done · 2 in all · waiting 0:01:15" in text


def test_make_bench_prints_the_cost_online_and_in_batch_mode():
    bench = Path(__file__).resolve().parents[1] / "bench" / "batch_cost.py"
    done = subprocess.run([sys.executable, str(bench), "--records", "40"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "0.50x the online cost" in done.stdout and "0 online calls" in done.stdout
    assert "outputs identical" in done.stdout


GATHER_PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Gather(Pipeline):
    name = "gather"
    annotated = False
    slow = Pipeline.model_dep("slow")
    b = Pipeline.model_dep("b")

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{i}"} for i in range(5)])

    def task(self, record):
        if record["id"] == "r0":  # waits on an online model first
            yield model_request("think first", model=self.slow)
        answer = yield model_request(f"{record['id']} hello", model=self.b)
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": "hello"},
                                                         {"role": "assistant", "content": answer.get_text()}])
'''


@pytest.mark.parametrize("gather_s, sizes", [(0.3, [4, 1]), (60, [5])])
def test_a_request_waits_at_most_batch_gather_s_for_its_round(tmp_path, gather_s, sizes):
    write_project(tmp_path, f'[models.slow]\nprovider = "mock"\nmodel = "s"\n[models.slow.options]\nlatency_s = 1.5\n'
                            f'[models.b]\nprovider = "mock"\nmodel = "b"\nbatch = true\nbatch_poll_s = 0.02\n'
                            f'batch_gather_s = {gather_s}\n[models.b.options]\nbatch_latency_s = 0.05\n')
    (tmp_path / "pipelines" / "gather.py").write_text(GATHER_PIPELINE)
    project = Project.load(tmp_path)
    result = run_pipeline(discover(project)["gather"].cls(project))
    assert [b.requests for b in result.manifest.batches] == sizes
    assert result.manifest.counts.samples == 5


def test_named_hosts_have_no_batch_api_here():
    from shaping.config import ModelConfig
    from shaping.errors import ConfigError
    from shaping.providers.batch import batched
    from shaping.providers.openai import OpenAIProvider

    local = ModelConfig(provider="ollama", model="llama3.2")
    assert batched("local", local, OpenAIProvider, batch_all=True) is False  # --batch leaves it online
    with pytest.raises(ConfigError, match="models.local.batch: provider 'ollama' has no batch API"):
        batched("local", local.model_copy(update={"batch": True}), OpenAIProvider)
    assert batched("gpt", ModelConfig(provider="openai", model="gpt-4o-mini"), OpenAIProvider, batch_all=True)
    # an OpenAI-compatible server elsewhere (a local vLLM): --batch leaves it online; batch = true is the user's word
    vllm = ModelConfig(provider="openai", model="qwen", base_url="http://127.0.0.1:8000/v1")
    assert batched("vllm", vllm, OpenAIProvider, batch_all=True) is False
    assert batched("vllm", vllm.model_copy(update={"batch": True}), OpenAIProvider)


# -- what the review found: reading, creating, polling, keys, hosts -----------------------------

ONESTEP = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Onestep(Pipeline):
    name = "onestep"
    annotated = False
    m = Pipeline.model_dep("m")

    def run(self):
        return self.run_task(self.task, records=[{{"id": f"r{{i}}"}} for i in range({records})])

    def task(self, record):
        answer = yield model_request(f"{{record['id']}} hello", model=self.m)
        return TrainingSample(id=record["id"], messages=[{{"role": "user", "content": "hello"}},
                                                         {{"role": "assistant", "content": answer.get_text()}}])
'''


def mock_project(root: Path, records=10, table="batch = true\n") -> Project:
    project = write_project(root, f'[models.m]\nprovider = "mock"\nmodel = "mock-m"\n{table}batch_poll_s = 0.02\n'
                                  f'max_retries = 2\nretry_backoff_s = 0.01\n'
                                  f'[models.m.options]\nbatch_latency_s = 0.05\n')
    (root / "pipelines" / "onestep.py").write_text(ONESTEP.format(records=records))
    return project


def run_one(root: Path, **options):
    project = Project.load(root)
    return run_pipeline(discover(project)["onestep"].cls(project), **options)


def within(seconds, fn, *args, **kwargs):
    """fn(...)'s result, failing the test if it has not returned in `seconds` (a run that hangs)."""
    done = {}

    def target():
        try:
            done["result"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread below
            done["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: the run hangs"
    if "error" in done:
        raise done["error"]
    return done["result"]


def mock_creates(monkeypatch) -> list[list[str]]:
    """The custom_ids of every mock batch created from now on, batch by batch."""
    from shaping.providers.mock import MockProvider

    created = []
    original = MockProvider.create_batch

    async def create_batch(self, items, tag):
        created.append([orjson.loads(item)["custom_id"] for item in items])
        return await original(self, items, tag)

    monkeypatch.setattr(MockProvider, "create_batch", create_batch)
    return created


class Breaker:
    """Mock batch results that break (a retryable BatchCallError) after `after` of them, the
    next `left` times they are read."""

    def __init__(self, monkeypatch, after: int, left: int = 1) -> None:
        from shaping.providers.mock import MockProvider

        self.after, self.left, self.breaks = after, left, 0
        original = MockProvider.batch_results
        breaker = self

        async def batch_results(provider, state):
            n = 0
            async for pair in original(provider, state):
                if breaker.left and n == breaker.after:
                    breaker.left -= 1
                    breaker.breaks += 1
                    raise BatchCallError(ResponseError(type=ErrorType.CONNECTION, retryable=True,
                                                       message="connection reset while reading"))
                n += 1
                yield pair

        monkeypatch.setattr(MockProvider, "batch_results", batch_results)


def open_batches(root: Path) -> list:
    store = BatchStore(Project.load(root).cache_dir)
    try:
        return store.batches()
    finally:
        store.close_db()


def test_a_results_stream_that_breaks_once_is_read_again_and_every_record_answered(tmp_path, monkeypatch):
    """The 3 answers read before the break are committed and handed over; the retry reads the
    other 7 (review: the 3 were marked read, never committed, and their records hung)."""
    mock_project(tmp_path, records=10)
    created = mock_creates(monkeypatch)
    breaker = Breaker(monkeypatch, after=3)
    result = within(60, run_one, tmp_path)
    assert breaker.breaks == 1
    assert result.manifest.counts.samples == 10
    assert len(created) == 1 and sorted(created[0]) == sorted(set(created[0])) and len(created[0]) == 10
    assert open_batches(tmp_path) == []


def test_results_that_cannot_be_read_leave_the_batch_open_for_the_next_run(tmp_path, monkeypatch):
    mock_project(tmp_path, records=10)
    created = mock_creates(monkeypatch)
    breaker = Breaker(monkeypatch, after=0, left=99)
    with pytest.raises(RunFailedError) as failed:
        within(60, run_one, tmp_path)
    assert "could not be read" in str(failed.value) and "stays open" in str(failed.value)
    assert len(created) == 1  # not asked again (it would be paid twice)
    (row,) = open_batches(tmp_path)
    assert row.state == "open" and row.requests == 10

    breaker.left = 0  # the results can be read now: the next run reads them, and asks nothing
    result = within(60, run_one, tmp_path)
    assert result.manifest.counts.samples == 10 and len(created) == 1
    assert [b.reattached for b in result.manifest.batches] == [True]
    assert open_batches(tmp_path) == []


def test_a_status_the_provider_cannot_read_fails_the_requests_naming_the_batch(tmp_path, monkeypatch):
    """A compatible server's answer without `status` (a KeyError in the provider): not polled
    forever; the requests fail with the reason, the batch stays open."""
    from shaping.providers.mock import MockProvider

    async def get_batch(self, batch_id):
        raise KeyError("status")

    monkeypatch.setattr(MockProvider, "get_batch", get_batch)
    mock_project(tmp_path, records=4)
    with pytest.raises(RunFailedError) as failed:
        within(60, run_one, tmp_path)
    message = str(failed.value)
    assert "mockbatch_" in message and "KeyError" in message and "could not be read" in message
    assert [row.state for row in open_batches(tmp_path)] == ["open"]


def test_this_pipelines_own_interrupted_submission_is_reported_however_young(tmp_path):
    """Its RunLock says no run of this pipeline is submitting it: the row is a dead run's."""
    project = mock_project(tmp_path, records=3)
    store = BatchStore(project.cache_dir)
    store.begin("feedc0de00000001", "onestep", "m", "mock", 1, [("k1", "r0", 0, "req")])
    store.begin("feedc0de00000002", "another", "m", "mock", 1, [("k2", "r0", 0, "req")])
    store.close_db()
    result = run_one(tmp_path)
    assert result.manifest.counts.samples == 3
    (warning,) = [w for w in result.warnings if "interrupted before its id was recorded" in w]
    assert "a batch of 1 requests" in warning
    rows = {row.tag: row for row in open_batches(tmp_path)}
    assert "feedc0de00000001" not in rows
    assert rows["feedc0de00000002"].state == "submitting"  # another pipeline's, young: maybe under way


def test_reattaching_to_a_batch_loads_its_items_once(tmp_path, monkeypatch):
    from shaping.providers.mock import MockProvider

    mock_project(tmp_path, records=20)
    created = mock_creates(monkeypatch)
    original = MockProvider.get_batch

    async def forbidden(self, batch_id):
        raise BatchCallError(ResponseError(type=ErrorType.PERMISSION, status_code=403, retryable=False,
                                           message="HTTP 403: forbidden"))

    monkeypatch.setattr(MockProvider, "get_batch", forbidden)
    with pytest.raises(RunFailedError):
        within(60, run_one, tmp_path)  # the batch stays open
    monkeypatch.setattr(MockProvider, "get_batch", original)
    monkeypatch.setattr("shaping.dispatch.batch.READ_CHUNK", 5)
    loads = []
    items = BatchStore.items

    def counted(self, tag):
        loads.append(tag)
        return items(self, tag)

    monkeypatch.setattr(BatchStore, "items", counted)
    result = within(60, run_one, tmp_path, limit=5)  # 5 records wait on it; 15 answers are an earlier run's
    assert result.manifest.counts.samples == 5 and len(created) == 1
    assert len(loads) == 1
    full = within(60, run_one, tmp_path)
    assert full.manifest.usage["m"].cached == 20 and len(created) == 1


def test_wait_tracking_is_on_only_for_a_pipeline_with_a_batch_model(tmp_path, monkeypatch):
    from shaping.dispatch import batch as batch_module

    made = []
    init = batch_module.Activity.__init__

    def counted(self, stats):
        made.append(self)
        init(self, stats)

    monkeypatch.setattr(batch_module.Activity, "__init__", counted)
    mock_project(tmp_path, records=3, table="")
    with open(tmp_path / "shaping.toml", "a") as toml_file:  # another pipeline's model is in batch mode
        toml_file.write('[models.other]\nprovider = "mock"\nmodel = "mock-o"\nbatch = true\n')
    result = run_one(tmp_path)
    assert result.manifest.counts.samples == 3 and not result.manifest.batches
    assert made == []


# BatchChannel on its own, with the mock provider


def harness(tmp_path: Path, tg, **table):
    from shaping.config import ModelConfig
    from shaping.dispatch.batch import Activity, BatchChannel
    from shaping.dispatch.cache import RequestCache
    from shaping.dispatch.stats import RunStats
    from shaping.providers.registry import create_provider

    config = ModelConfig(provider="mock", model="mock-m", batch=True, batch_poll_s=0.01, retry_backoff_s=0.01,
                         options={"batch_latency_s": 0.05}, **table)
    provider = create_provider("m", config)
    stats = RunStats()
    activity = Activity(stats)
    store, cache = BatchStore(tmp_path), RequestCache(tmp_path)
    channel = BatchChannel("m", provider, "p", stats, tg, activity, store, cache, None, lambda: None)
    return channel, activity, store


async def ask(channel, answers: dict, key: str, text: str, record_id: str = "r0") -> None:
    messages = [LLMMessage(role="user", content=text)]
    answers[key if key not in answers else f"{key}'"] = await channel.submit(
        LLMRequest(messages=messages, params={}), key, messages, {}, record_id, 0)


async def until(answers: dict, n: int, seconds: float = 20) -> None:
    with anyio.fail_after(seconds):
        while len(answers) < n:
            await anyio.sleep(0.01)


def test_two_requests_for_one_key_share_one_answer_and_one_line(tmp_path, monkeypatch):
    created = mock_creates(monkeypatch)

    async def main():
        answers = {}
        async with anyio.create_task_group() as tg:
            channel, activity, _ = harness(tmp_path, tg)
            await channel.open()
            activity.add_live(1)  # a record still working: no round forms yet
            for key, text in (("k1", "hello"), ("k1", "hello"), ("k2", "bye")):
                tg.start_soon(ask, channel, answers, key, text)
            await anyio.sleep(0.05)
            activity.add_live(-1)  # every request waits: the round forms
            await until(answers, 3)
            tg.cancel_scope.cancel()
        return answers

    answers = anyio.run(main)
    assert created == [["k1", "k2"]]  # one line for k1
    assert answers["k1"].is_success and answers["k1'"].text == answers["k1"].text
    assert sorted([answers["k1"].cached, answers["k1'"].cached]) == [False, True]  # paid once


def test_a_request_asked_while_its_answer_is_being_read_waits_for_it(tmp_path, monkeypatch):
    """An earlier run's batch holds k1 and k2; a record waits on k1. While the results are read,
    k2's answer has come but is not committed yet when another record asks for k2: it waits for
    that answer, and nothing is asked again."""
    from shaping.providers.mock import MockProvider

    created = mock_creates(monkeypatch)
    original = MockProvider.batch_results

    async def main():
        reached, go = anyio.Event(), anyio.Event()

        async def batch_results(self, state):
            pairs = [pair async for pair in original(self, state)]
            pairs.sort(key=lambda pair: pair[0] != "k2")  # k2's answer first, then a pause
            yield pairs[0]
            reached.set()
            await go.wait()
            for pair in pairs[1:]:
                yield pair

        answers = {}
        async with anyio.create_task_group() as tg:
            channel, activity, store = harness(tmp_path, tg)
            provider = channel.api
            request = LLMRequest(messages=[LLMMessage(role="user", content="hello")], params={})
            lines = [provider.batch_item("k1", request), provider.batch_item("k2", request)]
            state = await provider.create_batch(lines, "0123456789abcdef")
            store.begin("0123456789abcdef", "p", "m", "mock", 1, [("k1", "r0", 0, "t"), ("k2", "r1", 0, "t")])
            store.submitted("0123456789abcdef", state.id, state.status)
            await anyio.sleep(0.1)  # the batch has ended
            monkeypatch.setattr(MockProvider, "batch_results", batch_results)
            await channel.open()
            tg.start_soon(ask, channel, answers, "k1", "hello", "r0")
            with anyio.fail_after(10):
                await reached.wait()
            tg.start_soon(ask, channel, answers, "k2", "hello", "r1")
            await anyio.sleep(0.05)
            go.set()
            await until(answers, 2)
            await anyio.sleep(0.1)  # a round (there should be none) would form now
            tg.cancel_scope.cancel()
        return answers

    answers = anyio.run(main)
    assert len(created) == 1, "k2 was asked again"
    assert answers["k2"].is_success and answers["k1"].is_success


def test_the_gather_window_runs_from_the_oldest_request_still_waiting(tmp_path, monkeypatch):
    """a and b fill a batch, which goes when c comes; c then waits its own batch_gather_s, not
    what was left of a's."""
    from shaping.providers.mock import MockProvider

    monkeypatch.setattr(MockProvider, "batch_limits", BatchLimits(2, 10**9))
    times = []
    original = MockProvider.create_batch

    async def create_batch(self, items, tag):
        times.append(([orjson.loads(item)["custom_id"] for item in items], anyio.current_time()))
        return await original(self, items, tag)

    monkeypatch.setattr(MockProvider, "create_batch", create_batch)

    async def main():
        asked, answers = {}, {}
        async with anyio.create_task_group() as tg:
            channel, activity, _ = harness(tmp_path, tg, batch_gather_s=1.0)
            await channel.open()
            activity.add_live(1)  # another record is busy: only the gather window forms a round
            for key, pause in (("a", 0.1), ("b", 0.5), ("c", 0)):
                asked[key] = anyio.current_time()
                tg.start_soon(ask, channel, answers, key, key, key)
                await anyio.sleep(pause)
            await until(answers, 3)
            tg.cancel_scope.cancel()
        return asked

    asked = anyio.run(main)
    (first, _), (second, at) = times
    assert first == ["a", "b"] and second == ["c"]
    assert at - asked["c"] >= 0.9


def test_a_create_whose_answer_was_lost_is_found_by_its_tag_not_made_twice(tmp_path, server):
    """The create timed out after the provider made the batch: the retry finds it by its tag."""
    server.hang_creates, server.hang_s = 1, 1.5
    result = run(make(tmp_path, server, records=5, extra="timeout_s = 0.5\n").root)
    assert len(server.of("openai")) == 1 and len(server.of("anthropic")) == 1
    assert result.manifest.counts.samples == 5
    assert [b.id for b in result.manifest.batches if b.model == "q"] == [server.of("openai")[0].id]
    assert open_batches(tmp_path) == []


def test_a_create_that_may_have_made_the_batch_is_not_tried_again_where_none_can_be_looked_up(tmp_path, server):
    """Anthropic keeps no tag to look a batch up by: a create that timed out is not sent again."""
    def hang(batch):
        if batch.api == "anthropic":
            server.hang_creates = 1

    server.on_create, server.hang_s = hang, 1.5
    make(tmp_path, server, records=3, a_extra="timeout_s = 0.5\n")
    with pytest.raises(RunFailedError) as failed:
        run(tmp_path)
    assert len(server.of("anthropic")) == 1
    assert "may have been created" in str(failed.value) and "not submitted again" in str(failed.value)


def test_a_create_that_could_not_connect_is_marked_unsent(monkeypatch):
    """No connection: nothing can have been created (a create may be tried again)."""
    import socket

    from shaping.config import ModelConfig
    from shaping.providers.registry import create_provider

    monkeypatch.setenv("SHAPING_BATCH_KEY", KEY)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: the connection is refused

    async def main():
        provider = create_provider("a", ModelConfig(provider="anthropic", model="claude-sonnet-4-5",
                                                    base_url=f"http://127.0.0.1:{port}", api_key_env="SHAPING_BATCH_KEY",
                                                    timeout_s=5))
        await provider.open()
        try:
            with pytest.raises(BatchCallError) as refused:
                await provider.create_batch([b'{"custom_id":"k","params":{}}'], "0123456789abcdef")
        finally:
            await provider.aclose()
        return refused.value

    error = anyio.run(main)
    assert error.unsent and error.error.status_code is None


def test_find_batch_reads_the_list_page_by_page_back_to_since(server):
    from shaping.config import ModelConfig
    from shaping.providers.registry import create_provider

    server.page_size = 2

    def lists():
        return sum(1 for path, value in server.sent if path == "/v1/batches" and "data" in value)

    async def main():
        provider = create_provider("q", ModelConfig(provider="openai", model="gpt-4o-mini", base_url=server.openai_url,
                                                    api_key_env="SHAPING_BATCH_KEY"))
        await provider.open()
        try:
            line = provider.batch_item("k", LLMRequest(messages=[LLMMessage(role="user", content="hi")], params={}))
            for n in range(7):
                await provider.create_batch([line], f"tag{n}")
            for old in server.of("openai")[:3]:  # tag0, tag1, tag2: two hours old
                old.created_at -= 7200
            since = time.time() - 60
            found = await provider.find_batch("tag3", since)  # the second page (newest first)
            before = lists()
            gone = await provider.find_batch("tag0", since)  # older than since: not looked for
            return found, gone, lists() - before
        finally:
            await provider.aclose()

    found, gone, pages = anyio.run(main)
    assert found == server.of("openai")[3].id
    assert gone is None and pages == 3  # the page holding a batch older than since is the last read


def test_a_batch_that_fails_validation_fails_only_the_lines_it_names(tmp_path, server):
    from openai.types import Batch

    server.fail("refused", on("openai", "r3"))
    result = run(make(tmp_path, server, records=20).root)
    errors = {e["id"]: e for e in read_errors(result.paths.errors)}
    assert list(errors) == ["r3"]
    assert errors["r3"]["error"] == "bad_request" and "injected refusal" in errors["r3"]["message"]
    assert "line 4" in errors["r3"]["message"]
    assert [len(b.items) for b in server.of("openai")] == [20, 19]  # the other 19 went again, once
    assert result.manifest.counts.samples == 19
    failed = [value for path, value in server.sent if isinstance(value, dict) and value.get("status") == "failed"]
    assert failed and all(Batch.model_validate(value).errors.data[0].line == 4 for value in failed)


def test_batch_flag_leaves_a_model_on_another_host_online_and_says_so(tmp_path, server):
    """--batch is for the providers' own APIs: a loopback OpenAI-compatible server stays online."""
    result = run(make(tmp_path, server, records=3, batch=False).root, batch=True)
    assert not server.batches and len(server.online) == 6
    (warning,) = [w for w in result.warnings if w.startswith("--batch left")]
    assert f"'q' (served by 127.0.0.1:{server.port}, not openai's own API)" in warning
    assert f"'a' (served by 127.0.0.1:{server.port}, not anthropic's own API)" in warning
    assert "batch = true" in warning
