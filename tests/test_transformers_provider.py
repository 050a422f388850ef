"""The transformers provider with a tiny random model built by the test and loaded from disk."""

import anyio
import pytest

from shaping.config import Project
from shaping.dispatch import Dispatcher
from shaping.errors import ConfigError
from shaping.providers.registry import create_provider
from shaping.requests import LLMRequest, model_request
from tests.conftest import write_project
from tests.tiny_model import build_tiny_model

KSHOT = [
    {"role": "system", "content": "write one line morals"},
    {"role": "user", "content": "the fox and the grapes"},
    {"role": "assistant", "content": "we scorn what we cannot have"},
    {"role": "user", "content": "the ant and the grasshopper"},
]
PROMPTS = ["the fox", "a tortoise and a hare make a race", "hello", "the ant is slow and steady . you be brief"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_model_plain(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama-plain"), chat_template=False)


def local_project(root, path, **extra) -> Project:
    lines = ['[models.local]', 'provider = "transformers"', f'model = "{path}"', 'batch_size = 8']
    lines += [f"{k} = {v}" for k, v in extra.items()]
    lines += ['[models.local.options]', 'device = "cpu"', 'max_tokens = 12']
    return write_project(root, "\n".join(lines) + "\n")


def answer_all(project, requests, sequential=False):
    """Through a real dispatcher: concurrently (so they share batches) or one at a time."""
    out = [None] * len(requests)

    async def main():
        dispatcher = Dispatcher(project, "test", workers=64, annotate=True)
        async with dispatcher.session():
            async def one(i):
                out[i] = (await dispatcher.send(requests[i], i, str(i)))[1]
            if sequential:
                for i in range(len(requests)):
                    await one(i)
            else:
                async with anyio.create_task_group() as tg:
                    for i in range(len(requests)):
                        tg.start_soon(one, i)
        return dispatcher

    anyio.run(main)
    return out


def test_batched_equals_one_at_a_time_with_greedy_decoding(tmp_path, tiny_model):
    project = local_project(tmp_path, tiny_model)
    requests = [model_request(p, model="local") for p in PROMPTS] + [model_request(KSHOT, model="local")]
    batched = answer_all(project, requests)
    single = answer_all(project, requests, sequential=True)
    assert all(r.is_success for r in batched + single)
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.usage.completion_tokens for r in batched] == [r.usage.completion_tokens for r in single]
    for response in batched:
        assert 0 < response.usage.completion_tokens <= 12
        assert response.usage.prompt_tokens > 0
        assert response.finish_reason in ("stop", "length")


def test_requests_from_many_records_share_one_generate(tmp_path, tiny_model, monkeypatch):
    from shaping.providers.transformers import TransformersProvider

    sizes = []
    original = TransformersProvider._generate

    def spy(self, requests, prompts, settings):
        sizes.append(len(requests))
        return original(self, requests, prompts, settings)

    monkeypatch.setattr(TransformersProvider, "_generate", spy)
    project = local_project(tmp_path, tiny_model)
    answer_all(project, [model_request(f"hello {i % 3}", model="local") for i in range(20)])
    assert sum(sizes) == 20 and max(sizes) == 8  # batch_size = 8


def test_only_new_tokens_come_back_and_max_tokens_holds(tmp_path, tiny_model):
    project = local_project(tmp_path, tiny_model)
    (response,) = answer_all(project, [model_request("hello world", model="local", max_tokens=3)])
    assert response.usage.completion_tokens <= 3
    assert "hello world" not in response.text


def test_chat_template_renders_every_turn_in_order(tmp_path, tiny_model):
    project = local_project(tmp_path, tiny_model)
    provider = create_provider("local", project.model("local"))
    anyio.run(provider.open)
    rendered = provider.render(LLMRequest(messages=KSHOT))
    assert rendered == (
        "<|system|> write one line morals </s> <|user|> the fox and the grapes </s> "
        "<|assistant|> we scorn what we cannot have </s> <|user|> the ant and the grasshopper </s> <|assistant|>"
    )


def test_no_chat_template_falls_back_to_plain_turns(tmp_path, tiny_model_plain):
    project = local_project(tmp_path, tiny_model_plain)
    provider = create_provider("local", project.model("local"))
    anyio.run(provider.open)
    assert provider.render(LLMRequest(messages=KSHOT)) == (
        "System: write one line morals\n\nUser: the fox and the grapes\n\n"
        "Assistant: we scorn what we cannot have\n\nUser: the ant and the grasshopper\n\nAssistant:"
    )
    (response,) = answer_all(project, [model_request(KSHOT, model="local")])
    assert response.is_success


def test_a_missing_model_folder_is_a_clear_error(tmp_path):
    project = local_project(tmp_path, tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="model 'local': cannot load '.*no-such-model' with transformers"):
        anyio.run(create_provider("local", project.model("local")).open)


# --- faithful mapping: a tokenizer that round-trips text, templates with tools and thinking ---

from shaping.providers.base import UnsupportedRequest  # noqa: E402
from tests.tiny_model import SIMPLE_TEMPLATE, build_chat_model  # noqa: E402

#: what the scripted model says (greedy, through the real generate): after "the fox" it answers
#: "hello world" and ends with <|end|> (an eos of its generation_config, not the tokenizer's);
#: it never produces an eos token otherwise
SCRIPT = {
    ("fox", "</s>", "<|assistant|>", "hello"): 100.0,
    ("</s>", "<|assistant|>", "hello", " "): 100.0,
    ("<|assistant|>", "hello", " ", "world"): 100.0,
    ("hello", " ", "world", "<|end|>"): 20000.0,
    ("<|end|>",): -10000.0,
    ("</s>",): -10000.0,
}
CITY = {"type": "object", "properties": {"city": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "the weather", "parameters": CITY}}]
CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'


