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

    def spy(self, requests, settings):
        sizes.append(len(requests))
        return original(self, requests, settings)

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
