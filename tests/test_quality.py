"""Checks before training: each checklist rule on data built to fail it, the CLI, the report."""

import json
import re
import shutil
from pathlib import Path

import pytest

from shaping.output import OutputPaths
from shaping.quality import Dataset, Thresholds, run_checks
from shaping.quality.checks import counts, distinct_2, role_order_ok
from shaping.quality.dataset import last_turn
from shaping.quality.report import render
from shaping.quality.turns import content_text, split_think
from tests.conftest import MOCK_TOML, write_project
from tests.test_cli import isf

LIMITS = Thresholds(min_samples=3)


def sample(i, response=None, prompt=None, messages=None):
    prompt = prompt or f"question number {i} about topic {i * 7}"
    response = f"answer {i}: the {i}th reply talks about item {i * 3} in detail" if response is None else response
    return {"id": str(i), "messages": messages or [{"role": "user", "content": prompt},
                                                   {"role": "assistant", "content": response}]}


def dataset(samples, errors=()):
    return Dataset("crafted", OutputPaths.for_samples(Path("/nowhere/crafted.jsonl")), list(samples), list(errors))


def failing(data, limits=LIMITS):
    return {c.name for c in run_checks(data, limits) if not c.passed}


GOOD = [sample(i) for i in range(20)]


def test_a_good_data_set_passes_everything():
    assert failing(dataset(GOOD)) == set()


@pytest.mark.parametrize("name, data", [
    ("volume", dataset(GOOD[:2])),
    ("empty assistant turns", dataset(GOOD + [sample(99, response="   ")])),
    ("error-like responses", dataset(GOOD[:10] + [sample(50, response="I'm sorry, but as an AI I cannot do that.")])),
    ("error-like responses", dataset(GOOD[:10] + [sample(51, response='{"error": {"message": "Rate limit reached"}}')])),
    ("exact duplicates", dataset(GOOD + [GOOD[0]])),
    ("near duplicates", dataset(GOOD + [sample(100 + i, response="Answer 1:   the 1th reply talks about item 3 in DETAIL!")
                                        for i in range(3)])),
    ("diversity (distinct-2)", dataset([sample(i, response="same words " * 5) for i in range(20)])),
    ("length distribution", dataset(GOOD[:10] + [sample(60 + i, response="ok") for i in range(3)])),
    ("role order", dataset(GOOD + [sample(70, messages=[{"role": "assistant", "content": "hi"},
                                                        {"role": "user", "content": "there"}])])),
    ("error rate", dataset(GOOD, errors=[{"error": "api_error", "id": "x", "message": "m"}] * 2)),
])
def test_each_rule_fails_on_data_made_to_fail_it(name, data):
    assert name in failing(data)


def test_helpers():
    assert distinct_2(["a b c", "a b d"]) == pytest.approx(3 / 4)
    assert role_order_ok([{"role": "system"}, {"role": "user"}, {"role": "assistant"}])
    assert not role_order_ok([{"role": "user"}, {"role": "assistant"}, {"role": "user"}])
    assert not role_order_ok([])


def step(text, finish="stop", index=0, refusal=None, reasoning=None, tool_calls=None, tokens=20, error=None):
    return {"index": index, "model": "judge", "messages": [], "params": {}, "text": text, "reasoning": reasoning,
            "tool_calls": tool_calls, "refusal": refusal, "error": error,
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens}, "finish_reason": finish,
            "latency_s": 0.1, "attempts": 1, "cached": False, "repair": 0, "metadata": {}}


def annotated(i, content=None, steps=None, **turn):
    """An annotated sample whose assistant turn came from its one step (unless `steps` says otherwise)."""
    done = sample(i) if content is None else sample(i, response=content)
    done["messages"][-1].update(turn)
    if content is None:
        content = done["messages"][-1]["content"]
    done["steps"] = [step(content_text(content))] if steps is None else steps
    return done


CALL = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "tides"}'}}
GOOD_ANNOTATED = [annotated(i) for i in range(20)]
EMPTY = annotated(90, content="", steps=[step("")])
TRUNCATED = annotated(91, content="the answer began but was cut off at the tok", steps=[
    step("the answer began but was cut off at the tok", finish="length", tokens=64)])
