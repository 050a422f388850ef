"""Structured output: JSON asked for, checked, and sent back for repair; every attempt a step."""

import json

import pytest
from pydantic import BaseModel, Field

from shaping import run_pipeline
from shaping.errors import RunFailedError
from shaping.pipeline import Pipeline, TrainingSample, model_request
from tests.conftest import read_errors, read_jsonl, write_project
from shaping.testing import LoopbackServer


class Verdict(BaseModel):
    label: str
    score: int = Field(ge=1, le=5)


SCHEMA = {"type": "object", "required": ["tags"],
          "properties": {"tags": {"type": "array", "minItems": 2, "items": {"type": "string"}}}}


class Judge(Pipeline):
    name = "judge-run"
    judge = Pipeline.model_dep("judge")
    response_model = Verdict
    max_repairs = 2

    def run(self):
        return self.run_task(self.task, records=[{"id": "a"}, {"id": "b"}])

    def task(self, record):
        verdict = yield model_request(f"judge {record['id']}", model=self.judge,
                                      response_model=self.response_model, max_repairs=self.max_repairs)
        parsed = verdict.get_parsed()
        text = json.dumps(parsed) if isinstance(parsed, dict) else f"{parsed.label}:{parsed.score}"
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": "q"}, {"role": "assistant", "content": text}])


def project_with(tmp_path, server, provider="openai"):
    key = 'api_key_env = "SHAPING_TEST_KEY"\n' if provider == "anthropic" else ""
    return write_project(tmp_path, f'[models.judge]\nprovider = "{provider}"\nmodel = "j"\n'
                                   f'base_url = "{server.base_url}"\n{key}')


def run(project, **attrs):
    pipeline = Judge(project)
    for key, value in attrs.items():
        setattr(pipeline, key, value)
    try:
        result = run_pipeline(pipeline, annotate=True, use_cache=False)
    except RunFailedError as exc:  # every record failed: the run failed, its errors written beside
        return [], read_errors(exc.result.paths.failed_errors)
    return read_jsonl(result.paths.samples), read_errors(result.paths.errors)


def test_invalid_then_valid_json_is_repaired(tmp_path):
    with LoopbackServer("openai") as server:
        def reply(received):
            if len(received.messages) == 1:
                return "Here you go: {label: good}"                  # not JSON
            if len(received.messages) == 3:
                return '{"label": "good", "score": 9}'               # JSON, out of range
            return '```json\n{"label": "good", "score": 4}\n```'     # right, fenced
        server.reply = reply
        samples, errors = run(project_with(tmp_path, server))
        bodies = [r.body for r in server.received]
    assert errors == [] and [s["messages"][1]["content"] for s in samples] == ["good:4", "good:4"]
    assert len(bodies) == 6
    assert bodies[0]["response_format"]["type"] == "json_schema"
    assert bodies[0]["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 5
    steps = samples[0]["steps"]
    assert [(s["index"], s["repair"]) for s in steps] == [(0, 0), (0, 1), (0, 2)]
    assert "not valid JSON" in steps[1]["messages"][-1]["content"]
    assert steps[1]["messages"][-2] == {"role": "assistant", "content": "Here you go: {label: good}"}
    assert "score: Input should be less than or equal to 5" in steps[2]["messages"][-1]["content"]


def test_still_invalid_after_the_repairs_is_a_validation_error(tmp_path):
    with LoopbackServer("openai") as server:
        server.reply = lambda r: '{"label": "x"}'
        samples, errors = run(project_with(tmp_path, server), max_repairs=1)
    assert samples == [] and [e["error"] for e in errors] == ["validation_error"] * 2
    assert "no valid JSON after 2 attempt(s) (1 repairs)" in errors[0]["message"]
    assert "failed after" not in errors[0]["message"]  # one count of the tries, not two that disagree
    assert "score: Field required" in errors[0]["message"]
    assert [s["repair"] for s in errors[0]["steps"]] == [0, 1]
    assert errors[0]["steps"][-1]["error"]["type"] == "validation_error"


def test_a_json_schema_dict_works_too(tmp_path):
    with LoopbackServer("openai") as server:
        server.reply = lambda r: '{"tags": ["one"]}' if len(r.messages) == 1 else '{"tags": ["one", "two"]}'
        samples, errors = run(project_with(tmp_path, server), response_model=SCHEMA)
    assert errors == []
    assert json.loads(samples[0]["messages"][1]["content"]) == {"tags": ["one", "two"]}
    repair = samples[0]["steps"][1]["messages"][-1]["content"]
    assert "tags: ['one'] is too short" in repair
    assert '"minItems": 2' in repair  # the schema goes back with every repair turn


def test_without_response_format_the_schema_goes_in_the_prompt(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", "k")
    with LoopbackServer("anthropic") as server:
        server.reply = lambda r: '{"label": "fine", "score": 3}'
        samples, errors = run(project_with(tmp_path, server, provider="anthropic"))
        body = server.received[0].body
    assert errors == [] and "response_format" not in body
    prompt = body["messages"][-1]["content"]
    assert prompt.startswith("judge a") and "Answer with JSON only" in prompt and '"score"' in prompt


def test_the_mock_answers_schema_valid_json(tmp_path):
    project = write_project(tmp_path)
    samples, errors = run(project)
    assert errors == [] and all(":" in s["messages"][1]["content"] for s in samples)
    assert all(len(s["steps"]) == 1 for s in samples)


def test_a_bad_response_model_fails_in_the_task():
    with pytest.raises(TypeError, match="response_model must be a pydantic model class or a JSON schema"):
        model_request("x", model="judge", response_model=str)
