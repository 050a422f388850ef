"""End to end against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1, serving
a tiny random Llama that the test builds and saves to a folder (the request's `model` is that
folder's path; HF_HUB_OFFLINE=1, nothing from the hub).

What it shows, through a scratch project whose `[models.local]` is `provider = "openai"` at the
server's base_url:
- k-shot turns reach the server intact: the prompt tokens it reports are those of the chat
  template applied to exactly system + examples + prompt (computed here with the same tokenizer);
- structured output on a server that ignores `response_format`: the schema is in the last user
  turn, and every record ends as a sample or a typed `validation_error` record;
- a plain run: every record a sample or a typed error record, finish reasons recorded, and the
  usage kept in the steps is what the server reported (read through a recording proxy).

Skipped, with the reason printed, only when `transformers serve` cannot start here (missing
serving packages, or the server process dies or stays silent at startup).
"""

import json
from pathlib import Path

import pytest
from pydantic import BaseModel

from shaping import run_pipeline
from shaping.errors import RunFailedError
from shaping.pipeline import Pipeline, TrainingSample, model_request
from tests.conftest import read_errors, read_jsonl, write_project
from tests.servers.transformers_serve import RecordingProxy, ServeUnavailable, TransformersServe
from tests.tiny_model import build_tiny_model

MAX_TOKENS = 6
SYSTEM = "you write one story . be brief"
EXAMPLES = [
    {"role": "user", "content": "write one story of the fox and the grapes"},
    {"role": "assistant", "content": "the fox scorn the grapes . moral : we scorn what we cannot have"},
    {"role": "user", "content": "write one story of the tortoise and the hare"},
    {"role": "assistant", "content": "the tortoise wins the race . moral : slow and steady wins"},
]
TOPICS = ["the ant and the grasshopper", "the hare and the fox"]


class Verdict(BaseModel):
    label: str
    score: int


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server, the tiny model's folder, and its tokenizer."""
    root = tmp_path_factory.mktemp("serve")
    model_path = build_tiny_model(root / "tiny-llama")
    server = TransformersServe(log_dir=root)
    try:
        server.start()
    except ServeUnavailable as exc:
        print(f"\nskipping: {exc}")
        pytest.skip(f"transformers serve cannot start here: {exc}")
    try:
        answer = server.warm_up(str(model_path))
        assert answer["model"] == str(model_path)  # the request's model path chose the model
        from transformers import AutoTokenizer

        yield server, str(model_path), AutoTokenizer.from_pretrained(model_path)  # the folder's, as the server's
    finally:
        server.stop()


def project_for(root: Path, base_url: str, model_path: str, recorded_url: str | None = None):
    table = (f'provider = "openai"\nbase_url = "{{url}}"\nmodel = "{model_path}"\n'
             f'timeout_s = 60\nmax_retries = 1\n'
             f'[models.{{name}}.params]\ntemperature = 0\nmax_tokens = {MAX_TOKENS}\n')
    toml = "[models.local]\n" + table.format(url=base_url, name="local")
    if recorded_url:
        toml += "[models.recorded]\n" + table.format(url=recorded_url, name="recorded")
    project = write_project(root, toml)
    (root / "identity" / "k_shot.json").write_text(json.dumps({"configurations": [
        {"name": "fables", "k_shot_count": 2, "messages": EXAMPLES}]}))
    return project


def template_tokens(tokenizer, messages) -> int:
    """How many tokens the server's chat template makes of `messages`, generation prompt included."""
    encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    return len(encoded["input_ids"])


def run(pipeline):
    """(result, samples, error records) of an annotated run. A run whose every record failed is
    a failed run: it raises, writes no samples and puts its error records beside the outputs."""
    try:
        result = run_pipeline(pipeline, annotate=True, use_cache=False)
    except RunFailedError as exc:
        assert "every record failed" in str(exc), exc
        return exc.result, [], read_errors(exc.result.paths.failed_errors)
    return result, read_jsonl(result.paths.samples), read_errors(result.paths.errors)


def every_record_ends(samples, errors, ids, error_types):
    assert sorted([s["id"] for s in samples] + [e["id"] for e in errors]) == sorted(ids)
    assert {e["error"] for e in errors} <= error_types, [(e["error"], e["message"]) for e in errors]
    for record in samples + errors:
        assert record["steps"], record
        for step in record["steps"]:
            assert step["error"] is None or step["error"]["type"] in error_types, step["error"]
            if step["error"] is None or step["error"]["type"] == "validation_error":  # answered
                assert step["finish_reason"] in ("length", "stop"), step
                assert step["usage"]["completion_tokens"] <= MAX_TOKENS
                if step["finish_reason"] == "length":
                    assert step["usage"]["completion_tokens"] == MAX_TOKENS


# -- (a) k-shot turns ------------------------------------------------------------------------------

