"""Faithful answers: what the model said, all of it, or a typed error; never a silent empty turn.

Answers are built with the official SDKs' response models (`openai.types.chat.ChatCompletion`,
`anthropic.types.Message`) and served from loopback; request bodies are checked against the
SDKs' parameter types (tests/sdk_types.py).
"""

import json

import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from pydantic import BaseModel

from shaping import run_pipeline
from shaping.errors import ConfigError, PipelineError, RunFailedError
from shaping.pipeline import Pipeline, TrainingSample, model_request
from shaping.requests import ModelResponse, Usage
from tests.conftest import read_errors, read_jsonl, write_project
from tests.sdk_types import anthropic_params_type, check_body, openai_params_type
from shaping.testing import Fault, LoopbackServer
from tests.test_http_providers import KEY, model_toml, send

TOOLS = [{"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}]
TOOL_EXCHANGE = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": [{"type": "text", "text": "What is 2+3? See:"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
    {"role": "assistant", "content": None, "reasoning_content": "I should add.",
     "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "add", "content": "5"},
]


def openai_completion(message, finish_reason="stop", usage=None, **extra) -> dict:
    return ChatCompletion.model_validate({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "test-model",
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": {"role": "assistant", **message}}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}, **extra,
    }).model_dump(mode="json", exclude_unset=True)


def anthropic_message(content, stop_reason="end_turn", usage=None) -> dict:
    return Message.model_validate({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "test-model", "content": content,
        "stop_reason": stop_reason, "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }).model_dump(mode="json", exclude_unset=True)


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)


def answer(tmp_path, api, body, model="test-model", **request):
    """Serve `body` (a dict, or a function of the received request) and send one request."""
    with LoopbackServer(api, api_key=KEY) as server:
        server.respond = body if callable(body) else (lambda received: body)
        project = write_project(tmp_path, model_toml("m", server).replace('"test-model"', f'"{model}"'))
        (response,) = send(project, model_request(request.pop("messages", "Hi"), model="m", **request))
        return response, server.received


# -- OpenAI answers ------------------------------------------------------------------------------

def test_openai_refusal_is_a_refusal_not_an_empty_answer(tmp_path, key):
    response, _ = answer(tmp_path, "openai", openai_completion({"content": None, "refusal": "I can't help."}))
    assert response.refusal == "I can't help." and response.text == ""
    with pytest.raises(PipelineError) as raised:
        response.get_text()
    assert raised.value.error_type == "refusal" and "I can't help." in raised.value.message
    allowed, _ = answer(tmp_path, "openai", openai_completion({"content": None, "refusal": "I can't help."}),
                        allow={"refusal"})
    assert allowed.get_text() == "I can't help."


def test_openai_tool_call_only_answer_keeps_the_calls(tmp_path, key):
    calls = [{"id": "call_9", "type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]
    response, received = answer(tmp_path, "openai", openai_completion({"content": None, "tool_calls": calls},
                                                                      finish_reason="tool_calls"),
                                tools=TOOLS, tool_choice="auto")
    assert response.finish_reason == "tool_calls" and response.get_text() == ""
    assert response.as_message() == {"role": "assistant", "content": "", "tool_calls": calls}
    assert received[0].body["tools"] == TOOLS and received[0].body["tool_choice"] == "auto"


@pytest.mark.parametrize("finish, outcome", [("content_filter", "content_filter"), ("length", "truncated")])
def test_openai_filtered_and_cut_off_answers_raise_typed_errors(tmp_path, key, finish, outcome):
    response, _ = answer(tmp_path, "openai", openai_completion({"content": "partial"}, finish_reason=finish))
    with pytest.raises(PipelineError) as raised:
        response.as_message()
    assert raised.value.error_type == outcome


def test_a_reasoning_model_that_spent_every_token_is_truncated_not_empty(tmp_path, key):
    usage = {"prompt_tokens": 20, "completion_tokens": 100, "total_tokens": 120,
             "completion_tokens_details": {"reasoning_tokens": 100}}
    response, _ = answer(tmp_path, "openai", openai_completion({"content": None}, "length", usage), model="o4-mini")
    assert response.usage.reasoning_tokens == 100
    with pytest.raises(PipelineError, match="all reasoning") as raised:
        response.get_text()
    assert raised.value.error_type == "truncated"
    assert ModelResponse(text="", finish_reason="stop").outcome == "empty"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_openai_compatible_reasoning_is_kept(tmp_path, key, field):
    body = openai_completion({"content": "4", field: "2+2 is 4."})  # vLLM / DeepSeek extras
    response, _ = answer(tmp_path, "openai", body)
    assert response.reasoning == "2+2 is 4."
    assert response.as_message() == {"role": "assistant", "content": "4", "reasoning_content": "2+2 is 4."}
    assert response.as_message(reasoning=False) == {"role": "assistant", "content": "4"}


def test_openai_list_content_is_read_not_retried(tmp_path, key):
    body = openai_completion({"content": None})
    body["choices"][0]["message"]["content"] = [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there"}]
    response, received = answer(tmp_path, "openai", body)
    assert response.get_text() == "Hello there" and len(received) == 1


def test_openai_cached_and_reasoning_tokens_are_counted_and_priced(tmp_path, key):
    usage = {"prompt_tokens": 2520, "completion_tokens": 300, "total_tokens": 2820,
             "prompt_tokens_details": {"cached_tokens": 2500}, "completion_tokens_details": {"reasoning_tokens": 200}}
    with LoopbackServer("openai", api_key=KEY) as server:
        server.respond = lambda r: openai_completion({"content": "ok"}, usage=usage)
        project = write_project(tmp_path, model_toml("m", server, price_per_million_input=2.0,
                                                     price_per_million_cached_input=0.5,
                                                     price_per_million_output=8.0))
        (response,) = send(project, model_request("Hi", model="m"))
    assert response.usage == Usage(prompt_tokens=2520, completion_tokens=300, cached_tokens=2500, reasoning_tokens=200)
    assert response.cost_usd == pytest.approx((20 * 2.0 + 2500 * 0.5 + 300 * 8.0) / 1e6)


# -- Anthropic answers -----------------------------------------------------------------------------

def test_anthropic_refusal_stop_reason(tmp_path, key):
    response, _ = answer(tmp_path, "anthropic", anthropic_message([], stop_reason="refusal"))
    assert response.finish_reason == "refusal"
    with pytest.raises(PipelineError) as raised:
        response.get_text()
    assert raised.value.error_type == "refusal"


def test_anthropic_thinking_tool_use_and_cache_tokens(tmp_path, key):
    content = [{"type": "thinking", "thinking": "Add them.", "signature": "sig"},
               {"type": "text", "text": "Let me add."},
               {"type": "tool_use", "id": "toolu_1", "name": "add", "input": {"a": 2, "b": 3}}]
    usage = {"input_tokens": 20, "output_tokens": 50, "cache_read_input_tokens": 2000,
             "cache_creation_input_tokens": 500}
    response, _ = answer(tmp_path, "anthropic", anthropic_message(content, "tool_use", usage), tools=TOOLS)
    assert response.reasoning == "Add them." and response.text == "Let me add."
    assert response.finish_reason == "tool_calls"
    assert [c.model_dump() for c in response.tool_calls] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}]
    assert response.usage == Usage(prompt_tokens=2520, completion_tokens=50, cached_tokens=2000, cache_write_tokens=500)


def test_anthropic_max_tokens_is_truncated(tmp_path, key):
    response, _ = answer(tmp_path, "anthropic", anthropic_message([{"type": "text", "text": "Once upon"}], "max_tokens"))
    assert response.finish_reason == "length" and response.outcome == "truncated"


# -- request bodies, checked by the SDKs' parameter types -----------------------------------------------

def test_openai_body_carries_tools_parts_and_tool_turns_as_the_sdk_defines_them(tmp_path, key):
    _, received = answer(tmp_path, "openai", openai_completion({"content": "5"}), messages=TOOL_EXCHANGE,
                         tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
                         max_tokens=50, temperature=0.2, metadata={"note": "local only"})
    body = received[0].body
    check_body(body, openai_params_type())
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assert body["messages"][1]["content"] == TOOL_EXCHANGE[1]["content"]
    assert body["messages"][2]["tool_calls"] == TOOL_EXCHANGE[2]["tool_calls"]
    assert "reasoning_content" not in body["messages"][2]  # OpenAI and DeepSeek refuse it as input
    assert "metadata" not in body and "local only" not in json.dumps(body)


def test_anthropic_body_maps_tools_images_tool_results_and_thinking(tmp_path, key):
    _, received = answer(tmp_path, "anthropic", anthropic_message([{"type": "text", "text": "5"}]),
                         messages=TOOL_EXCHANGE, tools=TOOLS, tool_choice="required", max_tokens=300,
                         temperature=0.2)
    body = received[0].body
    check_body(body, anthropic_params_type())
    assert body["system"] == "Use tools."
    assert body["tools"] == [{"name": "add", "description": "Add two integers.",
                              "input_schema": TOOLS[0]["function"]["parameters"]}]
    assert body["tool_choice"] == {"type": "any"}
    user, assistant, tool = body["messages"]
    assert user["content"][1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                              "data": "iVBORw0KGgo="}}
    assert assistant["content"] == [{"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 2, "b": 3}}]
    assert tool == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1",
                                                 "content": [{"type": "text", "text": "5"}]}]}
    assert body["max_tokens"] == 300 and "temperature" not in body  # API 2026-10-21: no sampling params


def test_anthropic_2023_06_01_still_gets_sampling_params(tmp_path, key):
    with LoopbackServer("anthropic", api_key=KEY) as server:
        server.respond = lambda r: anthropic_message([{"type": "text", "text": "ok"}])
        toml = model_toml("m", server) + '[models.m.options]\nanthropic_version = "2023-06-01"\n'
        send(write_project(tmp_path, toml), model_request("Hi", model="m", temperature=0.3, top_k=4))
        received = server.received[0]
    assert received.body["temperature"] == 0.3 and received.body["top_k"] == 4
    assert received.headers["anthropic-version"] == "2023-06-01"


def test_anthropic_extended_thinking_params(tmp_path, key):
    _, received = answer(tmp_path, "anthropic", anthropic_message([{"type": "text", "text": "5"}]),
                         messages=TOOL_EXCHANGE[:2], max_tokens=300, temperature=0.2, top_k=5, reasoning_effort="low")
    body = received[0].body
    check_body(body, anthropic_params_type())
    # the budget is added to the answer's max_tokens; temperature is 1 (not sent), top_k not sent
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert body["max_tokens"] == 300 + 2048 and not {"temperature", "top_k", "reasoning_effort"} & set(body)


@pytest.mark.parametrize("model, reasoning", [("o4-mini", True), ("o3", True), ("gpt-5", True), ("gpt-5-mini", True),
                                              ("gpt-5-chat-latest", False), ("gpt-4o-mini", False)])
def test_reasoning_models_get_the_params_they_take(tmp_path, key, model, reasoning):
    _, received = answer(tmp_path, "openai", openai_completion({"content": "ok"}), model=model,
                         max_tokens=64, temperature=0.3, stop=["END"], reasoning_effort="low")
    body = received[0].body
    check_body(body, openai_params_type())
    if reasoning:
        assert body["max_completion_tokens"] == 64 and body["reasoning_effort"] == "low"
        assert not {"max_tokens", "temperature", "stop"} & set(body)
    else:
        assert body["max_tokens"] == 64 and body["temperature"] == 0.3 and body["stop"] == ["END"]


class Pair(BaseModel):
    question: str


class Wrapped(BaseModel):
    pair: Pair  # a nested model: its schema has a $ref


class OnePipeline(Pipeline):
    name = "one"
    judge = Pipeline.model_dep("m")
    request: dict = {}

    def run(self):
        return self.run_task(self.ask, records=[{"id": "a"}])

    def ask(self, record):
        response = yield model_request("Say something.", model=self.judge, **self.request)
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": "Say something."},
                                                         response.as_message()])


