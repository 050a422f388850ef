"""Outputs load with `datasets.load_dataset("json", ...)`: each file alone at any size, and
several pipelines' outputs through one glob, annotated or not."""

import json

import pytest

from shaping import run_pipeline
from shaping.pipeline import Pipeline, TrainingSample, model_request
from tests.conftest import write_project

datasets = pytest.importorskip("datasets")


class Facts(Pipeline):
    name = "facts"
    judge = Pipeline.model_dep("judge")
    count = 6
    padding = 0
    late_key_from = None

    def run(self):
        records = []
        for i in range(self.count):
            record = {"id": f"f{i}", "topic": f"topic {i}", "notes": "x" * self.padding}
            if self.late_key_from is not None and i >= self.late_key_from:
                record["source"] = {"url": f"https://example.org/{i}", "rank": i}  # a key only late records have
            records.append(record)
        return self.run_task(self.task, records=records)

    def task(self, record):
        answer = yield model_request(f"Tell me about {record['topic']}", model=self.judge, metadata={"n": 1})
        return TrainingSample(id=record["id"], metadata={"topic": record["topic"]}, messages=[
            {"role": "user", "content": f"Tell me about {record['topic']}"}, answer.as_message()])


class Stories(Pipeline):
    name = "stories"
    writer = Pipeline.model_dep("writer")

    def run(self):
        return self.run_task(self.task, records=[{"id": f"s{i}", "words": ["owl", i]} for i in range(4)])

    def task(self, record):
        if record["id"] == "s3":
            from shaping.pipeline import PipelineError

            raise PipelineError("no story", error_type="rejected")
        story = yield model_request(f"A story with {record['words']}", model=self.writer, temperature=0.9)
        return TrainingSample(id=record["id"], metadata={"length": 3, "tags": ["a", "b"]}, messages=[
            {"role": "system", "content": "Tell stories."},
            {"role": "user", "content": f"A story with {record['words']}"}, story.as_message()])


class ToolTurns(Pipeline):
    name = "tools"

    def run(self):
        return self.run_task(self.task, records=[{"id": f"t{i}"} for i in range(6)])

    def task(self, record):
        calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
        return TrainingSample(id=record["id"], tools=[{"type": "function"}], messages=[
            {"role": "user", "content": "hi"}, {"role": "assistant", "content": "", "tool_calls": calls},
            {"role": "tool", "tool_call_id": "c1", "content": "3"},
            {"role": "assistant", "content": "3", "reasoning_content": "because"}])


def load(tmp_path, files):
    return datasets.load_dataset("json", data_files=files, split="train", cache_dir=str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("annotate", [True, False])
def test_several_pipelines_load_through_one_glob(tmp_path, annotate):
    project = write_project(tmp_path)
    run_pipeline(Facts(project), annotate=annotate)
    run_pipeline(Stories(project), annotate=annotate)  # one error record: an errors file exists
    empty = Facts(project)
    empty.count = 0
    run_pipeline(empty, annotate=annotate, output=tmp_path / "training" / "data" / "nothing.jsonl")
    data = tmp_path / "training" / "data"
    assert (data / "errors" / "stories.jsonl").exists() and not (data / "errors" / "facts.jsonl").exists()  # none failed
    loaded = load(tmp_path, str(data / "*.jsonl"))
    assert sorted(loaded["id"]) == ["f0", "f1", "f2", "f3", "f4", "f5", "s0", "s1", "s2"]
    if annotate:  # the free-form parts are JSON text: one schema for every pipeline
        row = loaded[0]
        assert isinstance(row["steps"], str) and isinstance(json.loads(row["steps"]), list)
        assert {json.loads(r)["topic"] for r in loaded["metadata"] if "topic" in json.loads(r)} == {
            f"topic {i}" for i in range(6)}
    else:
        assert set(loaded.column_names) == {"id", "messages"}


def test_a_large_annotated_file_whose_keys_change_late_loads(tmp_path):
    project = write_project(tmp_path)
    facts = Facts(project)
    facts.count, facts.padding, facts.late_key_from = 2600, 4500, 2500
    result = run_pipeline(facts, annotate=True)
    assert result.paths.samples.stat().st_size > 10 * 2**20  # more than one of the reader's 10 MiB blocks
    loaded = load(tmp_path, str(result.paths.samples))
    assert len(loaded) == 2600
    assert json.loads(loaded[2599]["input_data"])["source"] == {"url": "https://example.org/2599", "rank": 2599}
    assert "source" not in json.loads(loaded[0]["input_data"])


def test_annotated_lines_read_back_through_the_python_api(tmp_path):
    project = write_project(tmp_path)
    result = run_pipeline(Facts(project), annotate=True)
    raw = json.loads(result.paths.samples.read_text().splitlines()[0])
    assert [type(raw[k]).__name__ for k in ("metadata", "input_data", "steps")] == ["str", "str", "str"]
    from shaping.samples import AnnotatedTrainingSample

    sample = AnnotatedTrainingSample.from_line(result.paths.samples.read_bytes().splitlines()[0])
    assert sample.metadata == {"topic": "topic 0"} and sample.input_data["id"] == "f0"
    assert sample.steps[0].metadata == {"n": 1} and sample.to_line() == result.paths.samples.read_bytes().splitlines()[0]


def test_pipelines_whose_messages_differ_load_together_with_the_features(tmp_path):
    project = write_project(tmp_path)
    run_pipeline(Facts(project), annotate=False)
    tools = ToolTurns(project)  # messages with tool calls and reasoning, and tools
    run_pipeline(tools, annotate=False)
    from shaping.samples import datasets_features

    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "training" / "data" / "*.jsonl"), split="train",
                                   features=datasets_features(), cache_dir=str(tmp_path / "hf-cache"))
    plain = [r for r in loaded if r["tools"] is None]
    rich = [r for r in loaded if r["tools"] is not None]
    assert len(plain) == len(rich) == 6
    assert plain[0]["messages"] == [{"role": "user", "content": "Tell me about topic 0"},
                                    json.loads((tmp_path / "training" / "data" / "facts.jsonl").read_text()
                                               .splitlines()[0])["messages"][1]]
    written = [json.loads(l) for l in (tmp_path / "training" / "data" / "tools.jsonl").read_text().splitlines()]
    assert rich[0]["messages"] == written[0]["messages"] and rich[0]["tools"] == [{"type": "function"}]


def test_annotated_and_minimal_outputs_load_together_with_the_annotated_features(tmp_path):
    project = write_project(tmp_path)
    run_pipeline(Facts(project), annotate=True)
    minimal = tmp_path / "training" / "data" / "a-stories.jsonl"  # first in the glob: alone, datasets
    run_pipeline(Stories(project), annotate=False, output=minimal)  # would take its two columns for all
    from shaping.samples import datasets_features

    loaded = datasets.load_dataset("json", data_files=str(tmp_path / "training" / "data" / "*.jsonl"), split="train",
                                   features=datasets_features(annotated=True), cache_dir=str(tmp_path / "hf-cache"))
    rows = {r["id"]: r for r in loaded}
    assert sorted(rows) == ["f0", "f1", "f2", "f3", "f4", "f5", "s0", "s1", "s2"]
    assert json.loads(rows["f0"]["steps"]) and rows["s0"]["steps"] is None  # a minimal line has no provenance
    assert rows["s0"]["messages"] == json.loads(
        minimal.read_text().splitlines()[0])["messages"]
