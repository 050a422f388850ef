"""K-shot examples: loading JSON and text, every bad-input case, and the turns every provider gets."""

import json
import shutil
from pathlib import Path

import anyio
import pytest

from shaping.errors import RunFailedError

from shaping import run_pipeline
from shaping.config import Project
from shaping.discovery import discover
from shaping.kshot import KShotError, load, load_json, load_text

from shaping.providers.mock import conversation_digest
from shaping.providers.registry import create_provider
from shaping.requests import LLMRequest
from tests.conftest import read_jsonl, write_project
from shaping.testing import LoopbackServer
from tests.test_cli import isf

REPO = Path(__file__).resolve().parents[1]
SHIPPED_JSON = REPO / "identity" / "k_shot_samples.json"
SHIPPED_TEXT = REPO / "identity" / "k_shot_samples.txt"
SYSTEM = "You write short stories for young children: five sentences at most, then one line 'Moral: ...'."


def config_json(messages, k=None, name="c", **extra):
    return json.dumps({"configurations": [{"name": name, "k_shot_count": k if k is not None else len(messages) // 2,
                                           "messages": messages, **extra}]})


U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}


# -- loading --------------------------------------------------------------------------------------

def test_shipped_json_has_three_configurations_and_text_matches_it():
    source = load_json(SHIPPED_JSON)
    assert [c.name for c in source.configurations] == ["short-moral", "four-fables", "kindness"]
    assert source.get("four-fables").k_shot_count == 4
    text = load_text(SHIPPED_TEXT).get()
    assert text.name == "k_shot_samples"
    assert text.messages == source.get("short-moral").messages
    assert "\n\nMoral:" in text.messages[1].content  # multi-line content survives


def test_get_needs_a_name_when_there_are_several():
    with pytest.raises(KShotError, match=r"3 configurations \(short-moral, four-fables, kindness\); choose one"):
        load_json(SHIPPED_JSON).get()
    with pytest.raises(KShotError, match=r"no configuration 'nope' \(known: short-moral, four-fables, kindness\)"):
        load_json(SHIPPED_JSON).get("nope")


def test_count_takes_the_first_pairs():
    config = load_json(SHIPPED_JSON).get("four-fables")
    assert config.pairs(1) == [m.model_dump() for m in config.messages[:2]]
    assert len(config.pairs()) == 8
    with pytest.raises(KShotError, match="count 5 asked for, 4 example pair"):
        config.pairs(5)


@pytest.mark.parametrize("content, error", [
    ('{"configurations": [', r"invalid JSON at line 1, column 21"),
    ('{\n  "configurations": [\n    {"name": "c",}\n  ]\n}', r"invalid JSON at line 3, column 18"),
    (config_json([U, U]), r"messages\[1\] is user; turns must alternate"),
    (config_json([A, U]), r"messages\[0\] is assistant"),
    (config_json([U, A, U]), r"messages end on a user turn"),
    (config_json([U, A], k=3), r"k_shot_count is 3 but messages hold 1 user/assistant pairs"),
    (config_json([U, {"role": "system", "content": "s"}]), r"configurations.0.messages.1.role: Input should be 'user' or 'assistant' \(got 'system'\)"),
    (config_json([U, {"role": "assistant", "content": "  "}]), r"configurations.0.messages.1.content: Value error, content is empty"),
    (config_json([U, A], colour="red"), r"configurations.0.colour: Extra inputs are not permitted"),
    ('{"configurations": []}', r"configurations: List should have at least 1 item"),
    (json.dumps({"configurations": [json.loads(config_json([U, A]))["configurations"][0]] * 2}), r"repeated: c"),
])
def test_bad_json_is_named(tmp_path, content, error):
    path = tmp_path / "k.json"
    path.write_text(content)
    with pytest.raises(KShotError, match=error) as info:
        load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("content, error", [
    ("hello\nPROMPT:\nq\nRESPONSE:\na\n", r"line 1: text before the first PROMPT: marker"),
    ("RESPONSE:\na\n", r"line 1: RESPONSE: where PROMPT: was expected"),
    ("PROMPT:\nq\nPROMPT:\nq\n", r"line 3: PROMPT: where RESPONSE: was expected"),
    ("PROMPT:\nq\nRESPONSE:\na\nPROMPT: q2\n", r"line 5: PROMPT: has no RESPONSE:"),
    ("PROMPT:\nq\nRESPONSE:\n\n\n", r"line 3: RESPONSE: block is empty"),
    ("\n\n", r"no PROMPT:/RESPONSE: blocks"),
])
def test_bad_text_is_named_with_its_line(tmp_path, content, error):
    path = tmp_path / "k.txt"
    path.write_text(content)
    with pytest.raises(KShotError, match=error):
        load(path)


