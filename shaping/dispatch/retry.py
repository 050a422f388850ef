"""When to try a request again, and how long to wait: tenacity, deciding on the answers.

A provider marks a failed response `retryable` (its error type's default: 429, 5xx, timeouts,
dropped connections, unparseable bodies; see shaping.error_types) and may name a
`retry_after`. tenacity retries while an attempt's result, the answers still failing, is not
empty (`retry_if_result`), counts the attempts, and waits back off exponentially with jitter;
a server's Retry-After wins when it gives one.
"""

from __future__ import annotations

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential, wait_random

from shaping.config import ModelConfig


class wait_retry_after(wait_base):
    """The longest Retry-After the failing answers gave (capped), else the fallback backoff."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        failing = outcome.result() if outcome is not None and not outcome.failed else []
        waits = [r.error.retry_after for r in failing if r.error is not None and r.error.retry_after is not None]
        if waits:
            return max(0.0, min(max(waits), self.cap))
        return self.fallback(retry_state)


def retrying(config: ModelConfig) -> AsyncRetrying:
    """Calls a function that returns the answers still failing (retryably); tries again while
    there are any, up to `max_retries` more times; then returns the last of them."""
    backoff = wait_exponential(multiplier=config.retry_backoff_s, max=config.retry_max_wait_s) + wait_random(
        0, config.retry_backoff_s
    )
    return AsyncRetrying(
        stop=stop_after_attempt(config.max_retries + 1),
        wait=wait_retry_after(backoff, cap=config.retry_max_wait_s),
        retry=retry_if_result(bool),
        retry_error_callback=lambda state: state.outcome.result(),
    )