def run_one(project, **request):
    pipeline = type("P", (OnePipeline,), {"name": "one", "request": request})(project)
    try:
        result = run_pipeline(pipeline)
    except RunFailedError as exc:  # its one record failed: so did the run
        return [], read_errors(exc.result.paths.failed_errors), exc.result
    return read_jsonl(result.paths.samples), read_errors(result.paths.errors), result


def test_the_step_records_the_translated_params_and_the_local_metadata(tmp_path, key):
    with LoopbackServer("openai", api_key=KEY) as server:
        server.respond = lambda r: openai_completion({"content": "ok", "reasoning_content": "hm"})
        project = write_project(tmp_path, model_toml("m", server).replace('"test-model"', '"o3-mini"'))
        samples, errors, _ = run_one(project, max_tokens=64, temperature=0.5, metadata={"source": "unit"})
    step = samples[0]["steps"][0]
    assert step["params"] == {"max_completion_tokens": 64} and step["metadata"] == {"source": "unit"}
    assert step["reasoning"] == "hm"
    assert samples[0]["messages"][1] == {"role": "assistant", "content": "ok", "reasoning_content": "hm"}


def test_a_refusing_server_writes_error_records_not_empty_samples(tmp_path, key):
    with LoopbackServer("openai", api_key=KEY) as server:
        server.respond = lambda r: openai_completion({"content": None, "refusal": "No."})
        samples, errors, result = run_one(write_project(tmp_path, model_toml("m", server)))
    assert samples == [] and [e["error"] for e in errors] == ["refusal"]
    assert errors[0]["steps"][0]["refusal"] == "No."


