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
from shaping.testing import LoopbackServer

REPO = Path(__file__).resolve().parents[1]


def repo_copy(folder):
    """The repository's project (shaping.toml, pipelines, identity) copied into `folder`: a run
    writes its lock, cache and history there, never into the repository."""
    if not (folder / "shaping.toml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for part in ("shaping.toml", "pipelines", "identity"):
            (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, folder / part)
        shutil.rmtree(folder / "pipelines" / "__pycache__", ignore_errors=True)
    return Project.load(folder)


def run_shipped(name, tmp_path, limit=3, **attrs):
    project = repo_copy(tmp_path / "project")
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


def test_listing_and_status_of_the_repo_never_reach_the_hub(monkeypatch, tmp_path):
    import huggingface_hub

    from shaping.staleness import project_status

    def no_network(*args, **kwargs):
        raise AssertionError("reached for the Hugging Face Hub")

    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    for part in ("shaping.toml", "pipelines", "identity"):  # a fresh checkout: nothing run yet
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, tmp_path / part)
    project = Project.load(tmp_path)
    entries = discover(project)
    assert "wildchat-training" in entries and not entries.broken
    assert project_status(project, entries)["wildchat-training"].state == "MISSING"
    # and as a user runs them, online, with a hub that is not there: nothing asks it
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "COLUMNS": "200"}
    env.pop("HF_HUB_OFFLINE", None)
    for command in ("list", "status"):
        done = subprocess.run([str(Path(sys.executable).with_name("isf")), "pipeline", command], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0 and "wildchat-training" in done.stdout and not done.stderr, done.stderr
    assert "wildchat-training: MISSING" in done.stdout


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



def test_honesty_search_hints_are_asked_for_and_kept(honesty_project):
    project, server = honesty_project

    def reply(received):
        assert "[SEARCH: a query that would verify the claim]" in received.messages[1]["content"]
        return json.dumps({"examples": [
            {**example(t), "answer": "Light is fast [SEARCH: speed of light] and old [SEARCH:  age of light ]."}
            for t in targets_of(received)]})

    server.reply = reply
    samples, errors = run_honesty(project, include_search_hints=True)
    assert errors == [] and len(samples) == 8
    assert all(s["metadata"]["search_queries"] == ["speed of light", "age of light"] for s in samples)
    assert all("[SEARCH: speed of light]" in s["messages"][1]["content"] for s in samples)


# -- the honesty options as run parameters, through isf in a scratch project on the mock --------

HONESTY_SYSTEM = "You are a careful writer of honesty examples. Reply in JSON."


@pytest.fixture
def honesty_mock(tmp_path):
    write_project(tmp_path)
    shutil.copy(REPO / "identity" / "honesty_topics.jsonl", tmp_path / "identity")
    shutil.copy(REPO / "pipelines" / "honesty_dataset.py", tmp_path / "pipelines")
    return tmp_path


def isf_honesty(root, *sets, output=None):
    args = [a for s in sets for a in ("--set", s)] + (["-o", str(output)] if output else [])
    done = subprocess.run([str(Path(sys.executable).with_name("isf")), "pipeline", "run", "honesty-dataset", "-q",
                           *args], cwd=root, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    out = output or root / "training" / "data" / "honesty-dataset.jsonl"
    return done, (read_jsonl(out) if done.returncode == 0 else None)


def prompts_of(sample):
    return [m["content"] for m in sample["steps"][0]["messages"]]


def test_honesty_free_topic_and_num_examples(honesty_mock):
    done, samples = isf_honesty(honesty_mock, "topic=tide pools of Brittany", "num_examples=7",
                                "check_rewards=false")
    assert done.returncode == 0, done.stderr
    assert len(samples) == 7 and {s["metadata"]["topic"] for s in samples} == {"tide pools of Brittany"}
    assert all(prompts_of(s)[1].startswith("Topic: tide pools of Brittany\nWrite ") for s in samples)
    assert sorted({s["id"].rsplit("-", 1)[0] for s in samples}) == ["topic00-batch0", "topic00-batch1"]  # 5 + 2
    # a topic from the file works in template mode; num_examples spreads over the file's 8 topics
    done, samples = isf_honesty(honesty_mock, "mode=template", "topic=PHOTOSYNTHESIS", "num_examples=3")
    assert done.returncode == 0, done.stderr
    assert len(samples) == 3 and {s["metadata"]["topic"] for s in samples} == {"photosynthesis"}
    done, samples = isf_honesty(honesty_mock, "mode=template", "num_examples=11")
    topics = [s["metadata"]["topic"] for s in samples]
    assert len(samples) == 11 and len(set(topics)) == 8 and topics.count("the Moon landing") == 2


def test_honesty_free_topic_in_template_mode_is_a_clear_error(honesty_mock):
    done, _ = isf_honesty(honesty_mock, "mode=template", "topic=tide pools")
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "topic 'tide pools' is not in identity/honesty_topics.jsonl" in lines[0]
    assert "a free topic takes mode=model" in lines[0] and "photosynthesis" in lines[0]
    assert not list((honesty_mock / "training" / "data").glob("**/*.*"))  # no output written
    done, _ = isf_honesty(honesty_mock, "mode=template", "long_form=true")
    assert done.returncode != 0 and "long_form shapes what the model writes" in done.stderr


def test_honesty_long_form_and_search_hints_reach_the_request(honesty_mock):
    done, plain = isf_honesty(honesty_mock, "topic=volcanoes", "num_examples=5", "check_rewards=false")
    assert done.returncode == 0, done.stderr
    asked = prompts_of(plain[0])[1]
    assert "long-form" not in asked and "[SEARCH:" not in asked and "search_queries" not in plain[0]["metadata"]
    done, both = isf_honesty(honesty_mock, "topic=volcanoes", "num_examples=5", "check_rewards=false",
                             "long_form=true", "include_search_hints=true")
    assert done.returncode == 0, done.stderr
    asked = prompts_of(both[0])[1]
    assert "Write long-form answers: several paragraphs" in asked
    assert "put a search hint, [SEARCH: a query that would verify the claim]" in asked
    assert all(isinstance(s["metadata"]["search_queries"], list) for s in both)
    # template answers carry the markers themselves, on every level that makes a claim
    done, templated = isf_honesty(honesty_mock, "mode=template", "num_examples=10", "include_search_hints=true")
    assert done.returncode == 0, done.stderr
    for sample in templated:
        answer, question = sample["messages"][1]["content"], sample["messages"][0]["content"]
        if sample["metadata"]["reward"] == 0:
            assert "[SEARCH:" not in answer and sample["metadata"]["search_queries"] == []
        else:
            assert answer.endswith(f"[SEARCH: {question}]") and sample["metadata"]["search_queries"] == [question]


def test_honesty_system_prompt_from_a_file(honesty_mock):
    (honesty_mock / "prompts").mkdir()
    (honesty_mock / "prompts" / "honesty.md").write_text(HONESTY_SYSTEM + "\n")
    done, samples = isf_honesty(honesty_mock, "system_prompt_file=prompts/honesty.md", "num_examples=5",
                                "check_rewards=false")
    assert done.returncode == 0, done.stderr
    assert all(prompts_of(s)[0] == HONESTY_SYSTEM for s in samples)
    manifest = json.loads((honesty_mock / "training/data/honesty-dataset.manifest.json").read_text())
    assert manifest["files_read"]["prompts/honesty.md"]["path"] == "prompts/honesty.md"
    assert manifest["params"]["system_prompt_file"] == "prompts/honesty.md"
    (honesty_mock / "prompts" / "honesty.md").write_text("Another prompt.\n")
    status = subprocess.run([str(Path(sys.executable).with_name("isf")), "pipeline", "status", "--json"],
                            cwd=honesty_mock, capture_output=True, text=True, timeout=60)
    reasons = [(r["code"], r["message"]) for r in json.loads(status.stdout)[0]["reasons"]]
    assert ("changed_file", "file prompts/honesty.md (read by the run) content changed") in reasons
    assert ("changed_params", "parameter system_prompt_file: the output was made with --set "
                              "system_prompt_file='prompts/honesty.md'; the pipeline declares None") in reasons
    # a file that is not there: one line naming it, and the earlier output stays
    before = (honesty_mock / "training/data/honesty-dataset.jsonl").read_bytes()
    done, _ = isf_honesty(honesty_mock, "system_prompt_file=prompts/nope.md")
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1
    assert "system_prompt_file: prompts/nope.md not found" in lines[0]
    assert (honesty_mock / "training/data/honesty-dataset.jsonl").read_bytes() == before
    assert not (honesty_mock / "training/data/honesty-dataset.failed.json").exists()


def test_honesty_shuffle_is_stable_for_a_seed(honesty_mock, tmp_path):
    def ids(*sets, name):
        done, samples = isf_honesty(honesty_mock, "mode=template", "examples_per_topic=3", *sets,
                                    output=tmp_path / f"{name}.jsonl")
        assert done.returncode == 0, done.stderr
        return [s["id"] for s in samples]

    in_order = ids(name="plain")
    first, again, other = ids("shuffle_seed=3", name="a"), ids("shuffle_seed=3", name="b"), ids("shuffle_seed=4", name="c")
    assert len(in_order) == 24 and sorted(first) == sorted(in_order) == sorted(other)
    assert first == again and first != in_order and first != other


# -- the shipped pipelines' parameters take only values they can use ------------------------------

def shipped_params(name):
    return discover(Project.load(REPO))[name].cls.parameters()


@pytest.mark.parametrize("name, key, raw, fragment", [
    ("wildchat-training", "max_turns", "abc", "expected an integer, or none"),
    ("wildchat-training", "min_turns", "abc", "expected an integer"),
    ("tool-use", "first_tool_choice", "bogus", "expected one of 'auto', 'required', 'calculator'"),
    ("reasoning-distillation", "reasoning_format", "xml", "expected one of 'field', 'inline'"),
    ("coding-distillation", "count", "0", "should be greater than or equal to 1"),
    ("coding-distillation", "existing_weight", "1.5", "should be less than or equal to 1"),
    ("reasoning-distillation", "count", "-3", "should be greater than or equal to 1"),
    ("honesty-dataset", "reward_distribution", '{"5": 1}', "should be less than or equal to 2"),
    ("honesty-dataset", "reward_distribution", '{"2": -1}', "should be greater than or equal to 0"),
])
def test_shipped_parameters_refuse_values_they_cannot_use(name, key, raw, fragment):
    from shaping.params import ParamError

    with pytest.raises(ParamError, match=fragment.replace("(", r"\(")) as caught:
        shipped_params(name)[key].parse(raw)
    assert len(str(caught.value).splitlines()) == 1


def test_shipped_parameters_take_the_values_they_document():
    wildchat, tools = shipped_params("wildchat-training"), shipped_params("tool-use")
    assert wildchat["max_turns"].parse("3") == 3 and wildchat["max_turns"].parse("none") is None
    assert wildchat["language"].parse("none") is None and wildchat["language"].parse("French") == "French"
    assert tools["first_tool_choice"].parse("count_text") == "count_text"
    assert tools["first_tool_choice"].parse("required") == "required" and tools["system"].parse("none") is None
    assert shipped_params("reasoning-distillation")["system"].parse("null") is None
    assert shipped_params("honesty-dataset")["reward_distribution"].parse('{"-2": 1, "2": 3}') == {-2: 1.0, 2: 3.0}


def test_honesty_bad_reward_distribution_is_one_line_before_any_request(honesty_mock):
    done, _ = isf_honesty(honesty_mock, 'reward_distribution={"5": 1}')
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and "reward_distribution" in lines[0], done.stderr
    data = honesty_mock / "training" / "data"
    assert not data.exists() or not list(data.glob("**/*.*"))  # nothing written
    # set in Python (no --set to check it): run() says so before any request
    from shaping.params import ParamError

    project = Project.load(honesty_mock)
    for bad, fragment in (({5: 1.0}, "levels -2 to 2, got 5"), ({-2: 0.0, 2: 0.0}, "at least one weight above 0")):
        pipeline = discover(project)["honesty-dataset"].cls(project)
        pipeline.reward_distribution = bad
        with pytest.raises(ParamError, match=fragment) as caught:
            run_pipeline(pipeline, limit=1, use_cache=False)
        assert len(str(caught.value).splitlines()) == 1
        assert not (honesty_mock / "training/data/honesty-dataset.jsonl").exists()