REFUSED = annotated(92, content="I can't help with that.", steps=[
    step("", finish="refusal", refusal="I can't help with that.")])
FILTERED = annotated(93, content="an answer the filter stopped partway", steps=[
    step("an answer the filter stopped partway", finish="content_filter")])
BAD = [EMPTY, TRUNCATED, REFUSED, FILTERED]
ALLOWING = Thresholds(min_samples=3, max_empty=1, max_truncated=1, max_refused=2, max_error_like_rate=1)


def check(data, name, limits=LIMITS):
    return next(c for c in run_checks(data, limits) if c.name == name)


def test_empty_truncated_and_refused_turns_are_counted_and_fail():
    data = dataset(GOOD_ANNOTATED + BAD)
    assert counts(data) == {"assistant turns": 24, "empty": 1, "truncated": 1, "refused": 2,
                            "with reasoning": 0, "tool-call turns": 0}
    assert {"empty assistant turns", "truncated assistant turns", "refused assistant turns"} <= failing(data)
    assert check(data, "empty assistant turns").problems == (
        "sample 90: message 1 (assistant): empty (no text and no tool calls)",)
    assert check(data, "truncated assistant turns").problems == (
        "sample 91: message 1 (assistant): cut off (step 0 ended with finish_reason length after 64 tokens)",)
    refused = check(data, "refused assistant turns")
    assert refused.figure == "2 turns refused in 2 samples" and refused.status == "FAIL"
    assert refused.problems == (
        "sample 92: message 1 (assistant): refused (step 0 refused: \"I can't help with that.\")",
        "sample 93: message 1 (assistant): refused (step 0 was stopped by the provider's content filter)")
    # each alone fails only its own check
    for bad, field, name in [(EMPTY, "max_empty", "empty assistant turns"),
                             (TRUNCATED, "max_truncated", "truncated assistant turns"),
                             (REFUSED, "max_refused", "refused assistant turns"),
                             (FILTERED, "max_refused", "refused assistant turns")]:
        assert failing(dataset(GOOD_ANNOTATED + [bad]), ALLOWING.model_copy(update={field: 0})) == {name}


def test_thresholds_allow_them():
    data = dataset(GOOD_ANNOTATED + BAD)
    assert failing(data, ALLOWING) == set()
    assert "truncated assistant turns" in failing(data, ALLOWING.model_copy(update={"max_truncated": 0}))
    assert "refused assistant turns" in failing(data, ALLOWING.model_copy(update={"max_refused": 1}))
    assert check(data, "truncated assistant turns", ALLOWING).limit.startswith("<= 1 ")
    # the share of samples still works for empty turns
    by_rate = ALLOWING.model_copy(update={"max_empty": 0, "max_empty_rate": 0.05})
    assert "empty assistant turns" not in failing(data, by_rate)
    assert "empty assistant turns" in failing(data, by_rate.model_copy(update={"max_empty_rate": 0.01}))
    with pytest.raises(ValueError):
        Thresholds(max_truncated=-1)


def test_which_step_became_the_turn():
    # the step that was cut off is not the one whose answer was kept: not truncated
    retried = annotated(1, steps=[step("a first try cut of", finish="length"), step(GOOD[1]["messages"][1]["content"],
                                                                                   index=1)])
    # the task wrapped the cut-off text in more words: still found
    wrapped = annotated(2, content="Summary: the answer began but was cut off at the tok (end)",
                        steps=[step("the answer began but was cut off at the tok", finish="length")])
    # all reasoning and no answer: found by its reasoning
    thinking = annotated(3, content="", reasoning_content="let me think about this for a long",
                         steps=[step("", finish="length", reasoning="let me think about this for a long")])
    # a step that failed is never the source
    failed = annotated(4, steps=[step(GOOD[4]["messages"][1]["content"], finish="length",
                                      error={"type": "api_error", "message": "m"})])
    turns = {t.sample_id: t for t in dataset([retried, wrapped, thinking, failed]).turns}
    assert not turns["1"].truncated and turns["1"].step == 1
    assert turns["2"].truncated and turns["3"].truncated and turns["3"].empty
    assert turns["3"].reasoning == "field" and not turns["4"].truncated