@pytest.fixture(scope="session")
def think_model(tmp_path_factory):
    """Qwen3-like: tools, tool turns, reasoning; the generation prompt opens <think>."""
    return build_chat_model(tmp_path_factory.mktemp("think"))


@pytest.fixture(scope="session")
def think_model_special(tmp_path_factory):
    """The same with <think>, </think>, <tool_call>, </tool_call> as special tokens."""
    return build_chat_model(tmp_path_factory.mktemp("think-special"), markers_special=True)


@pytest.fixture(scope="session")
def scripted_model(tmp_path_factory):
    """A template without tools or variables; generation_config eos = [</s>, <|end|>]; SCRIPT."""
    return build_chat_model(tmp_path_factory.mktemp("scripted"), template=SIMPLE_TEMPLATE, script=SCRIPT)


@pytest.fixture(scope="session")
def no_template_model(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("no-template"), template=None)


@pytest.fixture(scope="session")
def no_pad_model(tmp_path_factory):
    return build_chat_model(tmp_path_factory.mktemp("no-pad"), template=SIMPLE_TEMPLATE, pad=False)


def chat_project(root, path, options="", params=""):
    toml = (f'[models.local]\nprovider = "transformers"\nmodel = "{path}"\nbatch_size = 8\n'
            f'[models.local.options]\ndevice = "cpu"\nmax_tokens = 6\n{options}\n')
    if params:
        toml += f"[models.local.params]\n{params}\n"
    return write_project(root, toml)


def open_provider(root, path, options=""):
    provider = create_provider("local", chat_project(root, path, options).model("local"))
    anyio.run(provider.open)
    return provider


def generate(provider, *requests):
    """Straight to the provider, as the dispatcher would after prepare_params."""
    requests = [r if isinstance(r, LLMRequest) else LLMRequest(messages=[{"role": "user", "content": r}])
                for r in requests]
    requests = [r.model_copy(update={"params": provider.prepare_params(r.params)}) for r in requests]
    return anyio.run(provider.generate_batch, requests)


def ask(prompt, **params):
    return LLMRequest(messages=[{"role": "user", "content": prompt}], params=params)


def script(provider, *outputs):
    """`model.generate` returns these texts after the prompts, padded as transformers pads a
    sequence that stopped early; the kwargs it was called with are recorded."""
    torch, tokenizer, calls = provider._torch, provider.tokenizer, []

    def fake_generate(input_ids, attention_mask, **kwargs):
        calls.append(kwargs)
        rows = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in outputs]
        width = max(map(len, rows))
        rows = [r + [kwargs["pad_token_id"]] * (width - len(r)) for r in rows]
        return torch.cat([input_ids, torch.tensor(rows, dtype=input_ids.dtype)], dim=1)

    provider.model.generate = fake_generate
    return calls


