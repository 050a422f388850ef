"""Requests per minute and tokens per minute for one model, with aiolimiter.

Requests are metered over short periods (at least one second, and one request each), so no
60-second window sees much more than the configured RPM even at the start of a run. Tokens are
estimated from the prompt before sending and topped up with the usage the server reports.
"""

from __future__ import annotations

from aiolimiter import AsyncLimiter

from shaping.config import ModelConfig
from shaping.requests import LLMRequest


def estimate_tokens(request: LLMRequest) -> int:
    """A rough prompt size: about four characters per token, plus a few per turn."""
    return sum(len(m.text) // 4 + 4 for m in request.messages)


class RateLimits:
    def __init__(self, config: ModelConfig) -> None:
        self._requests: AsyncLimiter | None = None
        self._tokens: AsyncLimiter | None = None
        if config.requests_per_minute:
            rpm = config.requests_per_minute
            period = max(1.0, 60.0 / rpm)
            self._requests = AsyncLimiter(rpm * period / 60.0, period)
        if config.tokens_per_minute:
            self._tokens = AsyncLimiter(config.tokens_per_minute, 60.0)

    @property
    def active(self) -> bool:
        return self._requests is not None or self._tokens is not None

    async def before(self, requests: list[LLMRequest]) -> int:
        """Wait for permits for these requests; returns the tokens reserved."""
        tokens = sum(estimate_tokens(r) for r in requests) if self._tokens is not None else 0
        return await self.acquire(len(requests), tokens)

    async def acquire(self, count: int, tokens: int) -> int:
        """Wait for `count` request permits and `tokens` token permits; returns the tokens reserved."""
        if self._requests is not None:
            for _ in range(count):
                await self._requests.acquire()
        if self._tokens is not None and tokens:
            await self._take_tokens(tokens)
        return tokens if self._tokens is not None else 0

    async def after(self, reserved: int, used: int) -> None:
        """Charge the tokens a call used beyond what was reserved for it."""
        if self._tokens is not None and used > reserved:
            await self._take_tokens(used - reserved)

    async def _take_tokens(self, amount: int) -> None:
        # aiolimiter refuses an acquire above its capacity: one call larger than a minute's
        # budget waits for a full bucket, then goes
        await self._tokens.acquire(min(amount, self._tokens.max_rate))
