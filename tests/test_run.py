"""run_pipeline end to end on the mock provider: outputs, order, errors, manifest, bad input."""

import json
import random
import time

import anyio
import pytest

from shaping import run_pipeline
from shaping.errors import ConfigError, DependencyError, OutputError, ShapingError, TaskContractError
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request
from shaping.providers.mock import mock_reply
from shaping.requests import LLMRequest
from tests.conftest import read_errors, read_jsonl


def qa(record_id, question, answer):
    return TrainingSample(id=record_id, messages=[
        {"role": "user", "content": question}, {"role": "assistant", "content": answer}])


class Mixed(Pipeline):
    """Every third record fails in a different way; the rest become samples."""

    name = "mixed"
    judge = Pipeline.model_dep("judge")

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{i}", "n": i} for i in range(30)])

    def task(self, record):
        n = record["n"]
        response = yield model_request(f"question {n}", model=self.judge)
        if n % 10 == 3:
            raise PipelineError(f"record {n} rejected", error_type="rejected")
        if n % 10 == 7:
            raise ValueError(f"boom {n}")
        return qa(record["id"], f"question {n}", response.get_text())


def test_samples_and_errors_in_input_order(project):
    result = run_pipeline(Mixed(project))
    samples = read_jsonl(result.paths.samples)
    errors = read_errors(result.paths.errors)
    assert [s["id"] for s in samples] == [f"r{i}" for i in range(30) if i % 10 not in (3, 7)]
    assert [e["id"] for e in errors] == ["r3", "r7", "r13", "r17", "r23", "r27"]
    assert [e["error"] for e in errors] == ["rejected", "unexpected_error"] * 3
    first = errors[0]
    assert list(first) == ["id", "error", "message", "input_data", "steps", "pipeline_commit", "failed_at",
                           "traceback"]
    assert first["message"] == "record 3 rejected"
    assert first["input_data"] == {"id": "r3", "n": 3}
    assert first["steps"][0]["messages"] == [{"role": "user", "content": "question 3"}]
    assert first["failed_at"] and "pipeline_commit" in first
    assert errors[1]["message"] == "ValueError: boom 7" and "Traceback" in errors[1]["traceback"]
    assert result.manifest.counts.errors == {"rejected": 3, "unexpected_error": 3}
    assert result.manifest.counts.samples == 24 and result.manifest.counts.records == 30


def test_annotated_output_has_provenance(project):
    result = run_pipeline(Mixed(project), annotate=True)
    sample = read_jsonl(result.paths.samples)[0]
    assert set(sample) == {"id", "messages", "metadata", "input_data", "steps", "pipeline_commit",
                           "started_at", "completed_at"}
    step = sample["steps"][0]
    request = LLMRequest(messages=[{"role": "user", "content": "question 0"}])
    assert step["text"] == mock_reply("mock-judge", request) == sample["messages"][-1]["content"]
    assert step["params"] == {"temperature": 0.2}  # the model's defaults, as sent
    assert step["model"] == "judge" and step["attempts"] == 1 and step["cached"] is False
    assert step["usage"]["prompt_tokens"] > 0 and step["latency_s"] >= 0


def test_minimal_output_is_exactly_id_and_messages(project):
    result = run_pipeline(Mixed(project), annotate=False)
    for sample in read_jsonl(result.paths.samples):
        assert set(sample) == {"id", "messages"}
    assert result.manifest.annotated is False


def test_class_default_annotated_false(project):
    class Plain(Mixed):
        name = "plain"
        annotated = False

    result = run_pipeline(Plain(project))
    assert set(read_jsonl(result.paths.samples)[0]) == {"id", "messages"}


def test_limit_takes_first_records_and_is_recorded(project):
    result = run_pipeline(Mixed(project), limit=5)
    assert [s["id"] for s in read_jsonl(result.paths.samples)] == ["r0", "r1", "r2", "r4"]
    assert result.manifest.limit == 5 and result.manifest.counts.records == 5