def test_minimal_output_cannot_tell_truncated_or_refused():
    minimal = [{k: v for k, v in s.items() if k != "steps"} for s in GOOD_ANNOTATED + BAD]
    data = dataset(minimal)
    for name in ("truncated assistant turns", "refused assistant turns"):
        found = check(data, name)
        assert found.passed and found.kind == "unknown" and found.status == "N/A"
        assert "cannot be known" in found.figure and "minimal output" in found.figure
    assert counts(data)["truncated"] is None and counts(data)["refused"] is None
    assert "empty assistant turns" in failing(data)  # that one the turn itself shows
    mixed = dataset(GOOD_ANNOTATED + BAD + minimal[:2])
    assert check(mixed, "truncated assistant turns").figure == (
        "1 turn cut off in 1 sample; 2 samples without steps not judged")


def test_reasoning_and_tool_calls_are_figures():
    tool_use = {"id": "tools", "messages": [
        {"role": "user", "content": "what are the tides today?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "call_1", "content": "high at 6:12, low at 12:30"},
        {"role": "assistant", "content": "High tide is at 6:12 and low tide at 12:30 today."}],
        "steps": [step("", finish="tool_calls", tool_calls=[CALL]),
                  step("High tide is at 6:12 and low tide at 12:30 today.", index=1)]}
    reasoned = [annotated(i, reasoning_content=f"thinking about {i}") for i in range(20, 24)]
    inline = [annotated(i, content=f"<think>first {i}, then</think>the answer is number {i} in full")
              for i in range(30, 32)]
    no_thoughts = annotated(40, content="<think>\n\n</think>\n\nan answer given without any thinking")
    only_thoughts = annotated(41, content="<think>thinking, and then nothing")
    data = dataset(GOOD_ANNOTATED + [tool_use] + reasoned + inline + [no_thoughts, only_thoughts])
    assert counts(data) == {"assistant turns": 30, "empty": 1, "truncated": 0, "refused": 0,
                            "with reasoning": 7, "tool-call turns": 1}
    reasoning, tools = check(data, "reasoning"), check(data, "tool calls")
    assert reasoning.kind == tools.kind == "info" and reasoning.passed and tools.passed
    assert reasoning.figure == ("7 of 30 assistant turns (23.3%) with reasoning (4 reasoning_content, 3 inline "
                                "<think>); 23 without")
    assert tools.figure == "1 of 30 assistant turns (3.3%) call tools (1 call); 1 tool turn"
    assert check(data, "empty assistant turns").problems == (
        "sample 41: message 1 (assistant): empty (no text and no tool calls)",)
    assert failing(dataset(GOOD_ANNOTATED + [tool_use] + reasoned + inline + [no_thoughts])) == set()
    assert split_think("<think> a </think> b <think>c") == ("b", "a\nc")
    assert last_turn(inline[0], "assistant") == "the answer is number 30 in full"


def test_content_as_parts_none_or_odd_does_not_crash():
    parts = {"id": "parts", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "what is in "}, {"type": "text", "text": "this picture?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A lighthouse on a cliff at dusk."}]}],
        "steps": [step("A lighthouse on a cliff at dusk.")]}
    none = {"id": "none", "messages": [{"role": "user", "content": "say nothing"},
                                       {"role": "assistant", "content": None}], "steps": []}
    odd = {"id": "odd", "messages": [{"role": "user", "content": 42}, "not a message",
                                     {"role": "assistant", "content": [7, {"type": "text"}, "loose text"]}]}
    no_messages = {"id": "bare", "steps": "not a list"}
    data = dataset(GOOD_ANNOTATED + [parts, none, odd, no_messages])
    assert last_turn(parts, "user") == "what is in this picture?"
    assert last_turn(parts, "assistant") == "A lighthouse on a cliff at dusk."
    assert last_turn(none, "assistant") == "" and last_turn(odd, "user") == "42"
    assert last_turn(odd, "assistant") == "loose text"
    assert "'type'" not in "".join(data.responses)  # no list written out as text
    checks = {c.name: c for c in run_checks(data, LIMITS)}
    assert checks["empty assistant turns"].problems == (
        "sample none: message 1 (assistant): empty (no text and no tool calls)",)
    assert checks["role order"].problems == ("sample odd: roles user, str, assistant",
                                             "sample bare: roles (no messages)")
    html = render(data, list(checks.values()))
    assert "A lighthouse on a cliff at dusk." in html and "what is in this picture?" in html and "[1 image]" in html
    assert "[{" not in html  # parts are shown as text, never as a Python list