def spy_generate(provider):
    """Record the kwargs of the real `generate`."""
    calls, real = [], provider.model.generate

    def spy(**kwargs):
        calls.append({k: v for k, v in kwargs.items() if k not in ("input_ids", "attention_mask")})
        output = real(**kwargs)
        calls[-1]["new_tokens"] = output.shape[1] - kwargs["input_ids"].shape[1]
        return output

    provider.model.generate = spy
    return calls


def n_tokens(provider, text):
    return len(provider.tokenizer(text, add_special_tokens=False)["input_ids"])


# 1. what the template gets

CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "weather in Paris ?"},
    {"role": "assistant", "reasoning_content": "I think so", "content": None,
     "tool_calls": [{"id": "call_0", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "sunny"},
    {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "text", "text": "the city ?"}]},
]


def test_every_field_of_every_message_and_the_tools_reach_the_template(tmp_path, think_model):
    provider = open_provider(tmp_path, think_model)
    rendered = provider.render(LLMRequest(messages=CONVERSATION, params={"tools": TOOLS}))
    assert rendered == (
        "<|system|>tools: get_weather</s><|system|>be brief</s><|user|>weather in Paris ?</s>"
        f"<|assistant|><think>I think so</think>{CALL}</s>"  # arguments reach it as an object
        "<|tool|>call_0 get_weather:sunny</s><|user|>and\nthe city ?</s><|assistant|><think>"
    )
    # tool_choice "none": the tools are not offered
    assert "tools:" not in provider.render(LLMRequest(messages=CONVERSATION, params={"tools": TOOLS,
                                                                                     "tool_choice": "none"}))


def test_chat_template_kwargs_from_options_and_request_the_request_winning(tmp_path, think_model):
    default = open_provider(tmp_path, think_model)
    assert default.render(ask("hello")).endswith("<|assistant|><think>")
    assert default.render(ask("hello", chat_template_kwargs={"enable_thinking": False})).endswith("<think></think>")
    off = open_provider(tmp_path, think_model, "chat_template_kwargs = {enable_thinking = false}")
    assert off.render(ask("hello")).endswith("<think></think>")
    assert off.render(ask("hello", chat_template_kwargs={"enable_thinking": True})).endswith("<|assistant|><think>")
    # the option reaches generation too: no think block was opened, so nothing is reasoning
    script(off, "yes</s>")
    (response,) = generate(off, "hello")
    assert (response.text, response.reasoning, response.usage.reasoning_tokens) == ("yes", None, 0)


def test_template_kwargs_and_reasoning_effort_the_template_never_reads_are_refused(tmp_path, think_model,
                                                                                    scripted_model):
    provider = open_provider(tmp_path, think_model)
    with pytest.raises(UnsupportedRequest, match=r"chat_template_kwargs thinking_budget: not read by this "
                                                 r"model's chat template \(it reads: enable_thinking\)"):
        provider.prepare_params({"chat_template_kwargs": {"thinking_budget": 5}})
    with pytest.raises(UnsupportedRequest, match="reasoning_effort .*enable_thinking.*: not read by"):
        provider.prepare_params({"reasoning_effort": "low"})
    with pytest.raises(UnsupportedRequest, match="add_generation_prompt is set by the provider"):
        provider.prepare_params({"chat_template_kwargs": {"add_generation_prompt": False}})
    # a template that reads reasoning_effort (as gpt-oss's does) gets it
    provider.tokenizer.chat_template = SIMPLE_TEMPLATE + "{{ reasoning_effort }}"
    assert provider.prepare_params({"reasoning_effort": "low"}) == {"reasoning_effort": "low"}
    assert provider.render(ask("hello", reasoning_effort="low")).endswith("<|assistant|>low")
    # an option the template never reads fails the model at once
    with pytest.raises(ConfigError, match=r"models.local.options: .*chat_template_kwargs enable_thinking"):
        open_provider(tmp_path, scripted_model, "chat_template_kwargs = {enable_thinking = true}")