def test_manifest_lists_what_design_md_names(project):
    result = run_pipeline(Mixed(project))
    manifest = json.loads(result.paths.manifest.read_text())
    assert manifest["pipeline"] == "mixed"
    assert manifest["pipeline_source"].endswith("test_run.py") and len(manifest["pipeline_source_sha256"]) == 64
    assert manifest["model_deps"]["judge"]["provider"] == "mock"
    assert manifest["model_deps"]["judge"]["params"] == {"temperature": 0.2}
    assert len(manifest["model_deps"]["judge"]["fingerprint"]) == 64
    assert manifest["git"]["commit"] is None and manifest["git"]["note"]  # tmp dir: no repository
    assert manifest["usage"]["judge"]["requests"] == 30
    import hashlib
    assert manifest["output"]["sha256"] == hashlib.sha256(result.paths.samples.read_bytes()).hexdigest()
    assert manifest["errors_output"]["sha256"] == hashlib.sha256(result.paths.errors.read_bytes()).hexdigest()


def test_file_dep_read_and_path(project):
    class Reader(Pipeline):
        name = "reader"
        narrative = Pipeline.file_dep("identity/NARRATIVE.md")

        def run(self):
            assert self.narrative.path == project.root / "identity" / "NARRATIVE.md"
            facts = [line[2:] for line in self.narrative.read().splitlines() if line.startswith("- ")]
            return [qa(str(i), "fact?", f) for i, f in enumerate(facts)]

    result = run_pipeline(Reader(project))
    assert [s["messages"][1]["content"] for s in read_jsonl(result.paths.samples)] == [
        "fact one", "fact two", "fact three"]
    assert result.manifest.file_deps["narrative"].path == "identity/NARRATIVE.md"


def test_query_then_run_task(project):
    class TwoPhase(Pipeline):
        name = "two-phase"
        judge = Pipeline.model_dep("judge")

        def run(self):
            topics = self.query(model=self.judge, messages=[{"role": "user", "content": "list topics"}])
            assert topics.is_success
            return self.run_task(self.task, records=[{"id": "a", "topic": topics.get_text()}])

        def task(self, record):
            answer = yield model_request(record["topic"], model=self.judge)
            return qa(record["id"], record["topic"], answer.get_text())

    result = run_pipeline(TwoPhase(project))
    assert result.manifest.usage["judge"].requests == 2
    assert read_jsonl(result.paths.samples)[0]["messages"][0]["content"].startswith("[mock-judge")


def test_failed_response_is_visible_to_the_task(project):
    class Checks(Pipeline):
        name = "checks"
        flaky = Pipeline.model_dep("flaky")

        def run(self):
            return self.run_task(self.task, records=[{"id": "ok"}, {"id": "FAIL"}])

        def task(self, record):
            response = yield model_request(f"prompt {record['id']}", model=self.flaky)
            if not response.is_success:
                raise PipelineError(f"API call failed: {response.error.message}", error_type="api_error")
            return qa(record["id"], "q", response.get_text())

    result = run_pipeline(Checks(project))
    (error,) = read_errors(result.paths.errors)
    assert error["error"] == "api_error" and "mock failure" in error["message"]
    assert error["steps"][0]["error"]["type"] == "mock_error"
    assert result.manifest.usage["flaky"].failed == 1


# -- batching and concurrency -----------------------------------------------------------------

class Probe:
    """A provider that records batch sizes and how many calls are in flight at once."""

    from shaping.providers.base import Provider as _Base

    class Provider(_Base):
        default_batch_size = 1
        default_concurrency = 1000
        in_flight = 0
        peak = 0
        batches: list[int] = []

        async def generate_batch(self, requests):
            cls = type(self)
            cls.batches.append(len(requests))
            cls.in_flight += 1
            cls.peak = max(cls.peak, cls.in_flight)
            await anyio.sleep(0.02)
            cls.in_flight -= 1
            from shaping.requests import ModelResponse
            return [ModelResponse(text=r.messages[-1].content.upper()) for r in requests]


