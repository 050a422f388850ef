"""Providers turn the one request shape into a model's wire format. See `base.Provider`."""

from shaping._lazy import lazy_exports

__all__ = ["PROVIDERS", "Provider", "create_provider", "register", "resolve_provider_name"]
__getattr__ = lazy_exports(globals(), {
    "Provider": "shaping.providers.base", "PROVIDERS": "shaping.providers.registry",
    "create_provider": "shaping.providers.registry", "register": "shaping.providers.registry",
    "resolve_provider_name": "shaping.providers.registry"})