def test_streaming_is_refused_before_sending(tmp_path, key):
    with pytest.raises(ValueError, match="streaming is not supported"):
        model_request("Hi", model="m", stream=True)
    with LoopbackServer("openai", api_key=KEY) as server:
        project = write_project(tmp_path, model_toml("m", server) + "[models.m.params]\nstream = true\n")
        with pytest.raises(ConfigError, match=r"models\.m\.params: streaming is not supported"):
            run_one(project)
        assert server.received == []


@pytest.mark.parametrize("fault, kind", [(Fault(stream=True), "bad_response"), (Fault(status=400), "bad_request")])
def test_failures_that_would_repeat_are_sent_once(tmp_path, key, fault, kind):
    with LoopbackServer("openai", api_key=KEY) as server:
        server.fail_when(lambda r: True, fault)
        (response,) = send(write_project(tmp_path, model_toml("m", server)), model_request("Hi", model="m"))
        assert response.error.type == kind and len(server.received) == 1


def test_nested_schemas_with_refs_are_checked(tmp_path, key):
    schema = Wrapped.model_json_schema()
    assert "$ref" in json.dumps(schema)
    with LoopbackServer("openai", api_key=KEY) as server:
        server.reply = lambda r: '{"pair": {"question": 3}}' if len(r.messages) == 1 else '{"pair": {"question": "Why?"}}'
        samples, errors, _ = run_one(write_project(tmp_path, model_toml("m", server)), response_model=schema)
        first = server.received[0].body
    assert errors == [] and json.loads(samples[0]["messages"][1]["content"]) == {"pair": {"question": "Why?"}}
    steps = samples[0]["steps"]
    assert len(steps) == 2 and "pair.question: 3 is not of type 'string'" in steps[1]["messages"][-1]["content"]
    # a loopback OpenAI-compatible endpoint may ignore response_format: the schema is in the prompt too
    assert "Answer with JSON only" in first["messages"][-1]["content"]
    assert first["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("ref", ["#/$defs/Missing", "#nowhere", "https://example.org/schema.json"])
def test_a_ref_that_points_nowhere_is_refused_before_sending(ref):
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"$ref": ref}, "b": {"$ref": "#/$defs/B"}},
              "$defs": {"B": {"type": "string", "enum": [{"$ref": "data, not a reference"}]}}}
    with pytest.raises(ValueError, match=r"response_model: \$ref '.*' points to nothing in the schema"):
        model_request("Hi", model="m", response_model=schema)
    schema["properties"]["a"] = {"$ref": "#/$defs/B"}  # the same schema, every ref inside it: taken
    model_request("Hi", model="m", response_model=schema)


