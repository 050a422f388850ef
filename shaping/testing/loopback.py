"""An OpenAI- or Anthropic-compatible server on loopback that can misbehave on request.

Faults: latency, an HTTP status (429 with Retry-After, 500, 401...), a hang past the client's
timeout, a malformed JSON body, a dropped connection. Faults queued with `fail_next` apply to
the next requests in order; rules added with `fail_when` apply to every request they match.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

try:
    from aiohttp import web
except ImportError as exc:
    raise ImportError("shaping.testing's servers need aiohttp: pip install 'shaping[testing]'") from exc

from shaping.testing.background import BackgroundServer


@dataclass
class Fault:
    status: int | None = None
    retry_after: str | None = None
    latency_s: float = 0.0
    hang: bool = False
    malformed: bool = False
    drop: bool = False
    stream: bool = False  # answer with server-sent events, as a server that streams regardless
    message: str = "injected failure"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    at: float
    path: str
    headers: dict[str, str]
    body: Any

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])

    @property
    def last_user(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")


def echo(received: Received) -> str:
    return f"echo: {received.last_user}"


@dataclass
class LoopbackServer(BackgroundServer):
    api: Literal["openai", "anthropic"] = "openai"
    api_key: str | None = None
    latency_s: float = 0.0
    reply: Callable[[Received], str] = echo
    #: the whole JSON body to answer with (e.g. an SDK response model's dump); overrides `reply`
    respond: Callable[[Received], dict[str, Any]] | None = None
    received: list[Received] = field(default_factory=list)
    tls: ssl.SSLContext | None = None  # serve https with this context

    def __post_init__(self) -> None:
        self._faults: deque[Fault] = deque()
        self._rules: list[tuple[Callable[[Received], bool], Fault]] = []
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0

    # -- controlling it -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        suffix = "/v1" if self.api == "openai" else ""
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}{suffix}"

    def fail_next(self, *faults: Fault) -> None:
        with self._lock:
            self._faults.extend(faults)

    def fail_when(self, predicate: Callable[[Received], bool], fault: Fault) -> None:
        self._rules.append((predicate, fault))

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self._faults.clear()
            self._rules.clear()

    # -- serving --------------------------------------------------------------------------------

    async def listen(self):
        app = web.Application()
        app.router.add_post("/v1/chat/completions" if self.api == "openai" else "/v1/messages", self._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=2048, ssl_context=self.tls)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return runner.cleanup

    def _fault_for(self, received: Received) -> Fault | None:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
        for predicate, fault in self._rules:
            if predicate(received):
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._respond(request)
        finally:
            self.in_flight -= 1

    async def _respond(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"unparsed": raw.decode(errors="replace")}
        received = Received(time.monotonic(), request.path, dict(request.headers), body)
        with self._lock:
            self.received.append(received)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if (denied := self._check_auth(request)) is not None:
            return denied
        fault = self._fault_for(received)
        if fault is not None:
            if fault.latency_s:
                await asyncio.sleep(fault.latency_s)
            if fault.hang:
                await asyncio.sleep(3600)
            if fault.drop:
                request.transport.close()
                raise ConnectionResetError("dropped by the test server")
            if fault.stream:
                return web.Response(body=b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\ndata: [DONE]\n\n',
                                    content_type="text/event-stream")
            if fault.malformed:
                return web.Response(text='{"choices": [ {"message": ', content_type="application/json")
            if fault.status:
                headers = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
                return self._error(fault.status, fault.message, {**headers, **fault.headers})
        return web.json_response(self._answer(received))

    def _check_auth(self, request: web.Request) -> web.Response | None:
        if self.api_key is None:
            return None
        if self.api == "openai":
            ok = request.headers.get("authorization") == f"Bearer {self.api_key}"
        else:
            ok = request.headers.get("x-api-key") == self.api_key and "anthropic-version" in request.headers
        # like real APIs, echo what was sent: the client must keep it out of its own output
        given = request.headers.get("authorization") or request.headers.get("x-api-key") or "nothing"
        return None if ok else self._error(401, f"Incorrect API key provided: {given}", {})

    def _error(self, status: int, message: str, headers: dict[str, str]) -> web.Response:
        if self.api == "openai":
            body = {"error": {"message": message, "type": "test_error", "code": status}}
        else:
            body = {"type": "error", "error": {"type": "test_error", "message": message}}
        return web.json_response(body, status=status, headers=headers)

    def _answer(self, received: Received) -> dict[str, Any]:
        if self.respond is not None:
            return self.respond(received)
        text = self.reply(received)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in received.messages)
        completion_tokens = len(text.split())
        model = received.body.get("model", "test-model")
        if self.api == "openai":
            return {
                "id": "chatcmpl-test", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens},
            }
        return {
            "id": "msg_test", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn",
            "usage": {"input_tokens": prompt_tokens, "output_tokens": completion_tokens},
        }


def main() -> None:
    """`python -c "from shaping.testing.loopback import main; main()" [openai|anthropic] [port] [latency_s]`:
    serve until interrupted, printing the base URL first."""
    import sys

    server = LoopbackServer(sys.argv[1] if len(sys.argv) > 1 else "openai")
    server.port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server.latency_s = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    server.start()
    print(server.base_url, flush=True)
    server.wait_until_interrupted()


if __name__ == "__main__":
    main()