def test_text_content_on_the_marker_line_and_after(tmp_path):
    path = tmp_path / "k.txt"
    path.write_text("PROMPT: first line\nsecond line\nRESPONSE: answer\n")
    assert [m.content for m in load(path).get().messages] == ["first line\nsecond line", "answer"]


def test_missing_file(tmp_path):
    with pytest.raises(KShotError, match=r"k.json: k-shot file not found"):
        load(tmp_path / "k.json")


# -- in a pipeline --------------------------------------------------------------------------------

def story_project(root: Path, toml=None) -> Project:
    write_project(root, toml) if toml else write_project(root)
    shutil.copy(SHIPPED_JSON, root / "identity" / "k_shot_samples.json")
    shutil.copy(SHIPPED_TEXT, root / "identity" / "k_shot_samples.txt")
    shutil.copy(REPO / "identity" / "story_words.txt", root / "identity" / "story_words.txt")
    source = (REPO / "pipelines" / "moral_stories.py").read_text()
    (root / "pipelines" / "moral_stories.py").write_text(source.replace('model_dep("cubsfan-release-full")', 'model_dep("writer")'))
    return Project.load(root)


def stories(project, **kshot):
    pipeline = discover(project)["moral-stories"].cls(project)
    if kshot:
        pipeline.configure_kshot(**kshot)
    return pipeline


def test_mock_sees_system_examples_and_prompt(tmp_path):
    project = story_project(tmp_path)
    result = run_pipeline(stories(project))
    sample = read_jsonl(result.paths.samples)[0]
    sent = sample["steps"][0]["messages"]
    examples = load_json(SHIPPED_JSON).get("short-moral").pairs()
    assert sent == [{"role": "system", "content": SYSTEM}, *examples, {"role": "user", "content": "Words: owl, lantern, patience"}]
    answer = sample["messages"][-1]["content"]
    assert "(after 2 example(s))" in answer and conversation_digest(LLMRequest(messages=sent)) in answer
    assert sample["metadata"]["kshot"] == {"source": "identity/k_shot_samples.json", "configuration": "short-moral", "count": 2}
    assert result.manifest.kshot["examples"].used == sample["metadata"]["kshot"]


def test_json_and_text_sources_give_identical_requests(tmp_path):
    project = story_project(tmp_path)
    from_json = read_jsonl(run_pipeline(stories(project)).paths.samples)
    from_text = read_jsonl(run_pipeline(stories(project, file="identity/k_shot_samples.txt")).paths.samples)
    assert [s["steps"][0]["messages"] for s in from_json] == [s["steps"][0]["messages"] for s in from_text]
    assert [s["messages"] for s in from_json] == [s["messages"] for s in from_text]
    assert from_text[0]["metadata"]["kshot"]["source"] == "identity/k_shot_samples.txt"


def test_count_and_name_overrides(tmp_path):
    project = story_project(tmp_path)
    sample = read_jsonl(run_pipeline(stories(project, name="four-fables", count=3)).paths.samples)[0]
    assert len(sample["steps"][0]["messages"]) == 1 + 6 + 1
    assert sample["metadata"]["kshot"] == {"source": "identity/k_shot_samples.json", "configuration": "four-fables", "count": 3}