def test_tools_for_a_template_without_tools_and_image_parts_are_refused(tmp_path, think_model, scripted_model):
    provider = open_provider(tmp_path, scripted_model)
    with pytest.raises(UnsupportedRequest, match="^transformers provider: this model's chat template does not "
                                                 "render tools; tools cannot be offered$"):
        provider.prepare_params({"tools": TOOLS})
    provider = open_provider(tmp_path, think_model)
    image = LLMRequest(messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is it ?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    script(provider, "a fox</think>yes</s>")
    refused, answered = anyio.run(provider.generate_batch, [image, ask("hello")])
    assert refused.error.type == "unsupported_request"
    assert refused.error.message == ("model 'local': transformers provider: messages[0] has an image part; image "
                                     "parts are not supported by this text-only provider")
    assert answered.text == "yes"  # the rest of the batch is answered
    provider.tokenizer.chat_template = "{{ raise_exception('roles must alternate') }}"
    (refused,) = anyio.run(provider.generate_batch, [ask("hello")])
    assert refused.error.type == "unsupported_request"
    assert refused.error.message.endswith("the chat template refused this conversation: roles must alternate")


def test_the_plain_fallback_renders_tool_turns_and_refuses_tools(tmp_path, no_template_model):
    provider = open_provider(tmp_path, no_template_model)
    assert provider.render(LLMRequest(messages=CONVERSATION)) == (
        "System: be brief\n\nUser: weather in Paris ?\n\n"
        f"Assistant: <think>\nI think so\n</think>\n{CALL}\n\n"
        "Tool (call_0 get_weather): sunny\n\nUser: and\nthe city ?\n\nAssistant:"
    )
    for params in ({"tools": TOOLS}, {"chat_template_kwargs": {"enable_thinking": False}}):
        with pytest.raises(UnsupportedRequest, match="this model has no chat template, so .* cannot be sent"):
            provider.prepare_params(params)


# 2. reasoning

@pytest.mark.parametrize("special", [False, True])
def test_a_think_block_opened_by_the_template_is_the_reasoning(tmp_path, think_model, think_model_special, special):
    provider = open_provider(tmp_path, think_model_special if special else think_model)
    script(provider, "I think so</think>\n\nyes</s>", "maybe maybe maybe maybe maybe")
    done, cut = generate(provider, "hello", "the fox")
    assert (done.reasoning, done.text, done.finish_reason) == ("I think so", "yes", "stop")
    assert done.usage.reasoning_tokens == n_tokens(provider, "I think so</think>") == 6
    assert done.usage.completion_tokens == n_tokens(provider, "I think so</think>\n\nyes</s>") == 9
    # cut off while thinking: all of it is reasoning, no answer
    assert (cut.reasoning, cut.text, cut.finish_reason) == ("maybe maybe maybe maybe maybe", "", "length")
    assert cut.usage.reasoning_tokens == cut.usage.completion_tokens == 9


@pytest.mark.parametrize("special", [False, True])
def test_a_think_block_the_model_opens_is_the_reasoning(tmp_path, think_model, think_model_special, special):
    provider = open_provider(tmp_path, think_model_special if special else think_model,
                             "chat_template_kwargs = {enable_thinking = false}")
    script(provider, "<think>no\nmaybe</think>\nyes I think so</s>", "hello <think>no</think>")
    thought, plain = generate(provider, "hello", "the fox")
    assert (thought.reasoning, thought.text) == ("no\nmaybe", "yes I think so")
    assert thought.usage.reasoning_tokens == n_tokens(provider, "<think>no\nmaybe</think>") == 5
    assert plain.reasoning is None and plain.text == "hello <think>no</think>"  # not at the start: text


# 3 and 4. stop tokens, stop strings, usage without padding

def test_generation_config_eos_ids_stop_and_usage_counts_no_padding(tmp_path, scripted_model):
    provider = open_provider(tmp_path, scripted_model)
    assert provider.tokenizer.eos_token == "</s>" and provider.model.generation_config.eos_token_id == [3, 8]
    calls = spy_generate(provider)
    requests = [ask("the fox"), ask("a tortoise and a hare make a race . the moral is")]
    early, long = generate(provider, *requests)  # one real generate, left-padded
    assert len(calls) == 1 and calls[0]["eos_token_id"] == [3, 8]
    assert (early.text, early.finish_reason) == ("hello world", "stop")
    assert early.usage.completion_tokens == 4  # hello, " ", world, <|end|>; not the padding after it
    assert long.finish_reason == "length" and long.usage.completion_tokens == 6
    for request, response in zip(requests, (early, long)):
        assert response.usage.prompt_tokens == n_tokens(provider, provider.render(request))
    assert early.usage.prompt_tokens < long.usage.prompt_tokens


def test_stop_strings_end_generation_and_the_text(tmp_path, scripted_model):
    provider = open_provider(tmp_path, scripted_model)
    calls = spy_generate(provider)
    stopped, other = generate(provider, ask("the fox", stop=["world", "zebra"]), ask("hello", stop=["world", "zebra"]))
    assert (stopped.text, stopped.finish_reason, stopped.usage.completion_tokens) == ("hello ", "stop", 3)
    assert other.finish_reason == "length" and other.usage.completion_tokens == 6
    (alone,) = generate(provider, ask("the fox", stop="world"))
    assert (alone.text, alone.usage.completion_tokens) == ("hello ", 3)
    assert calls[-1]["new_tokens"] == 3  # generation stopped there, not at max_tokens


def test_batched_usage_is_exact_when_the_pad_token_is_the_eos(tmp_path, no_pad_model):
    provider = open_provider(tmp_path, no_pad_model)
    assert provider.tokenizer.pad_token_id == provider.tokenizer.eos_token_id
    script(provider, "yes</s>", "no no no</s>", "maybe maybe maybe maybe")
    requests = [ask("hello"), ask("the fox and the grapes"), ask("a tortoise and a hare make a race")]
    responses = generate(provider, *requests)
    assert [r.text for r in responses] == ["yes", "no no no", "maybe maybe maybe maybe"]
    assert [r.finish_reason for r in responses] == ["stop", "stop", "length"]
    assert [r.usage.completion_tokens for r in responses] == [2, 6, 7]
    assert [r.usage.prompt_tokens for r in responses] == [n_tokens(provider, provider.render(r)) for r in requests]


# 5. generation params

def test_sampling_params_reach_generate(tmp_path, scripted_model):
    provider = open_provider(tmp_path, scripted_model)
    calls = spy_generate(provider)
    generate(provider, ask("hello", temperature=0.7, top_p=0.9, top_k=5, min_p=0.05, repetition_penalty=1.3,
                           seed=1, max_completion_tokens=3))
    assert {k: calls[0][k] for k in ("do_sample", "temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                                     "max_new_tokens")} == {
        "do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "min_p": 0.05,
        "repetition_penalty": 1.3, "max_new_tokens": 3}
    generate(provider, ask("hello", repetition_penalty=1.1))
    assert calls[1]["do_sample"] is False and calls[1]["repetition_penalty"] == 1.1


def test_seeded_sampling_repeats(tmp_path, scripted_model):
    provider = open_provider(tmp_path, scripted_model)
    first, second = (generate(provider, ask("a tortoise", temperature=1.5, seed=7))[0].text for _ in range(2))
    assert first == second


@pytest.mark.parametrize("params, message", [
    ({"logprobs": True}, "param 'logprobs' is not supported (supported: max_tokens, max_completion_tokens, "),
    ({"response_format": {"type": "json_object"}}, "param 'response_format' is not supported (use response_model="),
    ({"tool_choice": "required"}, "param 'tool_choice' must be \"auto\" or \"none\""),
    ({"n": 2}, "param 'n' must be 1"),
    ({"top_p": 2}, "param 'top_p' must be a number in (0, 1], got 2"),
])
def test_params_that_cannot_be_sent_are_refused_by_name(tmp_path, scripted_model, params, message):
    provider = open_provider(tmp_path, scripted_model)
    with pytest.raises(UnsupportedRequest) as caught:
        provider.prepare_params(params)
    assert str(caught.value).startswith(f"transformers provider: {message}")


def test_params_are_normalised_as_sent(tmp_path, scripted_model):
    provider = open_provider(tmp_path, scripted_model)
    assert provider.prepare_params({"n": 1, "max_completion_tokens": 9, "max_tokens": 100, "stop": "x"}) == {
        "max_tokens": 9, "stop": "x"}


def test_an_unknown_param_fails_its_record_through_the_dispatcher(tmp_path, scripted_model):
    project = chat_project(tmp_path, scripted_model)
    bad, good = answer_all(project, [model_request("hello", model="local", logprobs=True),
                                     model_request("the fox", model="local")])
    assert bad.error.type == "unsupported_request"
    assert bad.error.message.startswith("model 'local': transformers provider: param 'logprobs' is not supported")
    assert good.is_success and good.text == "hello world"
    # the model's own params from shaping.toml go through the same check
    project = chat_project(tmp_path, scripted_model, params="frequency_penalty = 0.5")
    (response,) = answer_all(project, [model_request("the fox", model="local")])
    assert response.error.type == "unsupported_request"
    assert "param 'frequency_penalty' is not supported" in response.error.message


# 6. tool calls

@pytest.mark.parametrize("special", [False, True])
def test_tool_call_blocks_become_tool_calls_when_tools_were_offered(tmp_path, think_model, think_model_special,
                                                                    special):
    provider = open_provider(tmp_path, think_model_special if special else think_model)
    second = CALL.replace("Paris", "city")
    output = f"I think so</think>\n\n{CALL}\n{second}</s>"
    script(provider, output, output)
    offered, not_offered = generate(provider, ask("weather in Paris ?", tools=TOOLS), ask("weather in Paris ?"))
    assert offered.finish_reason == "tool_calls" and offered.text == "" and offered.reasoning == "I think so"
    assert [c.model_dump() for c in offered.tool_calls] == [
        {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "city"}'}}]
    assert offered.as_message()["tool_calls"][0]["function"]["name"] == "get_weather"
    assert not_offered.tool_calls is None and not_offered.finish_reason == "stop"
    assert not_offered.text == f"{CALL}\n{second}"
    # a block that is not a call's JSON stays text
    script(provider, "ok</think>answer <tool_call>{maybe no}</tool_call></s>")
    (broken,) = generate(provider, ask("weather in Paris ?", tools=TOOLS))
    assert broken.tool_calls is None and broken.text == "answer <tool_call>{maybe no}</tool_call>"


# 7. the template's fingerprint

def test_chat_template_fingerprint_covers_the_template_and_its_kwargs(tmp_path, think_model, scripted_model):
    import hashlib

    def fingerprint(path, options=""):  # without loading the model
        return create_provider("local", chat_project(tmp_path, path, options).model("local")).chat_template_fingerprint

    plain = fingerprint(think_model)
    assert plain == fingerprint(think_model)
    template = open_provider(tmp_path, think_model).tokenizer.chat_template
    assert plain == hashlib.sha256(f"{template}\n{{}}".encode()).hexdigest()
    assert fingerprint(think_model, "chat_template_kwargs = {enable_thinking = false}") != plain
    assert fingerprint(scripted_model) != plain


def test_a_dry_run_counts_prompt_tokens_with_the_model_tokenizer_and_loads_no_weights(tmp_path, tiny_model, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shaping.discovery import discover
    from shaping.dry_run import dry_run_pipeline

    project = local_project(tmp_path, tiny_model)
    (tmp_path / "pipelines" / "story.py").write_text(
        "from shaping.pipeline import Pipeline, TrainingSample, model_request\n\n"
        "class Story(Pipeline):\n"
        "    name = 'story'\n"
        "    m = Pipeline.model_dep('local')\n"
        "    def run(self):\n"
        "        return self.run_task(self.task, records=[{'id': '1', 'q': 'the fox and the grapes'},\n"
        "                                                 {'id': '2', 'q': 'write one line'}])\n"
        "    def task(self, record):\n"
        "        a = yield model_request([{'role': 'system', 'content': 'be brief'},\n"
        "                                 {'role': 'user', 'content': record['q']}], model=self.m, max_tokens=7)\n"
        "        return TrainingSample(id=record['id'], messages=[{'role': 'user', 'content': record['q']}, a.as_message()])\n")
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("weights loaded in a dry run")))
    estimate = dry_run_pipeline(discover(project)["story"].cls(project))
    (local,) = estimate.models
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    expected = sum(len(tokenizer(tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": q}], tokenize=False,
        add_generation_prompt=True), add_special_tokens=False).input_ids) for q in ("the fox and the grapes", "write one line"))
    assert (local.requests, local.prompt_tokens, local.completion_tokens) == (2, expected, 14)  # answers capped at max_tokens
    assert local.prompt_counted_by == "prompt tokens counted by the model's tokenizer" and local.local
