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
    ("grok-2", "xai", "https://api.x.ai/v1"),  # the xai preset
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
    with pytest.raises(ConfigError, match=r"unknown provider 'nope' \(expected one of: anthropic, mock, ollama, "
                                         r"openai, together, transformers, vllm, xai"):
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


# -- named hosts: presets over the openai provider ---------------------------------------------

from shaping.prices import prices_for  # noqa: E402
from shaping.providers.openai import OpenAIProvider  # noqa: E402
from shaping.providers.registry import PRESETS, check_model, provider_names, resolve_model  # noqa: E402


@pytest.mark.parametrize("preset, base_url, key_env", [
    ("ollama", "http://localhost:11434/v1", None),
    ("together", "https://api.together.ai/v1", "TOGETHER_API_KEY"),
    ("xai", "https://api.x.ai/v1", "XAI_API_KEY"),
])
def test_a_preset_fills_in_its_host_and_key_variable(preset, base_url, key_env, monkeypatch):
    if key_env:
        monkeypatch.setenv(key_env, "k-123")
    provider = create_provider("m", ModelConfig(provider=preset, model="some-model"))
    assert type(provider) is OpenAIProvider
    assert provider.base_url == base_url and provider.config.base_url == base_url
    assert provider.config.provider == preset and provider.config.api_key_env == key_env
    assert provider.headers() == ({"authorization": "Bearer k-123"} if key_env else {})


def test_a_table_overrides_its_preset(monkeypatch):
    monkeypatch.setenv("MY_TOGETHER", "mine")
    config = ModelConfig(provider="together", model="x", base_url="http://127.0.0.1:9/v1", api_key_env="MY_TOGETHER")
    provider = create_provider("m", config)
    assert provider.base_url == "http://127.0.0.1:9/v1" and provider.headers() == {"authorization": "Bearer mine"}
    # several endpoints: those, not the preset's
    spread = create_provider("m", config.model_copy(update={"base_url": None, "base_urls": ["http://a/v1", "http://b/v1"]}))
    assert spread.base_urls == ["http://a/v1", "http://b/v1"]
    # ollama behind a proxy that wants a key: named, it is sent
    monkeypatch.setenv("OLLAMA_PROXY_KEY", "pk")
    ollama = create_provider("m", ModelConfig(provider="ollama", model="llama3", api_key_env="OLLAMA_PROXY_KEY"))
    assert ollama.base_url == "http://localhost:11434/v1" and ollama.headers() == {"authorization": "Bearer pk"}


def test_a_preset_key_variable_not_set_is_one_line_naming_it(monkeypatch):
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    with pytest.raises(ConfigError, match=r"^model 'm': environment variable TOGETHER_API_KEY is not set "
                                          r"\(provider 'together' reads the key from it"):
        create_provider("m", ModelConfig(provider="together", model="x"))
    check_model("m", ModelConfig(provider="together", model="x"))  # before a run: the key is not needed yet


def test_vllm_needs_a_base_url_and_no_key(monkeypatch):
    message = r"^shaping.toml: models.m.base_url: required by provider 'vllm' \(the server's OpenAI-compatible URL"
    with pytest.raises(ConfigError, match=message):
        check_model("m", ModelConfig(provider="vllm", model="Qwen/Qwen3-8B"))
    with pytest.raises(ConfigError, match=message):
        create_provider("m", ModelConfig(provider="vllm", model="Qwen/Qwen3-8B"))
    provider = create_provider("m", ModelConfig(provider="vllm", model="Qwen/Qwen3-8B", base_url="http://gpu:8000/v1"))
    assert provider.base_url == "http://gpu:8000/v1" and provider.headers() == {}
    monkeypatch.setenv("VLLM_KEY", "token-abc")
    keyed = create_provider("m", ModelConfig(provider="vllm", model="q", base_url="http://gpu:8000/v1", api_key_env="VLLM_KEY"))
    assert keyed.headers() == {"authorization": "Bearer token-abc"}


def test_grok_models_resolve_to_the_xai_preset():
    resolved = resolve_model("m", ModelConfig(model="grok-4"))
    assert (resolved.provider, resolved.base_url, resolved.api_key_env) == ("xai", "https://api.x.ai/v1", "XAI_API_KEY")
    # named openai explicitly, a grok model goes to the table's (or OpenAI's) host
    explicit = resolve_model("m", ModelConfig(provider="openai", model="grok-4"))
    assert (explicit.provider, explicit.base_url, explicit.api_key_env) == ("openai", None, None)


def test_presets_are_known_provider_names():
    assert set(PRESETS) == {"ollama", "together", "xai", "vllm"}
    assert set(PRESETS) <= set(provider_names())


def test_the_fingerprint_records_the_preset_and_its_host():
    together = model_state("m", ModelConfig(provider="together", model="x"))
    assert (together.provider, together.base_url) == ("together", "https://api.together.ai/v1")
    # the same host reached through the plain openai provider, or another preset: another model
    plain = model_state("m", ModelConfig(provider="openai", model="x", base_url="https://api.together.ai/v1"))
    vllm = model_state("m", ModelConfig(provider="vllm", model="x", base_url="https://api.together.ai/v1"))
    assert len({together.fingerprint, plain.fingerprint, vllm.fingerprint}) == 3
    # the host a preset defaults to is part of it: overriding it changes the model
    moved = model_state("m", ModelConfig(provider="together", model="x", base_url="http://127.0.0.1:9/v1"))
    assert moved.fingerprint != together.fingerprint
    # the key variable is not
    keyed = model_state("m", ModelConfig(provider="together", model="x", api_key_env="OTHER"))
    assert keyed.fingerprint == together.fingerprint


def test_a_registered_provider_of_a_preset_name_replaces_the_preset():
    class NativeOllama(MockProvider):
        pass

    register("ollama", NativeOllama)
    try:
        provider = create_provider("m", ModelConfig(provider="ollama", model="llama3"))
        assert type(provider) is NativeOllama
        assert provider.config.base_url is None and provider.config.api_key_env is None
    finally:
        PROVIDERS.pop("ollama")
    assert type(create_provider("m", ModelConfig(provider="ollama", model="llama3"))) is OpenAIProvider


def test_self_hosted_presets_cost_nothing_hosted_ones_have_no_list_price():
    assert prices_for("m", ModelConfig(provider="ollama", model="llama3")).local
    assert prices_for("m", ModelConfig(provider="vllm", model="q", base_url="http://x/v1")).input == 0
    assert prices_for("m", ModelConfig(provider="together", model="gpt-4o")) is None
    assert prices_for("m", ModelConfig(provider="xai", model="grok-4", price_per_million_input=3,
                                       price_per_million_output=15)).output == 15
