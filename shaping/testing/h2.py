"""An OpenAI-compatible server over TLS that offers HTTP/2 (ALPN: h2, then http/1.1), served by
hypercorn. It records the HTTP version of every request, so a test can tell which one a client
chose."""

from __future__ import annotations

import asyncio
import json
import os
import socket

from shaping.testing.background import BackgroundServer


class H2Server(BackgroundServer):
    api = "openai"

    def __init__(self, certfile: str, keyfile: str) -> None:
        self.certfile, self.keyfile = certfile, keyfile
        self.versions: list[str] = []

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v1"

    async def app(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.versions.append(scope["http_version"])
        last = json.loads(raw)["messages"][-1]["content"]
        answer = {"id": "chatcmpl-h2", "object": "chat.completion", "model": "test-model",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": f"echo: {last}"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})

    async def listen(self):
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)  # connections wait in the backlog until hypercorn accepts them
        self.port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
        sock.close()
        config.certfile, config.keyfile = self.certfile, self.keyfile
        config.accesslog = config.errorlog = None
        stop = asyncio.Event()
        task = asyncio.create_task(serve(self.app, config, shutdown_trigger=stop.wait))
        await asyncio.sleep(0)
        if task.done():
            task.result()  # hypercorn did not start: say why

        async def clean_up() -> None:
            stop.set()
            await asyncio.wait_for(task, 5)

        return clean_up
