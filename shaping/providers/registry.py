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

Named hosts (`PRESETS`): `provider = "ollama" | "together" | "xai" | "vllm"` is the openai
provider with that host's base_url and key variable filled in where the table leaves them out
(`resolve_model`). A preset is the fallback for its name: a provider registered or installed
under the same name replaces it, defaults and all.
"""

from __future__ import annotations

import functools
import importlib
from urllib.parse import urlsplit
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
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
    "grok-": ("xai", None),  # the xai preset gives the base_url and key variable
}


@dataclass(frozen=True)
class Preset:
    """A named host: a provider (openai) with defaults that a `[models.NAME]` table overrides."""

    #: where the API is; None: the table must give base_url (or base_urls)
    base_url: str | None
    #: the variable holding the key, unless the table names another; None: no key is sent
    #: unless the table names a variable
    api_key_env: str | None
    #: the provider that talks to the host
    provider: str = "openai"
    #: a server the user runs: no per-token price (shaping.prices)
    self_hosted: bool = False
    about: str = ""


#: provider name -> preset. Checked against the hosts' own documentation (2026): Ollama
#: serves its OpenAI-compatible API at /v1 and ignores keys; Together documents
#: api.together.ai/v1 (api.together.xyz, the older name, answers too); xAI api.x.ai/v1.
PRESETS: dict[str, Preset] = {
    "ollama": Preset("http://localhost:11434/v1", None, self_hosted=True,
                     about="Ollama's OpenAI-compatible API on this machine; no key"),
    "together": Preset("https://api.together.ai/v1", "TOGETHER_API_KEY", about="Together AI"),
    "xai": Preset("https://api.x.ai/v1", "XAI_API_KEY", about="xAI (Grok models)"),
    "vllm": Preset(None, None, self_hosted=True,
                   about="a vLLM server (vllm serve): base_url required; a key only if the table names "
                         "api_key_env (the server's --api-key)"),
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
    """Every provider name known here: entry points of installed packages, `register`ed ones
    and the presets."""
    return sorted(set(PROVIDERS) | set(_LOADED) | set(_entry_points()) | set(PRESETS))


def catalogue() -> list[dict[str, str]]:
    """Every provider name known here, what serves it and where that comes from, in the order a
    model's `provider` is looked up (registered, installed, named host); nothing is imported.
    A name that two installed packages give is listed twice (a model naming it is refused)."""
    found = _entry_points()
    rows: list[dict[str, str]] = []
    for name in provider_names():
        entry = PROVIDERS.get(name)
        if entry is not None:
            target = entry if isinstance(entry, str) else f"{entry.__module__}:{entry.__qualname__}"
            rows.append({"name": name, "from": "register()", "serves": target})
        elif name in found:
            for ep in found[name]:
                dist = getattr(ep, "dist", None)
                rows.append({"name": name, "from": f"package {dist.name}" if dist is not None else "entry point",
                             "serves": ep.value})
        elif name in _LOADED:
            cls = _LOADED[name]
            rows.append({"name": name, "from": "loaded", "serves": f"{cls.__module__}:{cls.__qualname__}"})
        else:
            preset = PRESETS[name]
            rows.append({"name": name, "from": "named host",
                         "serves": f"{preset.provider} at {preset.base_url or 'the base_url the table gives'}"})
    return rows


@functools.lru_cache(maxsize=64)
def _installed(provider: str, path: tuple[str, ...]) -> bool:
    return provider in _entry_points()


def preset_for(provider: str | None) -> Preset | None:
    """The preset that provider name `provider` stands for; None when it names none, or when
    a provider registered or installed under that name replaces the preset."""
    preset = PRESETS.get(provider) if provider else None
    if preset is None or provider in PROVIDERS or provider in _LOADED or _installed(provider, tuple(sys.path)):
        return None
    return preset


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
    """The table's base_url, else its preset's (with `base_urls`, none: those are used)."""
    if config.base_url or config.base_urls:
        return config.base_url
    provider = config.provider
    if not provider:
        for prefix, (inferred, base_url) in INFERRED.items():
            if config.model.startswith(prefix):
                provider = inferred
                if base_url:
                    return base_url
                break
    preset = preset_for(provider)
    return preset.base_url if preset is not None else None


def price_basis(name: str, config: ModelConfig) -> str | None:
    """What decides a model's price (shaping.prices): "local" when it runs on the user's own
    machine or server (a provider's `local`, a self-hosted preset), "list" when its provider's
    own host serves it (the built-in list prices apply), else None."""
    provider = resolve_provider_name(name, config)
    preset = preset_for(provider)
    if preset is not None:
        return "local" if preset.self_hosted else None
    cls = provider_class(name, provider)
    if cls.local:
        return "local"
    return "list" if on_provider_host(name, config) else None


def on_provider_host(name: str, config: ModelConfig) -> bool:
    """Whether the model is served by its provider's own API (`list_price_hosts`: OpenAI's,
    Anthropic's), not by another server that speaks the same protocol: list prices and batch
    APIs are that host's."""
    provider = resolve_provider_name(name, config)
    if preset_for(provider) is not None:
        return False
    cls = provider_class(name, provider)
    urls = config.base_urls or [resolve_base_url(config) or getattr(cls, "default_base_url", None)]
    hosts = {urlsplit(url).hostname for url in urls if url}
    return bool(hosts) and hosts <= cls.list_price_hosts


def resolve_model(name: str, config: ModelConfig) -> ModelConfig:
    """The table as its provider gets it: `provider` named (inferred from the model id where
    left out), and a preset's base_url and api_key_env where the table leaves them out.
    A preset that needs a base_url and has none is one ConfigError line."""
    provider = resolve_provider_name(name, config)
    update: dict = {"provider": provider, "base_url": resolve_base_url(config)}
    preset = preset_for(provider)
    if preset is not None:
        if not (update["base_url"] or config.base_urls):
            raise ConfigError(
                f"shaping.toml: models.{name}.base_url: required by provider '{provider}' (the server's "
                f"OpenAI-compatible URL, e.g. base_url = \"http://localhost:8000/v1\")"
            )
        update["api_key_env"] = config.api_key_env or preset.api_key_env
    return config.model_copy(update=update)


def _origin(ep: EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"entry point '{ep.name} = {ep.value}'" + (f" of package '{dist.name}'" if dist is not None else "")


def _load(name: str, provider: str, load, origin: Callable[[], str]) -> type[Provider]:
    """`load()`'s provider class; `origin()` says where it came from, in a message (an entry
    point's package is read from its metadata, only then)."""
    try:
        cls = load()
    except Exception as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(
            f"shaping.toml: models.{name}.provider: provider '{provider}' could not be loaded ({origin()}): "
            f"{type(exc).__name__}: {detail}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise ConfigError(
            f"shaping.toml: models.{name}.provider: provider '{provider}' ({origin()}) is not a subclass of "
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
            entry = _load(name, provider, lambda: _import(path), lambda: f"registered as '{path}'")
            PROVIDERS[provider] = entry
        return entry
    if (cls := _LOADED.get(provider)) is not None:
        return cls
    if (preset := preset_for(provider)) is not None:
        return provider_class(name, preset.provider)
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
    cls = _LOADED[provider] = _load(name, provider, ep.load, lambda: _origin(ep))
    return cls


def check_model(name: str, config: ModelConfig) -> type[Provider]:
    """Everything about a model that can be checked before a run without its key: the provider
    is known and the options fit it. The key is read when the model first sends a request."""
    config = resolve_model(name, config)
    provider = config.provider
    cls = provider_class(name, provider)
    try:
        cls.Options.model_validate(config.options)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"shaping.toml: models.{name}.options")) from exc
    if cls.needs_key and not config.api_key_env:
        raise ConfigError(f"shaping.toml: models.{name}.api_key_env: required by provider '{provider}'")
    if (problem := streaming_problem(config.params)) is not None:
        raise ConfigError(f"shaping.toml: models.{name}.params: {problem}")
    return cls


def create_provider(name: str, config: ModelConfig, read_key: bool = True) -> Provider:
    """Build the provider for model `name`, reading its API key from the named variable
    (`read_key=False`: without its key, for a dry run that sends nothing)."""
    table, config = config, resolve_model(name, config)
    provider = config.provider
    cls = provider_class(name, provider)
    api_key = None
    if read_key and config.api_key_env:  # (read_key=False: checked by check_model, read when it sends)
        api_key = os.environ.get(config.api_key_env, "").strip()  # a key pasted with its newline
        if not api_key:
            raise ConfigError(
                f"model '{name}': environment variable {config.api_key_env} is not set "
                + (f"(shaping.toml models.{name}.api_key_env names it)" if table.api_key_env else
                   f"(provider '{provider}' reads the key from it; api_key_env in [models.{name}] can name another)")
            )
    elif read_key and cls.needs_key:
        raise ConfigError(f"shaping.toml: models.{name}.api_key_env: required by provider '{provider}'")
    try:
        return cls(name, config, api_key)
    except ConfigError:
        raise
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, f"shaping.toml: models.{name}.options")) from exc
    except Exception as exc:
        raise ConfigError(f"shaping.toml: models.{name}: {exc}") from exc
