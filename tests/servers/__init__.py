"""Real HTTP servers on 127.0.0.1 that speak the OpenAI and Anthropic APIs, for tests and benches.

    with LoopbackServer("openai", api_key="sk-test") as server:
        server.fail_next(Fault(status=429, retry_after="1"))
        ... point a model's base_url at server.base_url ...
        server.received  # every request: time, path, headers, JSON body
"""

from tests.servers.loopback import Fault, LoopbackServer, Received

__all__ = ["Fault", "LoopbackServer", "Received"]