class KShotStories(Pipeline):
    name = "serve-kshot"
    examples = Pipeline.kshot_dep("identity/k_shot.json", config="fables")
    writer = Pipeline.model_dep("local")

    def run(self):
        return self.run_task(self.write, records=[{"id": f"k{i}", "topic": t} for i, t in enumerate(TOPICS)])

    def write(self, record):
        prompt = f"write one story of {record['topic']}"
        story = yield model_request(self.examples.conversation(prompt, system=SYSTEM), model=self.writer,
                                    allow={"truncated"})
        return TrainingSample(id=record["id"], messages=[
            {"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}, story.as_message()])


def test_kshot_turns_reach_the_server_intact(served, tmp_path):
    server, model_path, tokenizer = served
    project = project_for(tmp_path, server.base_url, model_path)
    _, samples, errors = run(KShotStories(project))
    every_record_ends(samples, errors, ["k0", "k1"], {"empty"})
    for record in samples + errors:
        topic = TOPICS[int(record["id"][1:])]
        expected = [{"role": "system", "content": SYSTEM}, *EXAMPLES,
                    {"role": "user", "content": f"write one story of {topic}"}]
        (step,) = record["steps"]
        assert step["messages"] == expected
        # the server counted exactly these turns, rendered by the model's chat template
        assert step["usage"]["prompt_tokens"] == template_tokens(tokenizer, expected)
        assert step["usage"]["prompt_tokens"] > template_tokens(tokenizer, [expected[0], expected[-1]])
    for sample in samples:
        assert sample["metadata"]["kshot"] == {"source": "identity/k_shot.json", "configuration": "fables",
                                               "count": 2}
        assert sample["messages"][-1]["content"] == sample["steps"][0]["text"]


# -- (b) structured output, schema in the prompt ------------------------------------------------------

class Judge(Pipeline):
    name = "serve-structured"
    judge = Pipeline.model_dep("local")

    def run(self):
        return self.run_task(self.judge_one, records=[{"id": "j0", "topic": TOPICS[0]}])

    def judge_one(self, record):
        prompt = f"judge the story of {record['topic']}"
        verdict = yield model_request([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                                      model=self.judge, response_model=Verdict, max_repairs=1)
        parsed = verdict.get_parsed()
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": prompt}, {"role": "assistant", "content": parsed.model_dump_json()}])


def test_structured_output_puts_the_schema_in_the_prompt(served, tmp_path):
    server, model_path, tokenizer = served
    project = project_for(tmp_path, server.base_url, model_path)
    _, samples, errors = run(Judge(project))
    every_record_ends(samples, errors, ["j0"], {"validation_error"})
    schema = json.dumps(Verdict.model_json_schema(), ensure_ascii=False)
    for record in samples + errors:
        first = record["steps"][0]
        last_user = first["messages"][-1]
        assert last_user["role"] == "user"
        assert last_user["content"].startswith(f"judge the story of {TOPICS[0]}")
        assert "Answer with JSON only" in last_user["content"] and schema in last_user["content"]
        for step in record["steps"]:  # the server saw the schema: it counted those tokens
            assert step["usage"]["prompt_tokens"] == template_tokens(tokenizer, step["messages"])
    for error in errors:  # random weights write no JSON: repaired once, then a typed error
        assert [s["repair"] for s in error["steps"]] == [0, 1]
        assert "no valid JSON after 2 attempt(s) (1 repairs)" in error["message"]
        repair_turn = error["steps"][1]["messages"][-1]
        assert repair_turn["role"] == "user" and schema in repair_turn["content"]
        assert error["steps"][1]["messages"][-2] == {"role": "assistant", "content": error["steps"][0]["text"]}
    for sample in samples:
        Verdict.model_validate_json(sample["messages"][-1]["content"])


# -- (c) a plain run; usage as the server reported it ----------------------------------------------

class Plain(Pipeline):
    name = "serve-plain"
    writer = Pipeline.model_dep("recorded")

    def run(self):
        return self.run_task(self.write, records=[{"id": f"p{i}", "topic": t} for i, t in enumerate(TOPICS)])

    def write(self, record):
        answer = yield model_request(f"write one story of {record['topic']}", model=self.writer, allow={"truncated"})
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": f"write one story of {record['topic']}"}, answer.as_message()])


def test_plain_run_keeps_the_usage_the_server_reported(served, tmp_path):
    server, model_path, tokenizer = served
    with RecordingProxy(upstream=server.base_url) as proxy:
        project = project_for(tmp_path, server.base_url, model_path, recorded_url=proxy.base_url)
        result, samples, errors = run(Plain(project))
        exchanges = list(proxy.exchanges)
    every_record_ends(samples, errors, ["p0", "p1"], {"empty"})
    assert len(exchanges) == 2 and all(x.status == 200 and x.path == "/v1/chat/completions" for x in exchanges)
    by_prompt = {x.request["messages"][-1]["content"]: x for x in exchanges}
    total_prompt = total_completion = 0
    for record in samples + errors:
        (step,) = record["steps"]
        exchange = by_prompt[step["messages"][-1]["content"]]
        assert exchange.request["model"] == model_path and exchange.request["messages"] == step["messages"]
        assert exchange.request["max_tokens"] == MAX_TOKENS and step["params"]["max_tokens"] == MAX_TOKENS
        reported, choice = exchange.response["usage"], exchange.response["choices"][0]
        assert step["usage"]["prompt_tokens"] == reported["prompt_tokens"]
        assert step["usage"]["completion_tokens"] == reported["completion_tokens"]
        assert step["usage"]["prompt_tokens"] == template_tokens(tokenizer, step["messages"])
        assert step["finish_reason"] == choice["finish_reason"]
        assert step["text"] == (choice["message"].get("content") or "")
        total_prompt += reported["prompt_tokens"]
        total_completion += reported["completion_tokens"]
    for sample in samples:
        assert sample["messages"][-1] == {"role": "assistant", "content": sample["steps"][0]["text"]}
    usage = result.manifest.usage["recorded"]
    assert (usage.prompt_tokens, usage.completion_tokens) == (total_prompt, total_completion)
