"""Drives task generators, batches their requests per model, and records every step."""

from shaping.dispatch.dispatcher import Dispatcher
from shaping.dispatch.stats import RunStats

__all__ = ["Dispatcher", "RunStats"]