VALID_REFS = {
    "a bundle: the root's $id and an embedded schema's": {
        "$id": "https://example.com/schemas/customer", "type": "object",
        "properties": {"address": {"$ref": "/schemas/address"}},
        "$defs": {"address": {"$id": "/schemas/address", "type": "object"}}},
    "a file name against the root's $id": {
        "$id": "https://example.org/a/s.json", "properties": {"a": {"$ref": "s.json#/$defs/A"}},
        "$defs": {"A": {"type": "string"}}},
    "draft 4, a nested id": {
        "$schema": "http://json-schema.org/draft-04/schema#", "properties": {"b": {"$ref": "b.json"}},
        "definitions": {"B": {"id": "b.json", "definitions": {"C": {"type": "string"}},
                              "properties": {"c": {"$ref": "#/definitions/C"}}}}},
    "a $ref key in data and in an unknown keyword": {
        "type": "object", "x-meta": {"$ref": "not a reference"}, "examples": [{"$ref": "nor this"}]},
    "the metaschema": {"properties": {"schema": {"$ref": "https://json-schema.org/draft/2020-12/schema"}}},
    "an anchor, the root, a property named enum": {
        "properties": {"c": {"$ref": "#bee"}, "self": {"$ref": "#"}, "enum": {"$ref": "#/$defs/C"}},
        "$defs": {"C": {"$anchor": "bee", "type": "integer"}}},
}