@pytest.fixture
def probe(project):
    from shaping.providers.registry import PROVIDERS, register

    class P(Probe.Provider):
        in_flight, peak, batches = 0, 0, []

    register("probe", P)
    (project.root / "shaping.toml").write_text(
        (project.root / "shaping.toml").read_text()
        + '\n[models.probe]\nprovider = "probe"\nmodel = "p"\n'
        + '\n[models.probe-batched]\nprovider = "probe-batched"\nmodel = "pb"\nmax_concurrency = 1\n'
    )

    class PB(P):
        default_batch_size = 8

    register("probe-batched", PB)
    from shaping.config import Project
    yield Project.load(project.root), P, PB
    PROVIDERS.pop("probe"), PROVIDERS.pop("probe-batched")


def one_step(model, count=40, workers=None):
    class OneStep(Pipeline):
        name = "one-step"

        def run(self):
            return self.run_task(self.task, records=[{"id": str(i)} for i in range(count)])

        def task(self, record):
            r = yield model_request(f"p{record['id']}", model=model)
            return qa(record["id"], "q", r.get_text())

    OneStep.workers = workers or 256
    return OneStep


def test_records_run_concurrently_up_to_workers(probe):
    project, P, _ = probe
    run_pipeline(one_step("probe", count=40, workers=10)(project))
    assert P.peak == 10


def test_yielded_list_is_in_flight_at_once(probe):
    project, P, _ = probe

    class Fan(Pipeline):
        name = "fan"

        def run(self):
            return self.run_task(self.task, records=[{"id": "only"}])

        def task(self, record):
            answers = yield [model_request(f"q{i}", model="probe") for i in range(6)]
            return qa("only", "q", ",".join(a.get_text() for a in answers))

    started = time.perf_counter()
    result = run_pipeline(Fan(project))
    assert P.peak == 6
    assert time.perf_counter() - started < 2
    assert read_jsonl(result.paths.samples)[0]["messages"][1]["content"] == "Q0,Q1,Q2,Q3,Q4,Q5"


def test_batching_provider_gets_batches_across_records(probe):
    project, _, PB = probe
    result = run_pipeline(one_step("probe-batched", count=40)(project))
    assert sum(PB.batches) == 40
    assert max(PB.batches) == 8  # requests from different records share a call
    assert PB.peak == 1  # max_concurrency = 1
    assert [s["messages"][1]["content"] for s in read_jsonl(result.paths.samples)] == [
        f"P{i}" for i in range(40)]


def test_order_holds_when_records_finish_out_of_order(project):
    class Shuffled(Pipeline):
        name = "shuffled"
        judge = Pipeline.model_dep("judge")

        def run(self):
            return self.run_task(self.task, records=[{"id": str(i)} for i in range(50)])

        def task(self, record):
            for _ in range(random.Random(record["id"]).randint(0, 4)):
                yield model_request("again", model=self.judge)
            return qa(record["id"], "q", "a")

    result = run_pipeline(Shuffled(project))
    assert [s["id"] for s in read_jsonl(result.paths.samples)] == [str(i) for i in range(50)]


# -- bad input ----------------------------------------------------------------------------------

def leftovers(project):
    data = project.data_dir
    return sorted(p.name for p in data.iterdir()) if data.exists() else []


def test_missing_file_dep_is_named(project):
    class Missing(Pipeline):
        name = "missing"
        notes = Pipeline.file_dep("identity/NOPE.md")

        def run(self):
            return []

    with pytest.raises(DependencyError, match=r"pipeline 'missing': file_dep notes: identity/NOPE.md not found"):
        run_pipeline(Missing(project))
    assert leftovers(project) == []