def test_role_order_with_tool_turns():
    user, answer = {"role": "user"}, {"role": "assistant", "content": "x"}
    calls = {"role": "assistant", "content": None, "tool_calls": [CALL, {**CALL, "id": "call_2"}]}
    result = {"role": "tool", "tool_call_id": "call_1"}
    assert role_order_ok([user, calls, result, {**result, "tool_call_id": "call_2"}, answer])
    assert role_order_ok([user, calls])  # ends on the call: a tool-calling example
    assert not role_order_ok([user, calls, answer])  # calls never answered
    assert not role_order_ok([user, calls, {**result, "tool_call_id": "call_9"}, answer])  # answers no call
    assert not role_order_ok([user, calls, result, user, answer])
    assert not role_order_ok([user, result, answer])


PIPELINE = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

class Small(Pipeline):
    name = "small"
    quality = {QUALITY}
    judge = Pipeline.model_dep("judge")

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(12)])

    def task(self, record):
        answer = yield model_request(f"tell me about item {record['id']} please", model=self.judge)
        if record["id"] == "5":
            raise PipelineError("judge refused", error_type="refused")
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": f"item {record['id']}"}, {"role": "assistant", "content": answer.get_text()}])
'''


@pytest.fixture
def small(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", '{"min_samples": 5, "max_error_rate": 0.1}'))
    assert isf(tmp_path, "pipeline", "run", "small", "-q").returncode == 0
    return tmp_path


def test_validate_cli_uses_the_pipelines_thresholds(small):
    result = isf(small, "pipeline", "validate", "small")
    assert result.returncode == 0, result.stdout
    assert "all 11 checks passed" in result.stdout
    (small / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", "{}"))
    result = isf(small, "pipeline", "validate", "small")
    assert result.returncode == 1
    assert "FAIL  volume" in result.stdout and "11 samples" in result.stdout and "error rate" in result.stdout
    (small / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", '{"min_sample": 5}'))
    result = isf(small, "pipeline", "validate", "small")
    assert result.returncode == 1 and "pipeline 'small': quality: min_sample: Extra inputs" in result.stderr


def test_sample_and_errors_cli(small):
    result = isf(small, "pipeline", "sample", "small", "-n", "3", "--seed", "1")
    assert result.returncode == 0 and "3 of 11 samples, seed 1" in result.stdout
    assert result.stdout == isf(small, "pipeline", "sample", "small", "-n", "3", "--seed", "1").stdout
    full = isf(small, "pipeline", "sample", "small", "-n", "1", "--full").stdout
    assert "user: item" in full and "assistant: [mock-judge" in full
    errors = isf(small, "pipeline", "errors", "small").stdout
    assert "small: 1 failed records" in errors and "refused  1" in errors and "e.g. 5: judge refused" in errors


def test_commands_on_a_pipeline_never_run(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "small.py").write_text(PIPELINE.replace("{QUALITY}", "{}"))
    result = isf(tmp_path, "pipeline", "validate", "small")
    assert result.returncode == 1 and "has no output yet" in result.stderr and "isf pipeline run small" in result.stderr


def test_report_is_self_contained(small):
    result = isf(small, "pipeline", "report", "small")
    assert result.returncode == 0, result.stderr
    html = (small / "training/data/small.report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    assert '<div class="figure" id="count-samples">11</div>' in html
    assert "refused" in html and "Checklist" in html and "<svg" in html


def write_output(root, samples, name="small"):
    folder = root / "training" / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


PARTS = {"id": "parts", "messages": [
    {"role": "user", "content": [{"type": "text", "text": "what is in this picture?"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A lighthouse on a cliff at dusk."}]}],
    "steps": [step("A lighthouse on a cliff at dusk.")]}
TOOL_USE = {"id": "tools", "messages": [
    {"role": "user", "content": "what are the tides today?"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "high at 6:12, low at 12:30"},
    {"role": "assistant", "content": "High tide is at 6:12 and low tide at 12:30 today.",
     "reasoning_content": "The tool said when; say it plainly."}],
    "steps": [step("", finish="tool_calls", tool_calls=[CALL]),
              step("High tide is at 6:12 and low tide at 12:30 today.", index=1,
                   reasoning="The tool said when; say it plainly.")]}
CRAFTED = GOOD_ANNOTATED[:12] + [PARTS, TOOL_USE, TRUNCATED, REFUSED, FILTERED] + [
    annotated(100 + i, content="", steps=[step("")]) for i in range(7)]


def test_validate_cli_names_the_turns_to_blame_and_thresholds_allow_them(tmp_path):
    write_project(tmp_path)
    pipeline_file = tmp_path / "pipelines" / "small.py"
    pipeline_file.write_text(PIPELINE.replace("{QUALITY}", '{"min_samples": 5, "max_error_like_rate": 1}'))
    write_output(tmp_path, CRAFTED)
    result = isf(tmp_path, "pipeline", "validate", "small")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "empty assistant turns: sample 100: message 1 (assistant): empty (no text and no tool calls)" in out
    assert "sample 104: message 1" in out and "sample 105" not in out  # the first five only
    assert "empty assistant turns: ... and 2 more (isf pipeline report small lists them)" in out
    assert ("truncated assistant turns: sample 91: message 1 (assistant): cut off "
            "(step 0 ended with finish_reason length after 64 tokens)") in out
    assert "refused assistant turns: sample 92: message 1 (assistant): refused" in out
    assert "refused assistant turns: sample 93: message 1 (assistant): refused (step 0 was stopped" in out
    assert ("3 of 11 checks failed: empty assistant turns, truncated assistant turns, refused assistant turns"
            in out)
    assert re.search(r"INFO\s+reasoning\s+1 of 25 assistant turns \(4\.0%\) with reasoning", out)
    assert re.search(r"INFO\s+tool calls\s+1 of 25 assistant turns \(4\.0%\) call tools \(1 call\); 1 tool turn", out)

    pipeline_file.write_text(PIPELINE.replace("{QUALITY}", '{"min_samples": 5, "max_error_like_rate": 1, '
                                                           '"max_empty": 7, "max_truncated": 1, "max_refused": 2}'))
    result = isf(tmp_path, "pipeline", "validate", "small")
    assert result.returncode == 0, result.stdout
    assert "all 11 checks passed" in result.stdout and "7 turns empty in 7 samples" in result.stdout

    report = isf(tmp_path, "pipeline", "report", "small")
    assert report.returncode == 0, report.stderr
    html = (tmp_path / "training/data/small.report.html").read_text()
    for fid, value in [("empty", "7"), ("truncated", "1"), ("refused", "2"), ("reasoning", "4%"), ("tool-calls", "1")]:
        assert f'<div class="figure" id="count-{fid}">{value}</div>' in html
    assert "lighthouse on a cliff" in html and "lookup({&#34;q&#34;: &#34;tides&#34;})" in html
    assert '<span class="flag bad">truncated</span>' in html

    full = isf(tmp_path, "pipeline", "sample", "small", "-n", "30", "--full").stdout
    assert "user: what is in this picture?" in full and "tool calls: lookup(" in full and "[{" not in full

    pipeline_file.write_text(PIPELINE.replace("{QUALITY}", '{"max_truncated": -1}'))
    result = isf(tmp_path, "pipeline", "validate", "small")
    assert result.returncode == 1 and "quality: max_truncated" in result.stderr


def test_error_lines_in_either_shape(tmp_path):
    write_output(tmp_path, GOOD[:3], name="shapes")
    (tmp_path / "training/data/errors").mkdir(exist_ok=True)
    (tmp_path / "training/data/errors/shapes.jsonl").write_text(
        json.dumps({"__ERROR__": {"id": "1", "error": "refusal", "message": "no"}}) + "\n"
        + json.dumps({"__ERROR__": True, "id": "2", "error": "refusal", "message": "no"}) + "\n")
    data = Dataset.load("shapes", OutputPaths.for_samples(tmp_path / "training/data/shapes.jsonl"))
    assert [(e["id"], e["error"]) for e in data.errors] == [("1", "refusal"), ("2", "refusal")]
    (tmp_path / "training/data/shapes.jsonl").write_text('["not", "an", "object"]\n')
    with pytest.raises(Exception, match="line 1: expected a JSON object, got list"):
        Dataset.load("shapes", OutputPaths.for_samples(tmp_path / "training/data/shapes.jsonl"))


def test_validate_cli_on_minimal_output(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "small.py").write_text(PIPELINE.replace(
        "{QUALITY}", '{"min_samples": 5, "max_error_like_rate": 1, "max_empty": 7}'))
    write_output(tmp_path, [{"id": s["id"], "messages": s["messages"]} for s in CRAFTED])
    result = isf(tmp_path, "pipeline", "validate", "small")
    assert result.returncode == 0, result.stdout
    assert re.search(r"N/A\s+truncated assistant turns\s+cannot be known: minimal output records no steps",
                     result.stdout)
    assert ("all 9 checks passed; not known from this output: truncated assistant turns, refused assistant turns"
            in result.stdout)
    assert isf(tmp_path, "pipeline", "report", "small").returncode == 0
    html = (tmp_path / "training/data/small.report.html").read_text()
    assert '<div class="figure" id="count-truncated">?</div>' in html and '<td class="unknown">N/A</td>' in html


TRICKY_TOML = MOCK_TOML + """
[models.careful]
provider = "mock"
model = "mock-careful"
[models.careful.options]
refuse_when_contains = "forbidden"
"""

TRICKY = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request

TOOLS = [{"type": "function", "function": {"name": "lookup", "description": "look it up",
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]

class Tricky(Pipeline):
    name = "tricky"
    quality = {"min_samples": 1, "max_error_like_rate": 1}
    careful = Pipeline.model_dep("careful")

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(6)])

    def task(self, record):
        i = int(record["id"])
        messages = [{"role": "user", "content": f"tell me about item {i}" + (" forbidden" if i == 1 else "")}]
        if i == 3:
            first = yield model_request(messages, model=self.careful, tools=TOOLS)
            call = first.as_message()
            messages += [call, {"role": "tool", "tool_call_id": call["tool_calls"][0]["id"], "content": "42"}]
            answer = yield model_request(messages, model=self.careful, tools=TOOLS)
        else:
            answer = yield model_request(messages, model=self.careful, allow={"truncated", "refusal"},
                                         max_tokens=3 if i == 2 else None, reasoning_effort="low" if i == 4 else None)
        return TrainingSample(id=record["id"], messages=messages + [answer.as_message()])
'''


