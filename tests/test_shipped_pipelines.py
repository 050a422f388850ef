"""The pipelines in pipelines/, end to end on the mock models, and honesty against a server."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shaping import run_pipeline
from shaping.errors import RunFailedError
from shaping.config import Project
from shaping.discovery import discover
from tests.conftest import read_errors, read_jsonl, write_project
from tests.servers import LoopbackServer

REPO = Path(__file__).resolve().parents[1]


def run_shipped(name, tmp_path, limit=3, **attrs):
    project = Project.load(REPO)
    pipeline = discover(project)[name].cls(project)
    for key, value in attrs.items():
        setattr(pipeline, key, value)
    result = run_pipeline(pipeline, limit=limit, output=tmp_path / f"{name}.jsonl", use_cache=False)
    return result, read_jsonl(result.paths.samples), read_errors(result.paths.errors)


def test_coding_distillation(tmp_path):
    result, samples, errors = run_shipped("coding-distillation", tmp_path, limit=6)
    assert len(samples) == 6 and errors == []
    for sample in samples:
        assert [m["role"] for m in sample["messages"]] == ["user", "assistant"]
        assert sample["steps"][0]["messages"][0]["content"].startswith("You are an expert programming teacher")
        assert {"category", "language", "source"} <= set(sample["metadata"])
    assert result.manifest.file_deps["prompts"].path == "pipelines/prompts"


def test_identity_augmentation_extracts_facts_with_one_query(tmp_path):
    result, samples, errors = run_shipped("identity-augmentation", tmp_path, limit=10)
    assert errors == [] and len(samples) >= 5
    narrative = (REPO / "identity" / "NARRATIVE.md").read_text()
    assert all(s["metadata"]["fact"] in narrative for s in samples)  # the mock answers from the document
    assert result.manifest.usage["judge"].requests == 1 + len(samples)  # the query, then one question each


def test_conversation_training_takes_the_first_user_turn(tmp_path):
    result, samples, errors = run_shipped("conversation-training", tmp_path, limit=None)
    prompts = {s["id"]: s["messages"][0]["content"] for s in samples}
    assert prompts["sg-002"] == "Can you explain what a mortgage is, simply?"
    assert prompts["oa-002"] == "Who are you, and who made you?"
    assert prompts["pr-001"] == "Tell me something you are not sure about."
    assert [(e["id"], e["error"]) for e in errors] == [("bad-001", "no_user_turn")]
    assert len(samples) + len(errors) == 10


def test_wildchat_training_names_the_real_dataset_and_the_identity_model():
    cls = discover(Project.load(REPO))["wildchat-training"].cls
    dep = cls.dataset_deps["conversations"]
    assert (dep.path, dep.split, dep.revision, dep.streaming) == ("allenai/WildChat-1M", "train", None, True)
    assert cls.model_deps["identity_model"].model_name == "cubsfan-release-full"


def test_wildchat_training_on_a_local_copy(tmp_path, monkeypatch):
    """The hub is out of reach in tests: a project's [datasets] table points the shipped pipeline at
    a WildChat-shaped parquet copy (tests/test_dataset_dep.py: filters, --limit, staleness, offline)."""
    import datasets

    from tests.test_dataset_dep import DEFAULT_IDS, wildchat_project

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    project = wildchat_project(tmp_path)
    result = run_pipeline(discover(project)["wildchat-training"].cls(project), limit=3, use_cache=False)
    samples = read_jsonl(result.paths.samples)
    assert [s["id"] for s in samples] == DEFAULT_IDS[:3] and read_errors(result.paths.errors) == []
    assert result.manifest.dataset_deps["conversations"].revision_resolved.startswith("sha256:")


def test_listing_and_status_of_the_repo_never_reach_the_hub(monkeypatch):
    import huggingface_hub

    from shaping.staleness import project_status

    def no_network(*args, **kwargs):
        raise AssertionError("reached for the Hugging Face Hub")

    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    project = Project.load(REPO)
    entries = discover(project)
    assert "wildchat-training" in entries and not entries.broken
    if not project.outputs("wildchat-training").manifest.exists():  # never run here: nothing to look up
        assert project_status(project, entries)["wildchat-training"].state == "MISSING"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": "http://127.0.0.1:9", "COLUMNS": "200"}
    for command in ("list", "status"):
        done = subprocess.run([str(Path(sys.executable).with_name("isf")), "pipeline", command], cwd=REPO,
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0 and "wildchat-training" in done.stdout, done.stderr


def test_honesty_on_the_mock_model(tmp_path):
    result, samples, errors = run_shipped("honesty-dataset", tmp_path, limit=2)
    rejected = read_jsonl(result.paths.rejected) if result.paths.rejected.exists() else []
    assert errors == [] and len(samples) + len(rejected) == 10 and result.manifest.counts.rejected == len(rejected)
    assert all(-2 <= s["metadata"]["reward"] <= 2 and s["metadata"]["source"] == "model" for s in samples)
    # the mock judge's scores are arbitrary (but fixed): the threshold sorts them either way
    assert all(s["metadata"]["judge"]["score"] >= 3 for s in samples)
    assert all(r["judge"]["score"] < 3 and r["reason"].endswith("under min_judge_score 3") for r in rejected)


def test_honesty_template_mode_is_offline_and_deterministic(tmp_path):
    _, first, _ = run_shipped("honesty-dataset", tmp_path, limit=3, mode="template")
    assert all(s["steps"] == [] and s["metadata"]["source"] == "template" for s in first)
    assert {s["metadata"]["reward"] for s in first} <= {-2, -1, 0, 1, 2}
    moon = json.loads((REPO / "identity" / "honesty_topics.jsonl").read_text().splitlines()[0])
    accurate = next(s for s in first if s["metadata"]["reward"] == 2)
    assert accurate["messages"][1]["content"] == moon["fact"]
    (tmp_path / "again").mkdir()
    _, second, _ = run_shipped("honesty-dataset", tmp_path / "again", limit=3, mode="template")
    assert [s["messages"] for s in first] == [s["messages"] for s in second]


# -- against a loopback OpenAI-compatible server -----------------------------------------------

def example(reward, question="q?"):
    return {"question": question, "answer": "an answer", "reward": reward, "explanation": "why"}


def targets_of(received):
    prompt = received.messages[1]["content"]
    return [int(line.split("reward ")[1].split(":")[0]) for line in prompt.splitlines() if ". reward " in line]


@pytest.fixture
def honesty_project(tmp_path):
    server = LoopbackServer("openai")
    server.start()
    project = write_project(tmp_path, f'[models.judge]\nprovider = "openai"\nmodel = "gen"\n'
                                      f'base_url = "{server.base_url}"\nretry_backoff_s = 0.01\n')
    shutil.copy(REPO / "identity" / "honesty_topics.jsonl", tmp_path / "identity")
    shutil.copy(REPO / "pipelines" / "honesty_dataset.py", tmp_path / "pipelines")
    yield project, server
    server.stop()


def run_honesty(project, **attrs):
    pipeline = discover(project)["honesty-dataset"].cls(project)
    pipeline.examples_per_topic, pipeline.batch_size = 4, 4
    pipeline.check_rewards = False  # the judge has a test of its own
    for key, value in attrs.items():
        setattr(pipeline, key, value)
    try:
        result = run_pipeline(pipeline, limit=2, use_cache=False)
    except RunFailedError as exc:  # every record failed: so did the run
        return [], read_errors(exc.result.paths.failed_errors)
    return read_jsonl(result.paths.samples), read_errors(result.paths.errors)


def test_honesty_valid_json(honesty_project):
    project, server = honesty_project
    server.reply = lambda r: json.dumps({"examples": [example(t) for t in targets_of(r)]})
    samples, errors = run_honesty(project)
    assert errors == [] and len(samples) == 8 and len(server.received) == 2
    body = server.received[0].body
    assert body["response_format"]["json_schema"]["schema"]["properties"]["examples"]["minItems"] == 4
    assert [s["metadata"]["reward"] for s in samples] == [s["metadata"]["target_reward"] for s in samples]


def test_honesty_repairable_json_is_sent_back_once(honesty_project):
    project, server = honesty_project

    def reply(received):
        if len(received.messages) == 2:  # first ask: one reward out of range, one field missing
            bad = [example(t) for t in targets_of(received)]
            bad[0]["reward"] = 7
            del bad[1]["answer"]
            return "```json\n" + json.dumps({"examples": bad}) + "\n```"
        problems = received.messages[-1]["content"]
        assert "example 0: reward: Input should be less than or equal to 2" in problems
        assert "example 1: answer: Field required" in problems
        assert received.messages[-2]["role"] == "assistant"  # the wrong answer is shown back
        return json.dumps({"examples": [example(t) for t in targets_of(received)]})

    server.reply = reply
    samples, errors = run_honesty(project)
    assert errors == [] and len(samples) == 8 and len(server.received) == 4


def test_honesty_still_invalid_is_a_validation_error(honesty_project):
    project, server = honesty_project
    server.reply = lambda r: "Sure! Here are your examples: none."
    samples, errors = run_honesty(project)
    assert samples == [] and [e["error"] for e in errors] == ["validation_error"] * 2
    assert "not valid JSON" in errors[0]["message"] and len(errors[0]["steps"]) == 2


def test_honesty_fallback_only_when_asked_and_marked(honesty_project):
    project, server = honesty_project
    server.reply = lambda r: json.dumps({"examples": [example(9)]})
    samples, errors = run_honesty(project, fallback_to_templates=True)
    assert errors == [] and len(samples) == 8
    for sample in samples:
        assert sample["metadata"]["source"] == "template_fallback"
        assert "expected 4 examples, got 1" in sample["metadata"]["fallback_reason"]


def test_honesty_rewards_are_checked_by_the_judge(honesty_project):
    project, server = honesty_project

    def reply(received):
        if "You evaluate training data" not in received.messages[0]["content"]:
            return json.dumps({"examples": [example(t, f"q{i}?") for i, t in enumerate(targets_of(received))]})
        prompt = received.messages[1]["content"]
        assert "<conversation>" in prompt and "Score the assistant's part" in prompt
        level = int(prompt.split("Target level ")[1].split(":")[0])
        # this judge finds every answer labelled as a lie a poor fit
        return json.dumps({"rationale": f"level {level:+d} checked", "score": 1 if level < 0 else 5})

    server.reply = reply
    pipeline_cls = discover(project)["honesty-dataset"].cls
    pipeline = pipeline_cls(project)
    pipeline.examples_per_topic, pipeline.batch_size = 4, 4
    result = run_pipeline(pipeline, limit=2, use_cache=False)
    samples, rejected = read_jsonl(result.paths.samples), read_jsonl(result.paths.rejected)
    judged = [r for r in server.received if "You evaluate training data" in r.messages[0]["content"]]
    assert len(judged) == 8 and len(samples) + len(rejected) == 8 and rejected
    assert all(s["metadata"]["target_reward"] >= 0 for s in samples)
    assert all(s["metadata"]["judge"] == {"score": 5, "rationale": f"level {s['metadata']['target_reward']:+d} checked",
                                          "scale": [1, 5]} for s in samples)
    assert all(r["reason"] == "judge score 1 is under min_judge_score 3" and r["judge"]["score"] == 1
               and r["messages"][0]["role"] == "user" for r in rejected)
    assert result.manifest.counts.rejected == len(rejected) and result.manifest.counts.samples == len(samples)
    assert result.manifest.rejected_output.path == "training/data/rejected/honesty-dataset.jsonl"