def test_unknown_model_lists_known_ones(project):
    class Unknown(Pipeline):
        name = "unknown"
        m = Pipeline.model_dep("nope")

        def run(self):
            return []

    with pytest.raises(ConfigError, match=r"unknown model 'nope' \(known models: flaky, judge, writer\)"):
        run_pipeline(Unknown(project))


def test_unknown_model_in_a_request_stops_the_run(project):
    class Undeclared(Pipeline):
        name = "undeclared"

        def run(self):
            return self.run_task(self.task, records=[{"id": "1"}, {"id": "2"}])

        def task(self, record):
            yield [model_request("x", model="judge"), model_request("x", model="ghost")]

    with pytest.raises(ConfigError, match="unknown model 'ghost'"):
        run_pipeline(Undeclared(project))
    assert leftovers(project) == []


def test_yield_of_non_request_stops_the_run_with_no_output(project):
    class Bad(Pipeline):
        name = "bad"

        def run(self):
            return self.run_task(self.task, records=[{"id": "1"}])

        def task(self, record):
            yield "hello"

    with pytest.raises(TaskContractError, match=r"pipeline 'bad': task Bad.task \(record '1'\) yielded str 'hello'"):
        run_pipeline(Bad(project))
    assert leftovers(project) == []


@pytest.mark.parametrize("returned", [None, "text", {"id": "1"}, [{"id": "1", "messages": []}]])
def test_run_returning_non_samples(project, returned):
    class Wrong(Pipeline):
        name = "wrong"

        def run(self):
            return returned

    with pytest.raises(TaskContractError, match=r"pipeline 'wrong': run\(\) returned"):
        run_pipeline(Wrong(project))
    assert leftovers(project) == []


@pytest.mark.parametrize("limit", [0, -3])
def test_limit_must_be_positive(project, limit):
    with pytest.raises(ShapingError, match="limit must be at least 1"):
        run_pipeline(Mixed(project), limit=limit)


def test_output_in_missing_folder(project, tmp_path):
    with pytest.raises(OutputError, match="output folder .*nowhere does not exist"):
        run_pipeline(Mixed(project), output=tmp_path / "nowhere" / "x.jsonl")


def test_output_path_names_the_other_files(project, tmp_path):
    result = run_pipeline(Mixed(project), output=tmp_path / "custom.jsonl")
    assert result.paths.errors == tmp_path / "errors" / "custom.jsonl"
    assert result.paths.manifest.is_file() and result.paths.samples.is_file()


def test_exception_in_run_leaves_no_files(project):
    class Crashes(Mixed):
        name = "crashes"

        def run(self):
            self.run_task(self.task, records=[{"id": "1", "n": 1}])
            raise RuntimeError("after the tasks")

    with pytest.raises(RuntimeError):
        run_pipeline(Crashes(project))
    assert leftovers(project) == []


def test_run_task_outside_a_run_says_how(project):
    with pytest.raises(ShapingError, match="works during a run"):
        Mixed(project).run()


def test_ray_executor_without_ray_says_how_to_install_it(project, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ShapingError, match=r"--executor ray needs Ray: pip install 'shaping\[ray\]'"):
        run_pipeline(Mixed(project), executor="ray")


def test_workers_bound_the_records_in_flight_and_records_are_read_as_needed(tmp_path):
    from tests.conftest import write_project

    project = write_project(tmp_path, '[models.slow]\nprovider = "mock"\nmodel = "m"\n'
                                      '[models.slow.options]\nlatency_s = 0.02\n')
    seen = {"in_flight": 0, "peak": 0, "read": 0, "read_ahead": 0, "done": 0}

    class Bounded(Pipeline):
        name = "bounded"
        workers = 3
        slow = Pipeline.model_dep("slow")

        def run(self):
            def records():  # no len(): read one at a time
                for i in range(20):
                    seen["read"] += 1
                    seen["read_ahead"] = max(seen["read_ahead"], seen["read"] - seen["done"])
                    yield {"id": f"r{i}"}
            return self.run_task(self.task, records=records())

        def task(self, record):
            seen["in_flight"] += 1
            seen["peak"] = max(seen["peak"], seen["in_flight"])
            answer = yield model_request(record["id"], model=self.slow)
            seen["in_flight"] -= 1
            seen["done"] += 1
            return qa(record["id"], record["id"], answer.get_text())

    result = run_pipeline(Bounded(project))
    assert [s["id"] for s in read_jsonl(result.paths.samples)] == [f"r{i}" for i in range(20)]
    assert seen["peak"] == 3 and seen["read_ahead"] <= 3


