"""What a model's tokens cost: shaping.toml's prices, else a small built-in table of common models.

A model's prices come from, first to last:
1. its own table: `[models.NAME] price_per_million_input = ...` (and `_output`, `_cached_input`,
   `_cache_write`, `_batch_input`, `_batch_output`);
2. the project's `[prices."MODEL-ID"]` table (`input`, `output`, `cached_input`, `cache_write`,
   `batch_input`, `batch_output`), for a model id used by several tables or to correct the
   built-in one;
3. `BUILT_IN` below, for a model served by its provider's own host (a provider's
   `list_price_hosts`: OpenAI's and Anthropic's APIs): the list prices in US dollars per million
   tokens as published on `BUILT_IN_AS_OF`, for the exact model id, a dated snapshot of it
   (`-2024-07-18`, `-20250929`) or its `-latest` alias; any other id (`o3-pro`, `gpt-4o-mini-tts`)
   has no built-in price. Prices change: check them and set your own where it matters.
Batch APIs cost half the online price unless a batch price is given. Models that run on the
user's own machine or server (a provider's `local`: transformers, mock; the ollama and vllm
presets) cost nothing; any other model without prices has no cost (None).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shaping.config import ModelConfig, PriceTable

BUILT_IN_AS_OF = "2025-11"

#: model id -> (input, output, cached input, cache write) in USD per million tokens; a dated
#: snapshot or -latest alias of an id takes its prices ("gpt-4o-mini-2024-07-18" -> "gpt-4o-mini").
BUILT_IN: dict[str, tuple[float, float, float | None, float | None]] = {
    # OpenAI (cached input: the prompt-cache read price; OpenAI charges no cache writes)
    "gpt-5": (1.25, 10.00, 0.125, None),
    "gpt-5-mini": (0.25, 2.00, 0.025, None),
    "gpt-5-nano": (0.05, 0.40, 0.005, None),
    "gpt-4.1": (2.00, 8.00, 0.50, None),
    "gpt-4.1-mini": (0.40, 1.60, 0.10, None),
    "gpt-4.1-nano": (0.10, 0.40, 0.025, None),
    "gpt-4o": (2.50, 10.00, 1.25, None),
    "gpt-4o-mini": (0.15, 0.60, 0.075, None),
    "o3": (2.00, 8.00, 0.50, None),
    "o3-mini": (1.10, 4.40, 0.55, None),
    "o4-mini": (1.10, 4.40, 0.275, None),
    "o1": (15.00, 60.00, 7.50, None),
    # Anthropic (cache write: the 5-minute cache's price)
    "claude-opus-4-5": (5.00, 25.00, 0.50, 6.25),
    "claude-opus-4-1": (15.00, 75.00, 1.50, 18.75),
    "claude-opus-4": (15.00, 75.00, 1.50, 18.75),
    "claude-sonnet-4-5": (3.00, 15.00, 0.30, 3.75),
    "claude-sonnet-4": (3.00, 15.00, 0.30, 3.75),
    "claude-3-7-sonnet": (3.00, 15.00, 0.30, 3.75),
    "claude-haiku-4-5": (1.00, 5.00, 0.10, 1.25),
    "claude-3-5-haiku": (0.80, 4.00, 0.08, 1.00),
}

#: what may follow a model id for its built-in prices to apply: a snapshot date or "latest"
SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)")


@dataclass(frozen=True)
class Prices:
    """USD per million tokens, and where they came from (for the dry-run table)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    batch_input: float | None = None
    batch_output: float | None = None
    source: str = ""
    #: the user's own machine or server: nothing to pay, whatever the tokens
    local: bool = False

    def cost(self, prompt: int, completion: int, cached: int = 0, cache_write: int = 0,
             batch: bool = False) -> float:
        """USD for these token counts: cache reads and writes at their prices (the input price
        when not given); in batch mode at the batch prices (half the online ones if not given)."""
        cin, cout = self.input, self.output
        cached_price = cin if self.cached_input is None else self.cached_input
        write_price = cin if self.cache_write is None else self.cache_write
        if batch:
            ratio = self.batch_input / cin if self.batch_input is not None and cin else 0.5
            cin = self.batch_input if self.batch_input is not None else cin / 2
            cout = self.batch_output if self.batch_output is not None else cout / 2
            cached_price, write_price = cached_price * ratio, write_price * ratio
        fresh = max(0, prompt - cached - cache_write)
        return (fresh * cin + cached * cached_price + cache_write * write_price + completion * cout) / 1e6


FREE = Prices(0.0, 0.0, source="local or self-hosted", local=True)


def built_in(model: str) -> tuple[str, tuple[float, float, float | None, float | None]] | None:
    """The built-in row for a model id: its own, or that of the id it is a snapshot of."""
    if model in BUILT_IN:
        return model, BUILT_IN[model]
    for known, row in BUILT_IN.items():
        if model.startswith(known) and SNAPSHOT.fullmatch(model[len(known):]):
            return known, row
    return None


def prices_for(name: str, config: ModelConfig, table: dict[str, PriceTable] | None = None) -> Prices | None:
    """The prices of model `name` (see the module docstring), or None when none are known."""
    if config.price_per_million_input is not None or config.price_per_million_output is not None:
        return Prices(config.price_per_million_input or 0.0, config.price_per_million_output or 0.0,
                      config.price_per_million_cached_input, config.price_per_million_cache_write,
                      config.price_per_million_batch_input, config.price_per_million_batch_output,
                      source=f"shaping.toml models.{name}")
    own = (table or {}).get(config.model)
    if own is not None:
        return Prices(own.input, own.output, own.cached_input, own.cache_write, own.batch_input,
                      own.batch_output, source=f'shaping.toml prices."{config.model}"')
    from shaping.providers.registry import price_basis

    basis = price_basis(name, config)
    if basis == "local":
        return FREE
    if basis == "list":
        found = built_in(config.model)
        if found is not None:
            prefix, (cin, cout, cached, write) = found
            return Prices(cin, cout, cached, write, source=f"built-in list price of {prefix} ({BUILT_IN_AS_OF})")
    return None
