"""shaping.toml models -> providers: inference from model names, options, fingerprints."""

import pytest

from shaping.config import ModelConfig
from shaping.errors import ConfigError
from shaping.manifest import model_state
from shaping.providers.registry import PROVIDERS, create_provider, register, resolve_base_url, resolve_provider_name
from shaping.providers.mock import MockProvider


@pytest.mark.parametrize("model, provider, base_url", [
    ("gpt-4o-mini", "openai", None),
    ("o3-mini", "openai", None),
    ("claude-3-5-haiku-latest", "anthropic", None),
    ("grok-2", "openai", "https://api.x.ai/v1"),
])
def test_provider_inferred_from_model_name(model, provider, base_url):
    config = ModelConfig(model=model)
    assert resolve_provider_name("m", config) == provider
    assert resolve_base_url(config) == base_url


def test_explicit_base_url_wins_over_inference():
    assert resolve_base_url(ModelConfig(model="grok-2", base_url="http://127.0.0.1:9/v1")) == "http://127.0.0.1:9/v1"


def test_uninferable_model_needs_a_provider():
    with pytest.raises(ConfigError, match=r"models.m.provider: not given and not inferable from model 'llama-3'"):
        resolve_provider_name("m", ModelConfig(model="llama-3"))


def test_unknown_provider_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown provider 'nope' \(expected one of: anthropic, mock, openai, transformers"):
        create_provider("m", ModelConfig(provider="nope", model="x"))


def test_bad_options_name_the_field():
    with pytest.raises(ConfigError, match=r"shaping.toml: models.m.options: latency_s: Input should be greater"):
        create_provider("m", ModelConfig(provider="mock", model="x", options={"latency_s": -1}))
    with pytest.raises(ConfigError, match=r"models.m.options: colour: Extra inputs are not permitted"):
        create_provider("m", ModelConfig(provider="mock", model="x", options={"colour": "red"}))


def test_outside_providers_register_like_built_ins():
    class Mine(MockProvider):
        pass

    register("mine", Mine)
    try:
        assert isinstance(create_provider("m", ModelConfig(provider="mine", model="x")), Mine)
    finally:
        PROVIDERS.pop("mine")


def test_fingerprint_tracks_what_changes_answers_only(monkeypatch):
    base = ModelConfig(provider="openai", model="gpt-4o", api_key_env="K", params={"temperature": 0.2})
    same = base.model_copy(update={"max_concurrency": 3, "requests_per_minute": 10, "api_key_env": "OTHER"})
    changed = base.model_copy(update={"params": {"temperature": 0.3}})
    assert model_state("m", base).fingerprint == model_state("m", same).fingerprint
    assert model_state("m", base).fingerprint != model_state("m", changed).fingerprint
    assert "K" not in model_state("m", base).model_dump_json()


def test_provider_repr_hides_the_key(monkeypatch):
    monkeypatch.setenv("SECRET_VAR", "sk-very-secret")
    provider = create_provider("m", ModelConfig(provider="openai", model="gpt-4o", api_key_env="SECRET_VAR"))
    assert "sk-very-secret" not in repr(provider) and "sk-very-secret" not in repr(vars(provider).get("config"))