def test_missing_required_file_fails_before_any_request(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", "k")
    with LoopbackServer("openai") as server:
        project = story_project(tmp_path, f'[models.writer]\nprovider = "openai"\nmodel = "m"\nbase_url = "{server.base_url}"\n')
        (tmp_path / "identity" / "k_shot_samples.json").unlink()
        with pytest.raises(KShotError, match=r"identity/k_shot_samples.json: k-shot file not found"):
            run_pipeline(stories(project))
        (tmp_path / "identity" / "k_shot_samples.json").write_text(config_json([U, U]))
        with pytest.raises(KShotError, match=r"turns must alternate"):
            run_pipeline(stories(project))
        assert server.received == []


def test_not_required_and_missing_means_no_examples(tmp_path):
    project = story_project(tmp_path)
    (tmp_path / "identity" / "k_shot_samples.json").unlink()
    result = run_pipeline(stories(project, required=False))
    sample = read_jsonl(result.paths.samples)[0]
    assert [m["role"] for m in sample["steps"][0]["messages"]] == ["system", "user"]
    assert sample["metadata"]["kshot"] is None


def test_cli_flags(tmp_path):
    story_project(tmp_path)
    result = isf(tmp_path, "pipeline", "run", "moral-stories", "--k-shot-count", "1", "--k-shot-config-name", "four-fables")
    assert result.returncode == 0, result.stderr
    sample = read_jsonl(tmp_path / "training/data/moral-stories.jsonl")[0]
    assert "(after 1 example(s))" in sample["messages"][-1]["content"]
    status = isf(tmp_path, "pipeline", "status", "moral-stories").stdout
    assert "k-shot 'examples' selection differs" in status

    result = isf(tmp_path, "pipeline", "run", "moral-stories", "--k-shot-count", "9")
    assert result.returncode == 1 and "count 9 asked for, 2 example pair(s) available" in result.stderr

    (tmp_path / "identity" / "k_shot_samples.json").unlink()
    result = isf(tmp_path, "pipeline", "run", "moral-stories", "--require-k-shot")
    assert result.returncode == 1 and "k-shot file not found" in result.stderr
    result = isf(tmp_path, "pipeline", "run", "moral-stories", "--no-require-k-shot")
    assert result.returncode == 0, result.stderr

    (tmp_path / "pipelines" / "plain.py").write_text(
        "from shaping.pipeline import Pipeline\n\nclass Plain(Pipeline):\n    def run(self):\n        return []\n")
    result = isf(tmp_path, "pipeline", "run", "plain", "--k-shot-count", "1")
    assert result.returncode == 1 and "pipeline 'plain' declares no kshot_dep" in result.stderr


# -- the turns each provider receives -------------------------------------------------------------

@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_http_providers_receive_the_examples_as_turns(tmp_path, monkeypatch, api):
    monkeypatch.setenv("SHAPING_TEST_KEY", "sk-kshot")
    with LoopbackServer(api) as server:
        project = story_project(tmp_path, f'[models.writer]\nprovider = "{api}"\nmodel = "m"\n'
                                          f'base_url = "{server.base_url}"\napi_key_env = "SHAPING_TEST_KEY"\n')
        run_pipeline(stories(project), limit=1)
        body = server.received[0].body
    examples = load_json(SHIPPED_JSON).get("short-moral").pairs()
    prompt = {"role": "user", "content": "Words: owl, lantern, patience"}
    if api == "openai":
        assert body["messages"] == [{"role": "system", "content": SYSTEM}, *examples, prompt]
    else:
        assert body["system"] == SYSTEM and body["messages"] == [*examples, prompt]


def test_transformers_chat_template_renders_the_examples_in_order(tmp_path):
    from tests.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "tiny")
    project = story_project(tmp_path, f'[models.writer]\nprovider = "transformers"\nmodel = "{model_dir}"\n'
                                      f'[models.writer.options]\ndevice = "cpu"\nmax_tokens = 4\n')
    pipeline = stories(project)
    conversation = pipeline.examples.conversation("Words: owl, lantern, patience", system=SYSTEM)
    provider = create_provider("writer", project.model("writer"))
    anyio.run(provider.open)
    rendered = provider.render(LLMRequest(messages=conversation))
    expected = "".join(f"<|{m['role']}|> {m['content']} </s> " for m in conversation) + "<|assistant|>"
    assert rendered == expected
    positions = [rendered.index(m["content"]) for m in conversation]
    assert positions == sorted(positions)
    # 4 new tokens of a random model never reach its eos: cut off, so error records, not
    # samples, and a run in which every record failed is a failed run
    with pytest.raises(RunFailedError, match=r"every record failed \(2 of 2 records: truncated 2\)") as failed:
        run_pipeline(pipeline, limit=2)
    assert failed.value.result.manifest.counts.errors == {"truncated": 2}
