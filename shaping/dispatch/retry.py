"""When to try a request again, and how long to wait: tenacity, fed by the provider's verdict.

A provider marks a failed response `retryable` (429, 5xx, timeouts, dropped connections,
unparseable bodies) and may name a `retry_after`. Waits back off exponentially with jitter;
a server's Retry-After wins when it gives one.
"""

from __future__ import annotations

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential, wait_random

from shaping.config import ModelConfig


class RetryableFailure(Exception):
    """Some responses of a call failed in a way another try may fix."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("retryable failure")
        self.retry_after = retry_after


class wait_retry_after(wait_base):
    """The server's Retry-After when it gave one (capped), else the fallback backoff."""

    def __init__(self, fallback: wait_base, cap: float) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, RetryableFailure) and exc.retry_after is not None:
            return max(0.0, min(exc.retry_after, self.cap))
        return self.fallback(retry_state)


def retrying(config: ModelConfig) -> AsyncRetrying:
    backoff = wait_exponential(multiplier=config.retry_backoff_s, max=config.retry_max_wait_s) + wait_random(
        0, config.retry_backoff_s
    )
    return AsyncRetrying(
        stop=stop_after_attempt(config.max_retries + 1),
        wait=wait_retry_after(backoff, cap=config.retry_max_wait_s),
        retry=retry_if_exception_type(RetryableFailure),
        reraise=True,
    )
