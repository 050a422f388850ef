"""Which provider serves a model: installed packages name theirs in the `shaping.providers`
entry-point group (the built-in ones too, in shaping's pyproject.toml), scripts call `register`.

    # a package's pyproject.toml
    [project.entry-points."shaping.providers"]
    myapi = "mypackage.provider:MyProvider"

    # a script or a pipeline file
    register("myapi", "mypackage.provider:MyProvider")   # or the class itself

A provider's module is imported when a model first uses it (so torch loads only when a
transformers model is used). A name given to `register` wins over an entry point of the same
name, and a Ray run carries what `register` added to its workers (`registrations`).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points

from shaping.config import ModelConfig
from pydantic import ValidationError

from shaping.errors import ConfigError, describe_validation_error
from shaping.providers.base import Provider
from shaping.requests import streaming_problem

#: the entry-point group that installed packages name their providers in
ENTRY_POINT_GROUP = "shaping.providers"

#: providers given to `register`: name -> Provider subclass, or "module:Class" imported on
#: first use. Entry points are not listed here; see `provider_names`.
PROVIDERS: dict[str, type[Provider] | str] = {}

#: entry-point providers loaded so far
_LOADED: dict[str, type[Provider]] = {}

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
    """Make `provider` (a Provider subclass, or "module:Class") serve models whose provider is
    `name`, in this process and in the workers of a Ray run started from it."""
    PROVIDERS[name] = provider


def registrations(names: Iterable[str] | None = None) -> dict[str, type[Provider] | str]:
    """What `register` added (only `names`, when given): what a Ray run sends to its workers,
    which pass it to `restore_registrations` before running anything."""
    wanted = PROVIDERS if names is None else set(names)
    return {name: entry for name, entry in PROVIDERS.items() if name in wanted}


def restore_registrations(entries: dict[str, type[Provider] | str]) -> None:
    for name, entry in entries.items():
        register(name, entry)


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        same = found.setdefault(ep.name, [])
        if all(other.value != ep.value for other in same):
            same.append(ep)
    return found


def provider_names() -> list[str]:
    """Every provider name known here: entry points of installed packages and `register`ed ones."""
    return sorted(set(PROVIDERS) | set(_LOADED) | set(_entry_points()))


def resolve_provider_name(name: str, config: ModelConfig) -> str:
    if config.provider:
        return config.provider
    for prefix, (provider, _) in INFERRED.items():
        if config.model.startswith(prefix):
            return provider
    raise ConfigError(
        f"shaping.toml: models.{name}.provider: not given and not inferable from model "
        f"'{config.model}' (expected one of: {', '.join(provider_names())})"
    )


def resolve_base_url(config: ModelConfig) -> str | None:
    if config.base_url or config.provider:
        return config.base_url
    for prefix, (_, base_url) in INFERRED.items():
        if config.model.startswith(prefix):
            return base_url
    return None


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"entry point '{ep.name} = {ep.value}'" + (f" of package '{dist.name}'" if dist is not None else "")


def _load(name: str, provider: str, load, origin: str) -> type[Provider]:
    try:
        cls = load()
    except Exception as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"shaping.toml: models.{name}.provider: provider '{provider}' could not be loaded ({origin}): "
            f"{type(exc).__name__}: {detail}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(
            f"shaping.toml: models.{name}.provider: provider '{provider}' ({origin}) is not a subclass of "
            f"shaping.providers.Provider"
        )
    return cls


def _import(path: str) -> object:
    module, _, attr = path.partition(":")
    value: object = importlib.import_module(module)
    for part in attr.split(".") if attr else ():
        value = getattr(value, part)
    return value


def provider_class(name: str, provider: str) -> type[Provider]:
    entry = PROVIDERS.get(provider)
    if entry is not None:
        if isinstance(entry, str):
            path = entry
            entry = _load(name, provider, lambda: _import(path), f"registered as '{path}'")
            PROVIDERS[provider] = entry
        return entry
    if (cls := _LOADED.get(provider)) is not None:
        return cls
    found = _entry_points()
    candidates = found.get(provider)
    if not candidates:
        hint = "" if found else "; no provider entry points found: is shaping installed (pip install -e .)?"
        raise ConfigError(
            f"shaping.toml: models.{name}.provider: unknown provider '{provider}' "
            f"(expected one of: {', '.join(provider_names())}){hint}"
        )
    if len(candidates) > 1:
        raise ConfigError(
            f"shaping.toml: models.{name}.provider: provider '{provider}' is named by more than one installed "
            f"package ({'; '.join(_origin(ep) for ep in candidates)}); uninstall one, or choose with "
            f"shaping.providers.register('{provider}', 'module:Class')"
        )
    (ep,) = candidates
    cls = _LOADED[provider] = _load(name, provider, ep.load, _origin(ep))
    return cls


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


def create_provider(name: str, config: ModelConfig, read_key: bool = True) -> Provider:
    """Build the provider for model `name`, reading its API key from the named variable
    (`read_key=False`: without its key, for a dry run that sends nothing)."""
    provider = resolve_provider_name(name, config)
    cls = provider_class(name, provider)
    config = config.model_copy(update={"provider": provider, "base_url": resolve_base_url(config)})
    api_key = None
    if not read_key:
        pass  # checked by check_model; read when the model first sends
    elif config.api_key_env:
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