@pytest.mark.parametrize("schema", VALID_REFS.values(), ids=VALID_REFS.keys())
def test_refs_that_json_schema_resolves_are_taken(schema):
    model_request("Hi", model="m", response_model=schema)


def test_a_dangling_ref_under_a_property_named_enum_is_found():
    with pytest.raises(ValueError, match="points to nothing"):
        model_request("Hi", model="m", response_model={"properties": {"enum": {"$ref": "#/$defs/Missing"}}})


def test_mock_shows_reasoning_and_tool_calls_deterministically(tmp_path):
    project = write_project(tmp_path)
    first = send(project, model_request("What is 2+3?", model="judge", tools=TOOLS, reasoning_effort="low"))[0]
    again = send(project, model_request("What is 2+3?", model="judge", tools=TOOLS, reasoning_effort="low"))[0]
    assert first.model_dump(exclude={"latency_s"}) == again.model_dump(exclude={"latency_s"})
    assert first.reasoning and first.finish_reason == "tool_calls"
    call = first.tool_calls[0]
    assert call.function.name == "add" and set(json.loads(call.function.arguments)) == {"a", "b"}
    follow = [{"role": "user", "content": "What is 2+3?"}, first.as_message(),
              {"role": "tool", "tool_call_id": call.id, "content": "5"}]
    final = send(project, model_request(follow, model="judge", tools=TOOLS))[0]
    assert final.finish_reason == "stop" and "add -> 5" in final.get_text()


@pytest.mark.parametrize("finish", ["error", "abort"])
def test_an_unknown_finish_reason_is_not_a_finished_answer(tmp_path, key, finish):
    response, received = answer(tmp_path, "openai", openai_completion({"content": "half an ans"}, finish_reason="stop")
                                | {"choices": [{"index": 0, "finish_reason": finish,
                                                "message": {"role": "assistant", "content": "half an ans"}}]})
    assert response.error.type == "incomplete_response" and finish in response.error.message


def test_anthropic_refuses_tool_follow_ups_with_thinking(tmp_path, key):
    response, received = answer(tmp_path, "anthropic", anthropic_message([{"type": "text", "text": "5"}]),
                                messages=TOOL_EXCHANGE, tools=TOOLS, reasoning_effort="low")
    assert response.error.type == "unsupported_request" and "signed thinking block" in response.error.message
    assert received == []


def test_the_schema_hint_keeps_image_parts(tmp_path, key):
    with LoopbackServer("openai", api_key=KEY) as server:
        server.reply = lambda r: '{"pair": {"question": "Why?"}}'
        project = write_project(tmp_path, model_toml("m", server))
        pipeline = type("P", (OnePipeline,), {"name": "one", "request": {"response_model": Wrapped}})(project)
        pipeline.ask = lambda record: _ask_with_image(pipeline, record)
        run_pipeline(pipeline)
        content = server.received[0].body["messages"][-1]["content"]
    assert content[1] == TOOL_EXCHANGE[1]["content"][1]  # the image is still there
    assert content[-1]["type"] == "text" and content[-1]["text"].startswith("Answer with JSON only")


def _ask_with_image(pipeline, record):
    response = yield model_request([TOOL_EXCHANGE[1]], model=pipeline.judge, response_model=Wrapped)
    return TrainingSample(id=record["id"], messages=[TOOL_EXCHANGE[1], response.as_message()])


@pytest.mark.parametrize("message", [
    {"role": "user", "content": "plain ✓"},
    {"role": "system", "content": ""},
    {"role": "assistant", "content": "answer", "reasoning_content": "thoughts"},
    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}]},
    {"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},
    {"role": "user", "content": "named", "name": "alice"},
    {"role": "user", "content": [{"type": "text", "text": "look"},
                                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]},
])
def test_a_turn_is_written_and_sent_as_its_model_dump(message):
    """LLMMessage.wire() (outputs, request bodies, cache rows) is model_dump(), byte for byte as JSON."""
    from shaping.requests import LLMMessage

    turn = LLMMessage.model_validate(message)
    assert turn.wire() == turn.model_dump()
    assert orjson.dumps(turn.wire()) == orjson.dumps(turn.model_dump())
