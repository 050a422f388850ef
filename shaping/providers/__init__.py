"""Providers turn the one request shape into a model's wire format. See `base.Provider`."""

from shaping.providers.base import Provider
from shaping.providers.registry import PROVIDERS, create_provider, register, resolve_provider_name

__all__ = ["PROVIDERS", "Provider", "create_provider", "register", "resolve_provider_name"]
