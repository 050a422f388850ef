"""Which provider serves a model: a plain mapping, that built-ins and outside code fill alike.

    register("myapi", "mypackage.provider:MyProvider")   # or the class itself
"""

from __future__ import annotations

import importlib
import os

from shaping.config import ModelConfig
from pydantic import ValidationError

from shaping.errors import ConfigError, describe_validation_error
from shaping.providers.base import Provider
from shaping.requests import streaming_problem

#: provider name -> Provider subclass, or "module:Class" imported on first use (so that
#: torch loads only when a transformers model is used)
PROVIDERS: dict[str, type[Provider] | str] = {
    "mock": "shaping.providers.mock:MockProvider",
    "openai": "shaping.providers.openai:OpenAIProvider",
    "anthropic": "shaping.providers.anthropic:AnthropicProvider",
    "transformers": "shaping.providers.transformers:TransformersProvider",
}

#: model-name prefix -> (provider, default base_url), for configs that leave `provider` out
INFERRED: dict[str, tuple[str, str | None]] = {
    "gpt-": ("openai", None),
    "o1": ("openai", None),
    "o3": ("openai", None),
    "o4": ("openai", None),
    "claude-": ("anthropic", None),
    "grok-": ("openai", "https://api.x.ai/v1"),
}


def register(name: str, provider: type[Provider] | str) -> None:
    PROVIDERS[name] = provider


def resolve_provider_name(name: str, config: ModelConfig) -> str:
    if config.provider:
        return config.provider
    for prefix, (provider, _) in INFERRED.items():
        if config.model.startswith(prefix):
            return provider
    raise ConfigError(
        f"shaping.toml: models.{name}.provider: not given and not inferable from model "
        f"'{config.model}' (expected one of: {', '.join(sorted(PROVIDERS))})"
    )


def resolve_base_url(config: ModelConfig) -> str | None:
    if config.base_url or config.provider:
        return config.base_url
    for prefix, (_, base_url) in INFERRED.items():
        if config.model.startswith(prefix):
            return base_url
    return None


def provider_class(name: str, provider: str) -> type[Provider]:
    try:
        entry = PROVIDERS[provider]
    except KeyError:
        raise ConfigError(
            f"shaping.toml: models.{name}.provider: unknown provider '{provider}' "
            f"(expected one of: {', '.join(sorted(PROVIDERS))})"
        ) from None
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        PROVIDERS[provider] = entry
    return entry


def check_model(name: str, config: ModelConfig) -> type[Provider]:
    """Everything about a model that can be checked before a run without its key: the provider
    is known and the options fit it. The key is read when the model first sends a request."""
    provider = resolve_provider_name(name, config)
    cls = provider_class(name, provider)
    try:
        cls.Options.model_validate(config.options)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"shaping.toml: models.{name}.options")) from None
    if cls.needs_key and not config.api_key_env:
        raise ConfigError(f"shaping.toml: models.{name}.api_key_env: required by provider '{provider}'")
    if (problem := streaming_problem(config.params)) is not None:
        raise ConfigError(f"shaping.toml: models.{name}.params: {problem}")
    return cls


def create_provider(name: str, config: ModelConfig) -> Provider:
    """Build the provider for model `name`, reading its API key from the named variable."""
    provider = resolve_provider_name(name, config)
    cls = provider_class(name, provider)
    config = config.model_copy(update={"provider": provider, "base_url": resolve_base_url(config)})
    api_key = None
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env, "").strip()  # a key pasted with its newline
        if not api_key:
            raise ConfigError(
                f"model '{name}': environment variable {config.api_key_env} is not set "
                f"(shaping.toml models.{name}.api_key_env names it)"
            )
    elif cls.needs_key:
        raise ConfigError(f"shaping.toml: models.{name}.api_key_env: required by provider '{provider}'")
    try:
        return cls(name, config, api_key)
    except ConfigError:
        raise
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"shaping.toml: models.{name}.options")) from None
    except Exception as exc:
        raise ConfigError(f"shaping.toml: models.{name}: {exc}") from None
