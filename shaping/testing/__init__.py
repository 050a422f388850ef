"""Test your pipelines against servers that misbehave on request: real HTTP servers on
127.0.0.1 that speak the OpenAI and Anthropic APIs (chat and batch), with faults injected.

    from shaping.testing import Fault, LoopbackServer

    with LoopbackServer("openai", api_key="sk-test") as server:      # or "anthropic"
        server.fail_next(Fault(status=429, retry_after="1"))         # the next request: a 429
        server.fail_when(lambda r: "boom" in json.dumps(r.body), Fault(status=500))
        server.reply = lambda received: "the answer's text"          # what it says otherwise
        ... point a model's base_url at server.base_url, run the pipeline ...
        server.received                                              # every request, in order

Faults (`Fault`): an HTTP status (with Retry-After), latency, a hang past the client's timeout,
a malformed body, a dropped connection. `shaping.testing.batch.BatchServer` fakes OpenAI's Batch
API and Anthropic's Message Batches (errored, expired and missing items, a completion delay);
`shaping.testing.proxy` an HTTP(S) CONNECT proxy; `shaping.testing.h2` an HTTP/2 server. The
offline deterministic model is the `mock` provider (`provider = "mock"`, shaping.providers.mock).

These servers need aiohttp: `pip install 'shaping[testing]'`. Traffic stays on 127.0.0.1.
"""

from shaping._lazy import lazy_exports

__all__ = ["BackgroundServer", "Fault", "LoopbackServer", "Received"]
__getattr__ = lazy_exports(globals(), {
    "Fault": "shaping.testing.loopback", "LoopbackServer": "shaping.testing.loopback",
    "Received": "shaping.testing.loopback", "BackgroundServer": "shaping.testing.background"})
