"""Drives task generators, batches their requests per model, and records every step."""

from shaping._lazy import lazy_exports

__all__ = ["Dispatcher", "RunStats"]
__getattr__ = lazy_exports(globals(), {"Dispatcher": "shaping.dispatch.dispatcher", "RunStats": "shaping.dispatch.stats"})
