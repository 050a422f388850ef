"""`isf pipeline export`: each format written exactly, what cannot be written skipped and counted,
the refusals, the push to a loopback Hub stand-in, and TRL training on the hf export as it is."""

import json
import os
from pathlib import Path

import pytest

from shaping import run_pipeline
from shaping.config import Project
from shaping.discovery import discover
from shaping.errors import RunFailedError
from shaping.export import Skip, to_alpaca, to_sharegpt, with_reasoning
from tests.conftest import write_project
from tests.test_cli import isf, one_line_error

PIPELINE = '''
import json

from shaping.pipeline import Pipeline, PipelineError, TrainingSample


class Crafted(Pipeline):
    """Writes the samples of identity/crafted.json as they are; a record with "fail" fails."""

    name = "crafted"
    records = Pipeline.file_dep("identity/crafted.json")
    judge = Pipeline.model_dep("judge")
    quality = {"max_error_rate": 0.9}

    def run(self):
        return self.run_task(self.task, records=json.loads(self.records.read()))

    def task(self, record):
        if record.get("fail"):
            raise PipelineError("crafted failure", error_type="judge_rejected")
        return TrainingSample(**record)
        yield
'''

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def call(i, city):
    return {"id": f"call_{i}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}


MULTI = {"id": "multi", "messages": [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hello world"},
    {"role": "user", "content": "again?"}, {"role": "assistant", "content": "yes"}]}
TOOL = {"id": "tool", "tools": TOOLS, "messages": [
    {"role": "user", "content": "weather in Paris?"},
    {"role": "assistant", "content": None, "reasoning_content": "I should look it up.", "tool_calls": [call(0, "Paris")]},
    {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "18C"},
    {"role": "assistant", "content": "It is 18C in Paris."}]}
REASONING = {"id": "reasoning", "messages": [
    {"role": "user", "content": "is 2 even?"},
    {"role": "assistant", "content": "Yes.", "reasoning_content": "2 is even."}]}
INLINE = {"id": "inline", "messages": [
    {"role": "user", "content": "is 3 even?"},
    {"role": "assistant", "content": "<think>\n3 is odd.\n</think>\n\nNo."}]}
PARTS = {"id": "parts", "messages": [
    {"role": "user", "content": [{"type": "text", "text": "what is "}, {"type": "text", "text": "this?"}]},
    {"role": "assistant", "content": "A fox."}]}
IMAGE = {"id": "image", "messages": [
    {"role": "user", "content": [{"type": "text", "text": "describe"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    {"role": "assistant", "content": "A cat."}]}
PARALLEL = {"id": "parallel", "tools": TOOLS, "messages": [
    {"role": "user", "content": "Paris and Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [call(1, "Paris"), call(2, "Rome")]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "25C"},
    {"role": "assistant", "content": "18C and 25C."}]}
FAIL = {"id": "bad", "fail": True}
RECORDS = [MULTI, TOOL, REASONING, INLINE, PARTS, IMAGE, PARALLEL, FAIL]


def make(root: Path, records=RECORDS, annotate=False) -> Project:
    """A project whose pipeline `crafted` has run and written `records` (less the failing one)."""
    project = write_project(root)
    (root / "pipelines" / "crafted.py").write_text(PIPELINE)
    rerun(project, records, annotate)
    return project


def rerun(project, records, annotate=False):
    (project.root / "identity" / "crafted.json").write_text(json.dumps(records))
    pipeline = discover(project)["crafted"].cls(project)
    return run_pipeline(pipeline, annotate=annotate, use_cache=False)


def export(root, *args, env=None):
    if env is None:
        return isf(root, "pipeline", "export", "crafted", *args)
    import subprocess

    from tests.test_cli import ISF
    return subprocess.run([ISF, "pipeline", "export", "crafted", *args], cwd=root, capture_output=True, text=True,
                          timeout=60, env={"COLUMNS": "200", **env})


def jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# -- the formats ----------------------------------------------------------------------------------

def answer(sample, **changes):
    """`sample` with its messages changed: {index: the message's new fields (None: removed)}."""
    messages = []
    for i, message in enumerate(sample["messages"]):
        message = {**message, **changes.get(f"m{i}", {})}
        messages.append({k: v for k, v in message.items() if v is not None or k == "content"})
    return messages


OPENAI_FIELD = [
    {"messages": MULTI["messages"]},
    {"messages": TOOL["messages"], "tools": TOOLS},
    {"messages": REASONING["messages"]},
    {"messages": answer(INLINE, m1={"content": "No.", "reasoning_content": "3 is odd."})},
    {"messages": PARTS["messages"]},
    {"messages": IMAGE["messages"]},
    {"messages": PARALLEL["messages"], "tools": TOOLS},
]


@pytest.mark.parametrize("annotate", [False, True])
def test_openai_keeps_everything_and_reasoning_in_the_field(tmp_path, annotate):
    make(tmp_path, annotate=annotate)
    out = ok(export(tmp_path, "--format", "openai", "--reasoning", "field"))
    assert jsonl(tmp_path / "training/export/crafted.openai.jsonl") == OPENAI_FIELD
    assert out.splitlines() == [
        "wrote training/export/crafted.openai.jsonl: 7 samples as openai",
        "reasoning of 3 assistant turns: kept as reasoning_content (--reasoning)",
        "not exported: 1 failed record (training/data/errors/crafted.jsonl)"]
    # by default the reasoning is left out: OpenAI's fine-tuning API has no key for it
    out = ok(export(tmp_path, "--format", "openai"))
    assert all("reasoning_content" not in m for row in jsonl(tmp_path / "training/export/crafted.openai.jsonl")
               for m in row["messages"])
    assert ("reasoning of 3 assistant turns: dropped (OpenAI's fine-tuning format has none; --reasoning field or "
            "inline keeps it)") in out.splitlines()


def test_openai_reasoning_inline_and_dropped(tmp_path):
    make(tmp_path, records=[TOOL, REASONING, INLINE])
    ok(export(tmp_path, "--format", "openai", "--reasoning", "inline"))
    assert jsonl(tmp_path / "training/export/crafted.openai.jsonl") == [
        {"messages": answer(TOOL, m1={"content": "<think>\nI should look it up.\n</think>\n\n",
                                      "reasoning_content": None}), "tools": TOOLS},
        {"messages": answer(REASONING, m1={"content": "<think>\n2 is even.\n</think>\n\nYes.",
                                           "reasoning_content": None})},
        {"messages": INLINE["messages"]}]
    out = ok(export(tmp_path, "--format", "openai", "--reasoning", "drop"))
    assert jsonl(tmp_path / "training/export/crafted.openai.jsonl") == [
        {"messages": answer(TOOL, m1={"reasoning_content": None}), "tools": TOOLS},
        {"messages": answer(REASONING, m1={"reasoning_content": None})},
        {"messages": answer(INLINE, m1={"content": "No."})}]
    assert "reasoning of 3 assistant turns: dropped (--reasoning)" in out.splitlines()


def test_sharegpt_as_llama_factory_reads_it(tmp_path):
    make(tmp_path, annotate=True)
    out = ok(export(tmp_path, "--format", "sharegpt"))
    tools_text = json.dumps([TOOLS[0]["function"]])
    assert jsonl(tmp_path / "training/export/crafted.sharegpt.jsonl") == [
        {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "hello"},
                           {"from": "gpt", "value": "hello world"}, {"from": "human", "value": "again?"},
                           {"from": "gpt", "value": "yes"}]},
        {"conversations": [{"from": "human", "value": "weather in Paris?"},
                           {"from": "function_call", "value": "<think>\nI should look it up.\n</think>\n\n"
                                                              '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
                           {"from": "observation", "value": "18C"},
                           {"from": "gpt", "value": "It is 18C in Paris."}], "tools": tools_text},
        {"conversations": [{"from": "human", "value": "is 2 even?"},
                           {"from": "gpt", "value": "<think>\n2 is even.\n</think>\n\nYes."}]},
        {"conversations": [{"from": "human", "value": "is 3 even?"},
                           {"from": "gpt", "value": "<think>\n3 is odd.\n</think>\n\nNo."}]},
        {"conversations": [{"from": "human", "value": "what is this?"}, {"from": "gpt", "value": "A fox."}]},
        {"conversations": [{"from": "human", "value": "Paris and Rome?"},
                           {"from": "function_call", "value": '[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
                                                              '{"name": "get_weather", "arguments": {"city": "Rome"}}]'},
                           {"from": "observation", "value": "18C\n</tool_response>\n<tool_response>\n25C"},
                           {"from": "gpt", "value": "18C and 25C."}], "tools": tools_text},
    ]
    assert "skipped 1: image content (sharegpt holds text only)" in out.splitlines()
    assert "wrote training/export/crafted.sharegpt.jsonl: 6 samples as sharegpt" in out


def test_alpaca_skips_tool_calls_with_a_count(tmp_path):
    make(tmp_path)
    out = ok(export(tmp_path, "--format", "alpaca"))
    assert jsonl(tmp_path / "training/export/crafted.alpaca.jsonl") == [
        {"instruction": "again?", "input": "", "output": "yes", "system": "Be brief.", "history": [["hello", "hello world"]]},
        {"instruction": "is 2 even?", "input": "", "output": "<think>\n2 is even.\n</think>\n\nYes."},
        {"instruction": "is 3 even?", "input": "", "output": "<think>\n3 is odd.\n</think>\n\nNo."},
        {"instruction": "what is this?", "input": "", "output": "A fox."},
    ]
    assert out.splitlines()[-3:] == ["skipped 1: image content (alpaca holds text only)",
                                     "skipped 2: tool calls (alpaca has no place for them)",
                                     "not exported: 1 failed record (training/data/errors/crafted.jsonl)"]


def test_reasoning_field_is_refused_where_there_is_no_field(tmp_path):
    make(tmp_path, records=[REASONING])
    one_line_error(export(tmp_path, "--format", "alpaca", "--reasoning", "field"),
                   "alpaca has no reasoning field; use --reasoning inline or drop")
    assert not (tmp_path / "training/export").exists()


def test_parquet_holds_messages_as_structs(tmp_path):
    import pyarrow.parquet as pq

    make(tmp_path, annotate=True)
    out = ok(export(tmp_path, "--format", "parquet"))
    table = pq.read_table(tmp_path / "training/export/crafted.parquet")
    assert str(table.schema.field("messages").type) == (
        "list<element: struct<role: string, content: string, reasoning_content: string, tool_calls: "
        "list<element: struct<id: string, type: string, function: struct<name: string, arguments: string>>>, "
        "tool_call_id: string, name: string>>")
    rows = table.to_pylist()
    blank = {"reasoning_content": None, "tool_calls": None, "tool_call_id": None, "name": None}
    assert [r["id"] for r in rows] == ["multi", "tool", "reasoning", "inline", "parts", "parallel"]
    assert rows[0] == {"id": "multi", "tools": None, "messages": [{**blank, **m} for m in MULTI["messages"]]}
    assert rows[1]["tools"] == json.dumps(TOOLS) and rows[1]["messages"] == [{**blank, **m} for m in TOOL["messages"]]
    assert rows[3]["messages"][1] == {**blank, "role": "assistant", "content": "No.", "reasoning_content": "3 is odd."}
    assert rows[4]["messages"][0] == {**blank, "role": "user", "content": "what is this?"}
    assert "skipped 1: image content (parquet holds text only)" in out


def test_hf_folder_keeps_each_message_as_it_is(tmp_path):
    import datasets

    make(tmp_path, annotate=True)
    out = ok(export(tmp_path, "--format", "hf"))
    folder = tmp_path / "training/export/crafted.hf"
    data = datasets.load_from_disk(str(folder))
    assert data.column_names == ["id", "messages", "tools"]
    assert [dict(row) for row in data] == [{"id": s["id"], "tools": s.get("tools"), "messages": e["messages"]}
                                           for s, e in zip([r for r in RECORDS if r is not FAIL], OPENAI_FIELD)]
    assert out.startswith("wrote training/export/crafted.hf: 7 samples as hf\n")
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary left

    rerun(Project.load(tmp_path), [MULTI, REASONING])  # a second export replaces the folder whole
    ok(export(tmp_path, "--format", "hf"))
    assert datasets.load_from_disk(str(folder))["id"] == ["multi", "reasoning"]


# -- what is exported, and where -------------------------------------------------------------------

def test_error_lines_are_never_exported_and_a_stale_output_is_with_a_warning(tmp_path):
    project = make(tmp_path, records=[MULTI, REASONING, FAIL])
    samples = project.outputs("crafted").samples
    error = {"__ERROR__": {"id": "x", "error": "refusal", "message": "no"}}
    samples.write_text(samples.read_text() + json.dumps(error) + "\n\n")
    result = export(tmp_path, "--format", "openai", "--reasoning", "field")
    assert result.stderr == ("warning: crafted is STALE (output edited since the run); "
                             "exporting the output as it is\n")
    assert jsonl(tmp_path / "training/export/crafted.openai.jsonl") == [
        {"messages": MULTI["messages"]}, {"messages": REASONING["messages"]}]
    assert "skipped 1: error records (never exported)" in ok(result).splitlines()


def test_output_paths(tmp_path):
    make(tmp_path, records=[MULTI])
    (tmp_path / "out").mkdir()
    ok(export(tmp_path, "--format", "openai", "-o", "out/mine.jsonl"))
    assert jsonl(tmp_path / "out/mine.jsonl") == [{"messages": MULTI["messages"]}]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mine.jsonl"]
    one_line_error(export(tmp_path, "--format", "openai", "-o", "nowhere/mine.jsonl"), "does not exist")
    one_line_error(export(tmp_path, "--format", "alpaca", "-o", "out"), "is a folder; give a file name")
    one_line_error(export(tmp_path, "--format", "hf", "-o", "out"), "not an earlier hf export")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mine.jsonl"]  # left as it was
    ok(export(tmp_path, "--format", "hf", "-o", "out/ds"))
    assert (tmp_path / "out/ds/state.json").is_file()
    ok(export(tmp_path, "--format", "parquet", "-o", str(tmp_path / "out/x.parquet")))
    assert (tmp_path / "out/x.parquet").is_file()


def test_a_failed_or_missing_output_is_refused(tmp_path):
    project = make(tmp_path, records=[MULTI])
    with pytest.raises(RunFailedError):
        rerun(project, [FAIL])
    one_line_error(export(tmp_path, "--format", "openai"), "crafted is FAILED", "isf pipeline errors crafted")
    assert not (tmp_path / "training/export").exists()

    (tmp_path / "training/data").rename(tmp_path / "gone")
    one_line_error(export(tmp_path, "--format", "openai"), "no output yet", "isf pipeline run crafted")
    one_line_error(isf(tmp_path, "pipeline", "export", "nope", "--format", "openai"), "unknown pipeline 'nope'")


def test_without_the_hf_extra_one_line_names_it(tmp_path):
    make(tmp_path, records=[MULTI])
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    for module in ("datasets", "pyarrow", "huggingface_hub"):
        (blocker / f"{module}.py").write_text("raise ImportError('not installed (test)')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    one_line_error(export(tmp_path, "--format", "hf", env=env), "hf needs datasets, pyarrow: pip install 'shaping[hf]'")
    one_line_error(export(tmp_path, "--format", "parquet", env=env), "parquet needs pyarrow: pip install 'shaping[hf]'")
    one_line_error(export(tmp_path, "--format", "openai", "--push-to-hub", "me/x", env=env),
                   "--push-to-hub needs huggingface_hub: pip install 'shaping[hf]'")
    assert not (tmp_path / "training/export").exists()
    ok(export(tmp_path, "--format", "sharegpt", env=env))  # the JSON Lines formats need nothing


# -- converters on what a format cannot hold -----------------------------------------------------------

@pytest.mark.parametrize("messages, why", [
    ([{"role": "assistant", "content": "hi"}], "turn order"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}],
     "turn order"),
    ([{"role": "user", "content": "a"}], "turn order"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "c"}],
     "a system message after the first turn"),
    ([{"role": "user", "content": "a"},
      {"role": "assistant", "content": "Let me look.", "tool_calls": [call(0, "Paris")]},
      {"role": "tool", "tool_call_id": "call_0", "content": "18C"}, {"role": "assistant", "content": "18C"}],
     "assistant text beside tool calls"),
    ([{"role": "user", "content": "a"},
      {"role": "assistant", "content": None, "tool_calls": [{**call(0, "x"), "function": {"name": "f", "arguments": "{"}}]},
      {"role": "tool", "tool_call_id": "call_0", "content": "18C"}, {"role": "assistant", "content": "18C"}],
     "tool call arguments that are not JSON"),
])
def test_sharegpt_skips_what_it_cannot_hold(messages, why):
    with pytest.raises(Skip, match=why):
        to_sharegpt({"id": "x", "messages": messages})


def test_alpaca_turn_order_and_reasoning_normalising():
    with pytest.raises(Skip, match="turn order"):
        to_alpaca({"id": "x", "messages": [{"role": "user", "content": "a"}]})
    both = {"role": "assistant", "content": "<think>b</think>answer", "reasoning_content": "a"}
    assert with_reasoning(both, "field") == ({"role": "assistant", "content": "answer", "reasoning_content": "a\n\nb"}, True)
    assert with_reasoning({"role": "assistant", "content": "a", "reasoning_content": ""}, "inline") == (
        {"role": "assistant", "content": "a"}, False)
    assert with_reasoning({"role": "user", "content": "<think>x</think>"}, "drop") == (
        {"role": "user", "content": "<think>x</think>"}, False)  # only assistant turns hold reasoning


# -- the push ---------------------------------------------------------------------------------------------

TOKEN = "hf_test_secret_token_do_not_print"


@pytest.fixture
def hub():
    from tests.servers.hub import HubStandIn

    with HubStandIn() as server:
        yield server


def hub_env(hub, tmp_path, token=TOKEN):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    if token:
        env["HF_TOKEN"] = token
    return env


def test_push_to_hub_commits_the_export_and_a_card(tmp_path, hub):
    import yaml

    from shaping.manifest import read_manifest

    project = make(tmp_path)
    env = hub_env(hub, tmp_path)
    result = export(tmp_path, "--format", "openai", "--push-to-hub", "me/crafted-data", "--private", env=env)
    out = ok(result)
    assert out.splitlines()[-1] == f"pushed to {hub.url}/datasets/me/crafted-data"
    repo = hub.repos["me/crafted-data"]
    assert (repo["type"], repo["visibility"]) == ("dataset", "private")
    assert sorted(repo["files"]) == ["README.md", "data/crafted.openai.jsonl"]
    assert repo["files"]["data/crafted.openai.jsonl"] == (tmp_path / "training/export/crafted.openai.jsonl").read_bytes()
    assert repo["commits"] == [{"summary": "isf pipeline export crafted --format openai", "description": ""}]
    assert [path for _, path, _ in hub.requests if path.startswith("/api/datasets/")] == [
        "/api/datasets/me/crafted-data/tree/main",  # what an earlier push left under data/
        "/api/datasets/me/crafted-data/preupload/main", "/api/datasets/me/crafted-data/commit/main"]
    assert {auth for _, path, auth in hub.requests if path != "/api/agent-harnesses"} == {f"Bearer {TOKEN}"}

    card = repo["files"]["README.md"].decode()
    _, front, body = card.split("---\n", 2)
    assert yaml.safe_load(front) == {
        "pretty_name": "crafted", "size_categories": ["n<1K"], "task_categories": ["text-generation"],
        "tags": ["synthetic", "shaping", "openai"],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/crafted.openai.jsonl"}]}]}
    manifest = read_manifest(project.outputs("crafted").manifest)
    for row in ["| format | openai (reasoning: drop) |", "| samples exported | 7 |", "| left out | none |",
                "| records in the run | 8 |", "| samples in the run | 7 |", "| failed records | judge_rejected 1 |",
                f"| pipeline source sha256 | `{manifest.pipeline_source_sha256}` |",
                f"| made | {manifest.completed_at.isoformat()} |", "| annotated run | no |",
                "| judge | mock | mock-judge |"]:
        assert row in body.splitlines(), row
    assert "| git commit | `unknown (" in body
    for text in (card, result.stdout, result.stderr):
        assert TOKEN not in text

    # again, into the repository that now exists, as a hf folder: a second commit
    ok(export(tmp_path, "--format", "hf", "--push-to-hub", "me/crafted-data", env=env))
    assert len(repo["commits"]) == 2 and repo["visibility"] == "private"
    assert {"data/data-00000-of-00001.arrow", "data/state.json", "data/dataset_info.json"} <= set(repo["files"])
    assert "data/crafted.openai.jsonl" not in repo["files"]  # the earlier push's data went in the same commit
    assert "path: data/*.arrow" in repo["files"]["README.md"].decode()


def test_push_without_a_token_or_to_a_refusing_hub_is_one_line(tmp_path, hub):
    make(tmp_path, records=[MULTI])
    one_line_error(export(tmp_path, "--format", "openai", "--push-to-hub", "me/x", env=hub_env(hub, tmp_path, None)),
                   "needs a Hugging Face token: set HF_TOKEN")
    assert [path for _, path, _ in hub.requests if path != "/api/agent-harnesses"] == []
    assert not (tmp_path / "training/export").exists()  # refused before anything was written
    result = export(tmp_path, "--format", "openai", "--push-to-hub", "not a repo id!", env=hub_env(hub, tmp_path))
    one_line_error(result, "--push-to-hub not a repo id!: Repo id must use alphanumeric chars")
    assert not (tmp_path / "training/export").exists()  # refused before anything was written
    hub.stop()  # a Hub that cannot be reached: the export is written, the push fails in one line
    result = export(tmp_path, "--format", "openai", "--push-to-hub", "me/x", env=hub_env(hub, tmp_path))
    one_line_error(result, "push to me/x failed:")
    assert result.stdout.startswith("wrote training/export/crafted.openai.jsonl: 1 samples as openai")
    one_line_error(export(tmp_path, "--format", "openai", "--private"), "--private goes with --push-to-hub")


# -- TRL takes the hf export as it is -----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # TRL's own config
def test_trl_sft_trains_on_the_hf_export(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    from tests.test_reasoning_and_tools import TOOL_TEMPLATE
    from tests.tiny_model import build_tiny_model

    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = build_tiny_model(tmp_path / "tiny", chat_template=False)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.chat_template = TOOL_TEMPLATE
    tokenizer.save_pretrained(model)

    (tmp_path / "project").mkdir()
    make(tmp_path / "project", records=[MULTI, TOOL, REASONING, INLINE], annotate=True)
    ok(isf(tmp_path / "project", "pipeline", "export", "crafted", "--format", "hf"))
    dataset = datasets.load_from_disk(str(tmp_path / "project/training/export/crafted.hf"))
    assert len(dataset) == 4 and dataset[1]["tools"] == TOOLS
    rendered = tokenizer.apply_chat_template(dataset[1]["messages"], tools=dataset[1]["tools"], tokenize=False)
    assert "<think> I should look it up. </think>" in rendered
    # each message keeps exactly its own keys: no reasoning_content (or tool_calls) filled in as null
    assert "<think>" not in tokenizer.apply_chat_template(dataset[0]["messages"], tokenize=False)

    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=2,
                     max_length=4096, assistant_only_loss=True, report_to="none", save_strategy="no",
                     logging_steps=1, use_cpu=True, dataloader_num_workers=0, bf16=False, fp16=False)
    trainer = SFTTrainer(model=str(model), args=args, train_dataset=dataset, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 4
    for example in trainer.train_dataset:
        trained = sum(label != -100 for label in example["labels"])
        assert 0 < trained < len(example["labels"])
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0
