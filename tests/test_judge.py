"""The LLM judge step (`Pipeline.judge`) and the `min_judge_score` threshold, on crafted verdicts."""

import json

import pytest

from shaping import run_pipeline
from shaping.discovery import discover
from shaping.errors import PipelineDefinitionError, TaskContractError
from shaping.judge import judge_request, rejection
from shaping.samples import TrainingSample
from tests.conftest import read_errors, read_jsonl, write_project
from shaping.testing import LoopbackServer
from tests.test_cli import isf

PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Judged(Pipeline):
    name = "judged"
    judge_model = Pipeline.model_dep("judge")
    quality = {"min_judge_score": 3}
    scale = (1, 5)

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(6)])

    def task(self, record):
        sample = TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": f"question {record['id']}"},
            {"role": "assistant", "content": f"answer {record['id']}", "reasoning_content": "secret thoughts"}])
        if record["id"] == "5":
            return sample  # a path that does not judge
        sample = yield from self.judge_sample(self.judge_model, sample, rubric="Is the answer right?", scale=self.scale)
        return sample
'''


@pytest.fixture
def server():
    server = LoopbackServer("openai")
    server.start()
    yield server
    server.stop()


def project_for(tmp_path, server, pipeline=PIPELINE):
    project = write_project(tmp_path, f'[models.judge]\nprovider = "openai"\nmodel = "j"\n'
                                      f'base_url = "{server.base_url}"\nretry_backoff_s = 0.01\nmax_retries = 0\n')
    (tmp_path / "pipelines" / "judged.py").write_text(pipeline)
    return project


def scores(by_id):
    """A judge whose score for record i is by_id[i]."""
    def reply(received):
        prompt = received.messages[1]["content"]
        record = prompt.split("USER: question ")[1].split("\n")[0]
        return json.dumps({"rationale": f"about {record}", "score": by_id[record]})
    return reply


def run(project, **attrs):
    pipeline = discover(project)["judged"].cls(project)
    for key, value in attrs.items():
        setattr(pipeline, key, value)
    return run_pipeline(pipeline, use_cache=False)


def test_scores_go_into_metadata_and_low_ones_to_the_rejected_file(tmp_path, server):
    project = project_for(tmp_path, server)
    server.reply = scores({"0": 5, "1": 2, "2": 3, "3": 1, "4": 4})
    result = run(project)
    samples = read_jsonl(result.paths.samples)
    assert [s["id"] for s in samples] == ["0", "2", "4", "5"]  # the unjudged one is kept
    assert samples[0]["metadata"]["judge"] == {"score": 5, "rationale": "about 0", "scale": [1, 5]}
    assert "judge" not in samples[3]["metadata"]
    rejected = read_jsonl(result.paths.rejected)
    assert [(r["id"], r["reason"], r["judge"]["score"]) for r in rejected] == [
        ("1", "judge score 2 is under min_judge_score 3", 2), ("3", "judge score 1 is under min_judge_score 3", 1)]
    assert rejected[0]["messages"][1] == {"role": "assistant", "content": "answer 1", "reasoning_content": "secret thoughts"}
    assert [r["record_id"] for r in rejected] == ["1", "3"]  # the record that made each, variants or not
    assert (result.manifest.counts.samples, result.manifest.counts.rejected) == (4, 2)
    # what the judge was shown: the rubric, the scale, the conversation, not the reasoning
    body = server.received[0].body
    prompt = body["messages"][1]["content"]
    assert "Rubric: Is the answer right?" in prompt and "from 1 (worst) to 5 (best)" in prompt
    assert "ASSISTANT: answer" in prompt and "secret thoughts" not in prompt
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"]["minimum"] == 1 and schema["properties"]["score"]["maximum"] == 5
    assert list(schema["properties"]) == ["rationale", "score"]
    # validate and the report show the distribution
    checked = isf(tmp_path, "pipeline", "validate", "judged")
    line = next(l for l in checked.stdout.splitlines() if "judge scores" in l)
    assert line.split()[0] == "PASS" and "3: 1, 4: 1, 5: 1 (mean 4.00); 1 not judged; 2 rejected by the run" in line
    isf(tmp_path, "pipeline", "report", "judged", "-o", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text()
    assert "judge score (score, 3 to 5)" in page and 'id="count-rejected">2<' in page
    # a later run with nothing under the threshold leaves no rejected file behind
    server.reply = scores({str(i): 4 for i in range(5)})
    again = run(project)
    assert not again.paths.rejected.exists() and again.manifest.rejected_output is None
    assert len(read_jsonl(again.paths.samples)) == 6


def test_a_score_outside_the_scale_is_repaired_then_fails_the_record(tmp_path, server):
    project = project_for(tmp_path, server)
    server.reply = scores({"0": 9, "1": 3, "2": 3, "3": 3, "4": 3})
    result = run(project)
    errors = read_errors(result.paths.errors)
    assert [e["id"] for e in errors] == ["0"] and errors[0]["error"] == "validation_error"
    assert errors[0]["message"].startswith("judge: ") and len(errors[0]["steps"]) == 3  # asked, 2 repairs
    assert [s["id"] for s in read_jsonl(result.paths.samples)] == ["1", "2", "3", "4", "5"]


def test_the_threshold_and_the_scale_are_checked(tmp_path, server):
    project = project_for(tmp_path, server, PIPELINE.replace('{"min_judge_score": 3}', '{"min_judge_score": "3"}'))
    with pytest.raises(PipelineDefinitionError, match="min_judge_score must be a number, got '3'"):
        run(project)
    project = project_for(tmp_path, server)
    with pytest.raises(TaskContractError, match=r"judge: scale must be two whole numbers \(low, high\) with low < high"):
        run(project, scale=(5, 1))  # a mistake in the pipeline's code: the run stops
    assert server.received == [] and not (tmp_path / "training" / "data" / "judged.jsonl").exists()


def test_judge_request_shape_and_rejection_rule():
    sample = TrainingSample(id="a", messages=[{"role": "user", "content": "hi"},
                                              {"role": "assistant", "content": "",
                                               "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}],
                            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])
    request = judge_request("judge", sample, "Good tool use?", (0, 10), context="Expected: call f", temperature=0)
    prompt = request.messages[1].text
    assert 'TOOLS OFFERED: ["f"]' in prompt and "[calls f({})]" in prompt and "Expected: call f" in prompt
    assert request.params == {"temperature": 0} and request.response_model.model_json_schema()["properties"]["score"]["maximum"] == 10
    sample.metadata["judge"] = {"score": 2.5}
    assert rejection(sample, 3) == "judge score 2.5 is under min_judge_score 3"
    assert rejection(sample, 2) is None and rejection(sample, None) is None
    with pytest.raises(TaskContractError, match="rubric must be a non-empty string"):
        judge_request("judge", sample, " ")


def test_a_dependency_may_not_hide_a_pipeline_method():
    from shaping.pipeline import Pipeline

    with pytest.raises(PipelineDefinitionError, match="query is a method of Pipeline; give the ModelDep another name"):
        type("Hiding", (Pipeline,), {"query": Pipeline.model_dep("judge")})
    type("Fine", (Pipeline,), {"judge": Pipeline.model_dep("judge")})  # the judge step is judge_sample
