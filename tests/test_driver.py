"""Driving one record's task generator: the three yield forms, endings and failures."""

import anyio
import pytest

from shaping.dispatch.driver import Attempt, drive
from shaping.errors import PipelineError, TaskContractError
from shaping.requests import ModelResponse, model_request
from shaping.samples import TrainingSample


def sample(text="x"):
    return TrainingSample(id="r", messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": text}])


class Recorder:
    """Answers each request with its step index and last message; remembers the order."""

    def __init__(self):
        self.seen = []

    async def __call__(self, request, step):
        self.seen.append((step, request.messages[-1].content))
        await anyio.sleep(0)
        return [Attempt(request, request.params, ModelResponse(text=f"answer {step}: {request.messages[-1].content}", model="m"))]


def run(task, record=None):
    answer = Recorder()
    outcome = anyio.run(drive, task, record or {}, "r", answer)
    return outcome, answer


def req(text, **params):
    return model_request(text, model="judge", **params)


def test_single_yield_gets_the_response():
    def task(record):
        response = yield req("hello")
        return sample(response.get_text())

    outcome, answer = run(task)
    assert outcome.error_type is None
    assert outcome.samples[0].messages[-1].content == "answer 0: hello"
    assert [s.index for s in outcome.steps] == [0]
    assert outcome.steps[0].text == "answer 0: hello"


def test_sequential_yields_flow_into_each_other():
    def task(record):
        a = yield req("first")
        b = yield req(f"second after {a.get_text()}")
        c = yield req(f"third after {b.get_text()}")
        return sample(c.get_text())

    outcome, answer = run(task)
    assert answer.seen[1] == (1, "second after answer 0: first")
    assert outcome.samples[0].messages[-1].content.startswith("answer 2: third after answer 1:")
    assert [s.index for s in outcome.steps] == [0, 1, 2]


def test_list_yield_answers_in_order_with_consecutive_steps():
    def task(record):
        first = yield req("one")
        a, b, c = yield [req("a"), req("b"), req("c")]
        return sample("|".join(r.get_text() for r in (first, a, b, c)))

    outcome, _ = run(task)
    assert outcome.samples[0].messages[-1].content == "answer 0: one|answer 1: a|answer 2: b|answer 3: c"
    assert [(s.index, s.messages[-1].content) for s in outcome.steps] == [(0, "one"), (1, "a"), (2, "b"), (3, "c")]


def test_empty_list_yield_is_answered_with_empty_list():
    def task(record):
        got = yield []
        assert got == []
        return sample("empty ok")

    outcome, answer = run(task)
    assert outcome.samples[0].messages[-1].content == "empty ok"
    assert answer.seen == [] and outcome.steps == []


def test_task_that_never_yields_a_generator():
    def task(record):
        return sample("no requests")
        yield  # noqa: unreachable - makes this a generator

    outcome, answer = run(task)
    assert outcome.samples[0].messages[-1].content == "no requests"
    assert answer.seen == []


def test_plain_function_task_returning_a_sample():
    outcome, _ = run(lambda record: sample("plain"))
    assert outcome.samples[0].messages[-1].content == "plain"


def test_list_of_samples_is_allowed():
    outcome, _ = run(lambda record: [sample("a"), sample("b")])
    assert len(outcome.samples) == 2


@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_pipeline_error_at_each_point_keeps_steps_so_far(where):
    def task(record):
        if where == "before":
            raise PipelineError("bad before", error_type="early")
        yield req("one")
        if where == "between":
            raise PipelineError("bad between", error_type="middle")
        yield req("two")
        raise PipelineError("bad after", error_type="late")

    outcome, _ = run(task)
    expected = {"before": ("early", 0), "between": ("middle", 1), "after": ("late", 2)}[where]
    assert (outcome.error_type, len(outcome.steps)) == expected
    assert outcome.message == f"bad {where}"
    assert outcome.samples == []


def test_other_exception_is_unexpected_error_with_traceback():
    def task(record):
        yield req("one")
        return {"oops": 1}["missing"]

    outcome, _ = run(task)
    assert outcome.error_type == "unexpected_error"
    assert outcome.message == "KeyError: 'missing'"
    assert "Traceback" in outcome.traceback and "missing" in outcome.traceback
    assert len(outcome.steps) == 1


def test_failed_response_get_text_becomes_its_error_type():
    async def failing(request, step):
        return [Attempt(request, request.params, ModelResponse.failure("rate_limited", "429 Too Many Requests", model="m"))]

    def task(record):
        response = yield req("one")
        return sample(response.get_text())

    outcome = anyio.run(drive, task, {}, "r", failing)
    assert outcome.error_type == "rate_limited"
    assert "429 Too Many Requests" in outcome.message
    assert outcome.steps[0].error.type == "rate_limited"


def test_returning_none_is_an_error_record_not_a_silent_drop():
    def task(record):
        yield req("one")
        return None

    outcome, _ = run(task)
    assert outcome.error_type == "no_sample"
    assert "raise PipelineError" in outcome.message


@pytest.mark.parametrize("bad", ["a string", {"role": "user"}, [req("ok"), "not a request"], 42])
def test_yielding_something_not_a_request_stops_the_run(bad):
    def task(record):
        yield bad

    with pytest.raises(TaskContractError, match=r"task .*task.* \(record 'r'\) yielded .*expected model_request"):
        run(task)


def test_returning_something_not_a_sample_stops_the_run():
    def task(record):
        yield req("one")
        return {"id": "1", "messages": []}

    with pytest.raises(TaskContractError, match="returned dict .*expected a TrainingSample"):
        run(task)


def test_generator_is_closed_when_the_task_fails():
    closed = []

    def task(record):
        try:
            yield req("one")
            yield "junk"
        finally:
            closed.append(True)

    with pytest.raises(TaskContractError):
        run(task)
    assert closed == [True]


def test_annotated_output_is_byte_for_byte_the_models_json(tmp_path):
    """Annotated lines are written from plain fields, not from models: they must not differ."""
    import dataclasses
    import datetime as dt
    import decimal
    import time
    from pathlib import PurePosixPath

    from shaping.config import Project
    from shaping.dispatch import Dispatcher
    from shaping.dispatch.driver import Outcome
    from shaping.requests import ResponseError, Usage
    from shaping.samples import AnnotatedTrainingSample

    @dataclasses.dataclass
    class Row:
        name: str
        score: float

    (tmp_path / "shaping.toml").write_text("")
    dispatcher = Dispatcher(Project.load(tmp_path), "p", workers=1, annotate=True, commit="abc123",
                            metadata={"run": "r1", "shared": 1})
    failed = ModelResponse(model="m", error=ResponseError(type="rate_limited", message="slow down é ✓",
                                                          status_code=429, retryable=True, retry_after=1.5))
    good = ModelResponse(text='{"a": 1}\n"quoted"', model="m", usage=Usage(prompt_tokens=3, completion_tokens=9),
                         finish_reason="stop", latency_s=0.1234567891, attempts=2, cached=True, cost_usd=0.000123)
    request = req("question ✓", temperature=0.2)
    record = {"id": "r", "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), "tags": {"b"},
              "pair": (1, 2.5), "path": PurePosixPath("/x/y"), "price": decimal.Decimal("1.10"),
              "raw": b"bytes", "row": Row("n", 0.5), "nan": float("nan"), "odd": object}
    outcome = Outcome(record_id="r", started=time.time(), completed=dt.datetime(2026, 5, 6, tzinfo=dt.timezone.utc).timestamp(),
                      raw_steps=[(0, request, {"temperature": 0.2, "stop": ["\n"]}, failed, 0),
                                 (1, request, {}, good, 1)])
    made = TrainingSample(id="r", messages=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                          metadata={"shared": 2, "own": [1, None]})
    expected = AnnotatedTrainingSample(
        id=made.id, messages=made.messages, metadata={"run": "r1", "shared": 2, "own": [1, None]},
        input_data=record, steps=outcome.steps, pipeline_commit="abc123",
        started_at=outcome.started_at, completed_at=outcome.completed_at).to_line()
    assert dispatcher._annotated_json(made, record, outcome) == expected