def test_validate_on_a_real_run_finds_each_turn_by_its_step(tmp_path):
    write_project(tmp_path, TRICKY_TOML)
    (tmp_path / "pipelines" / "tricky.py").write_text(TRICKY)
    assert isf(tmp_path, "pipeline", "run", "tricky", "-q").returncode == 0
    result = isf(tmp_path, "pipeline", "validate", "tricky")
    assert result.returncode == 1
    assert ("truncated assistant turns: sample 2: message 1 (assistant): cut off "
            "(step 0 ended with finish_reason length") in result.stdout
    assert "refused assistant turns: sample 1: message 1 (assistant): refused (step 0 refused" in result.stdout
    assert "1 of 7 assistant turns (14.3%) with reasoning (1 reasoning_content" in result.stdout
    assert "1 of 7 assistant turns (14.3%) call tools (1 call); 1 tool turn" in result.stdout
    assert "2 of 11 checks failed: truncated assistant turns, refused assistant turns" in result.stdout


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test`; not on this machine")
def test_report_in_a_real_browser(small):
    from playwright.sync_api import sync_playwright

    isf(small, "pipeline", "report", "small")
    report = small / "training/data/small.report.html"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            blocked = []
            page.on("request", lambda r: blocked.append(r.url) if not r.url.startswith("file://") else None)
            page.goto(report.as_uri())
            assert page.inner_text("#count-samples") == "11"
            assert page.inner_text("#count-errors") == "1"
            assert "PASS" in page.inner_text("#checklist")
            first = page.locator("details.sample").first
            step = first.locator(".step").first
            assert not step.is_visible()
            first.locator("summary").click()
            assert step.is_visible()
            assert "step 0" in step.inner_text() and "tell me about item 0 please" in step.inner_text()
            assert blocked == []  # nothing fetched from the network
        finally:
            browser.close()


# A report built from an output file someone else wrote: every field holds markup that would run
# script, load an image or close the sample's <details> early were it written as HTML
SCRIPT = "<script>window.__pwned=1</script>"
IMG = '<img src=x onerror="window.__pwned=1">'
CLOSE = "</details>"
HOSTILE = SCRIPT + IMG + CLOSE
#: breaks out of an attribute where one is quoted by hand (a message's role becomes a class name)
ATTR = '"><img src=x onerror="window.__pwned=1;alert(1)"><svg onload="alert(1)">'
HOSTILE_CALL = {"id": HOSTILE, "type": "function", "function": {"name": HOSTILE, "arguments": HOSTILE}}


def hostile_step(**changes):
    return {"index": HOSTILE, "model": HOSTILE, "params": {HOSTILE: HOSTILE, "stop": [SCRIPT]},
            "messages": [{"role": ATTR, "content": HOSTILE}, {"role": "tool", "tool_call_id": HOSTILE, "content": IMG}],
            "text": HOSTILE, "reasoning": HOSTILE, "tool_calls": [HOSTILE_CALL], "refusal": HOSTILE, "error": None,
            "usage": {"prompt_tokens": HOSTILE, "completion_tokens": HOSTILE, "reasoning_tokens": HOSTILE},
            "finish_reason": HOSTILE, "latency_s": HOSTILE, "attempts": HOSTILE, "cached": HOSTILE,
            "repair": HOSTILE, "cost_usd": HOSTILE, "metadata": {HOSTILE: HOSTILE}, **changes}


HOSTILE_SAMPLES = [
    {"id": HOSTILE, "messages": [
        {"role": "system", "content": HOSTILE},
        {"role": "user", "content": [{"type": "text", "text": HOSTILE},
                                     {"type": "image_url", "image_url": {"url": HOSTILE}}]},
        {"role": "assistant", "content": None, "reasoning_content": HOSTILE, "tool_calls": [HOSTILE_CALL]},
        {"role": "tool", "tool_call_id": HOSTILE, "content": HOSTILE},
        {"role": "assistant", "content": f"<think>{HOSTILE}</think>{HOSTILE}"}],
     "metadata": {HOSTILE: HOSTILE}, "input_data": {"q": HOSTILE, HOSTILE: [IMG, CLOSE]},
     "steps": [hostile_step(), hostile_step(error={"type": HOSTILE, "message": HOSTILE}),
               hostile_step(error=HOSTILE)]},
    {"id": ATTR, "messages": [{"role": ATTR, "content": ATTR}, {"role": "assistant", "content": CLOSE}],
     "metadata": {"note": ATTR, "variant": HOSTILE}, "input_data": ATTR,
     "steps": [hostile_step(model=ATTR, finish_reason="length")]},
    {"id": CLOSE, "messages": [{"role": "user", "content": CLOSE}, {"role": "assistant", "content": SCRIPT}],
     "metadata": {}, "input_data": None, "steps": [hostile_step(refusal=None, finish_reason=SCRIPT)]},
]
HOSTILE_ERROR = {"__ERROR__": {"id": HOSTILE, "error": HOSTILE, "message": HOSTILE, "input_data": {HOSTILE: HOSTILE},
                               "steps": [hostile_step()], "pipeline_commit": HOSTILE,
                               "failed_at": "2026-01-01T00:00:00Z", "traceback": HOSTILE}}


@pytest.fixture
def hostile_report(small):
    """`isf pipeline report` on a real run's output rewritten so that every field holds markup,
    written as annotated output is (metadata, input_data and steps as JSON text)."""
    data = small / "training" / "data"
    encoded = [{**s, **{k: json.dumps(s[k]) for k in ("metadata", "input_data", "steps")}} for s in HOSTILE_SAMPLES]
    write_output(small, encoded)
    (data / "errors" / "small.jsonl").write_text(json.dumps(HOSTILE_ERROR) + "\n")
    manifest = json.loads((data / "small.manifest.json").read_text())
    manifest["git"].update(commit=HOSTILE, note=HOSTILE)
    (data / "small.manifest.json").write_text(json.dumps(manifest))
    with open(small / "training" / ".history" / "small.jsonl", "a") as history:  # a run line of anyone's
        history.write(json.dumps({"status": HOSTILE, "started_at": HOSTILE, "records": 2, "error_count": 1}) + "\n")
    result = isf(small, "pipeline", "report", "small")
    assert result.returncode == 0, result.stderr
    return data / "small.report.html"


def test_report_writes_every_field_as_text(hostile_report):
    """Without a browser: no element or attribute the data could have made, and the data itself
    written escaped."""
    from html.parser import HTMLParser

    html = hostile_report.read_text()

    class Elements(HTMLParser):
        def __init__(self):
            super().__init__()
            self.tags, self.attributes, self.details = [], [], 0

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.attributes += [name for name, _ in attrs]
            self.details += tag == "details"

        def handle_endtag(self, tag):
            self.details -= tag == "details"

    page = Elements()
    page.feed(html)
    assert not {"script", "img", "iframe", "object", "embed"} & set(page.tags)
    assert page.tags.count("svg") == 3  # the two histograms and the run history, none from the data
    assert not [name for name in page.attributes if name.startswith("on")]
    assert page.details == 0  # every <details> closed by the report, none by the data
    assert page.tags.count("details") == html.count("</details>")
    assert "<script" not in html and "<img" not in html and "<script>window.__pwned" not in html
    assert '"><img' not in html
    escaped = "&lt;script&gt;window.__pwned=1&lt;/script&gt;&lt;img src=x onerror=&#34;window.__pwned=1&#34;&gt;"
    assert html.count(escaped + "&lt;/details&gt;") >= 40  # the data is there, as text
    assert f'<table id="variants"><tr>' in html and f"<tr><td>{escaped}&lt;/details&gt;</td><td>1</td>" in html
    assert "run 2, &lt;script&gt;window._: 50.0%" in html  # the history line's date (clipped) and status, as text
    assert f"(1 of 2 records), {escaped}&lt;/details&gt;</title>" in html
    for shown in (f"attempts {escaped}", f"tokens {escaped}", f"step {escaped}", f"finish {escaped}",
                  f"model {escaped}", f"commit {escaped}", "input data", "metadata", "[1 image]"):
        assert shown in html, shown


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make test`; not on this machine")
def test_report_runs_nothing_from_the_data_in_a_real_browser(hostile_report):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            dialogs, requests = [], []
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(hostile_report.as_uri(), wait_until="load")
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            page.wait_for_timeout(300)  # time for any image error or onload handler to have fired
            assert page.evaluate("typeof window.__pwned") == "undefined"
            assert dialogs == []
            assert requests == [hostile_report.as_uri()]  # no image, nothing else fetched
            assert page.locator("script").count() == 0 and page.locator("img").count() == 0
            assert page.locator("svg").count() == 3
            assert HOSTILE in page.inner_text("#variants")
            assert page.locator("#history-plot title").last.text_content().endswith(f"records), {HOSTILE}")
            assert page.evaluate("[...document.querySelectorAll('*')].filter("
                                 "e => [...e.attributes].some(a => a.name.startsWith('on'))).length") == 0
            # the data closed no <details>: each sample is whole, its steps inside it
            assert page.locator("#samples > *").count() == page.locator("#samples > details.sample").count() == 3
            assert page.locator("#sample-0 .step").count() == 3
            assert page.locator("#sample-0 > summary").inner_text().startswith(HOSTILE)
            text = page.inner_text("body")
            for payload in (SCRIPT, IMG, CLOSE, ATTR):
                assert payload in text
            assert text.count(HOSTILE) >= 40
            meta = page.locator("#sample-0 .step .meta").first.inner_text()
            for shown in (f"step {HOSTILE}", f"model {HOSTILE}", f"attempts {HOSTILE}",
                          f"tokens {HOSTILE}/{HOSTILE} ({HOSTILE} reasoning)", f"finish {HOSTILE}"):
                assert shown in meta
            assert f"error {HOSTILE}: {HOSTILE}" in page.inner_text("#sample-0 .step >> nth=1")
            assert HOSTILE in page.inner_text("#errors") and f"commit {HOSTILE}" in text
            assert HOSTILE in page.inner_text("#checklist")  # the role-order problems name the sample
        finally:
            browser.close()
