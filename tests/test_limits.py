"""Tokens per minute: reserved from an estimate before sending, topped up from reported usage."""

import time

import anyio

from shaping.config import ModelConfig
from shaping.dispatch.limits import RateLimits, estimate_tokens
from shaping.requests import LLMRequest


def request(chars):
    return LLMRequest(messages=[{"role": "user", "content": "x" * chars}])


def test_estimate_grows_with_the_prompt():
    assert estimate_tokens(request(400)) == 104
    assert estimate_tokens(request(4000)) > estimate_tokens(request(400))


def test_usage_beyond_the_estimate_delays_the_next_request():
    limits = RateLimits(ModelConfig(model="m", tokens_per_minute=1200))  # 20 tokens a second

    async def main():
        reserved = await limits.before([request(40)])     # 14 tokens: within the first minute's budget
        await limits.after(reserved, used=1200 + reserved)  # the server says it used the whole budget
        started = time.monotonic()
        await limits.before([request(40)])                # must wait for ~14 tokens to drip back
        return time.monotonic() - started

    waited = anyio.run(main)
    assert 0.5 < waited < 3


def test_a_request_larger_than_the_budget_is_not_refused():
    limits = RateLimits(ModelConfig(model="m", tokens_per_minute=1000))

    async def main():
        return await limits.before([request(4 * 5000)])

    started = time.monotonic()
    assert anyio.run(main) > 5000
    assert time.monotonic() - started < 1