class Appended(Pipeline):
    """A turn added after the sample was made (pydantic does not check it) and a tool schema with
    an infinite bound: both written as JSON any reader takes."""

    name = "appended"
    judge = Pipeline.model_dep("judge")

    def run(self):
        return self.run_task(self.task, records=[{"id": "a"}, {"id": "b"}])

    def task(self, record):
        response = yield model_request("question", model=self.judge)
        sample = qa(record["id"], "question", response.get_text())
        sample.messages.append({"role": "user", "content": "and then?"})
        sample.tools = [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"x": {"type": "number", "maximum": float("inf")}}}}}]
        return sample


@pytest.mark.parametrize("annotate", [False, True])
def test_a_turn_appended_after_the_sample_was_made_is_written(project, annotate):
    result = run_pipeline(Appended(project), annotate=annotate)
    lines = result.paths.samples.read_text().splitlines()
    samples = [json.loads(line) for line in lines]  # strict JSON: no NaN or Infinity
    assert [s["messages"][-1] for s in samples] == [{"role": "user", "content": "and then?"}] * 2
    if not annotate:
        assert samples[0]["tools"][0]["function"]["parameters"]["properties"]["x"]["maximum"] is None


def test_run_task_leaves_no_cancel_request_on_its_caller_after_an_error(project):
    """A worker's error stops asyncio's task group: the caller's task must not keep its cancel
    request (Python 3.11/3.12), or its next cancel scope would not end cleanly."""
    import asyncio

    from shaping.dispatch import Dispatcher

    def broken(n):
        for i in range(n):
            if i == 5:
                raise RuntimeError("the records broke")
            yield {"id": str(i)}

    def task(record):
        response = yield model_request("q", model="judge")
        return qa(record["id"], "q", response.get_text())

    async def main():
        dispatcher = Dispatcher(project, "p", workers=4, annotate=False, spool_dir=project.root)
        async with dispatcher.session():
            with pytest.raises(RuntimeError, match="the records broke"):
                await dispatcher.run_task(task, broken(50))
            assert asyncio.current_task().cancelling() == 0
            with anyio.move_on_after(0.05) as scope:
                await anyio.sleep(1)
            assert scope.cancelled_caught
            assert len(await dispatcher.run_task(task, broken(3))) == 3
        dispatcher.discard_spools()

    anyio.run(main)


def test_spool_writes_lines_in_order_bounds_what_it_holds_and_refuses_writes_once_finished(tmp_path):
    import hashlib

    from shaping.spool import Spool

    spool = Spool(tmp_path, "s")
    spool.write(b"x" * (2 << 20))  # over the bytes bound: on its way to the disk at once
    assert spool.path.stat().st_size >= 2 << 20
    lines = [f'{{"n": {i}}}'.encode() for i in range(1000)]  # several batches of 256 and a rest
    for line in lines:
        spool.write(line)
    sha = spool.finish()
    data = spool.path.read_bytes()
    assert data == b"x" * (2 << 20) + b"\n" + b"".join(line + b"\n" for line in lines)
    assert sha == hashlib.sha256(data).hexdigest()
    with pytest.raises(ValueError, match="after it was finished"):
        spool.write(b"late")
    spool.discard()
