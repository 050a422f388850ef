"""`transformers serve` (the OpenAI-compatible server shipped with transformers) as a
subprocess on 127.0.0.1, and a recording reverse proxy to put in front of it.

    with TransformersServe() as server:              # raises ServeUnavailable if it cannot start
        server.warm_up("/path/to/local/model")        # loads the model: the request's `model`
        ... base_url = server.base_url ...             # is the folder's path (no hub access)

    with RecordingProxy(server.base_url) as proxy:    # every exchange: request and response JSON
        ... base_url = proxy.base_url ...
        proxy.exchanges

The server picks the model per request: `model` is a hub id or a local folder path
(`ModelManager.process_model_name` keeps an existing path as it is, without a revision), and
loads it on first use. Requirements: `transformers[serving]` (fastapi, uvicorn, starlette,
openai, accelerate on top of torch).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from shaping.testing.background import BackgroundServer

SERVING_MODULES = ("torch", "transformers", "fastapi", "uvicorn", "starlette", "openai", "accelerate")


class ServeUnavailable(RuntimeError):
    """`transformers serve` cannot start here, for a reason outside the code under test."""


def missing_serving_modules() -> list[str]:
    return [name for name in SERVING_MODULES if importlib.util.find_spec(name) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


class TransformersServe:
    """`transformers serve --host 127.0.0.1 --port PORT --device cpu`, offline, in a session of its
    own; stopped (SIGTERM, then SIGKILL) on exit. Its output goes to `log_path`."""

    def __init__(self, startup_timeout_s: float = 90.0, log_dir: Path | None = None) -> None:
        self.startup_timeout_s = startup_timeout_s
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="transformers-serve-"))
        self.log_path = self.log_dir / "serve.log"
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "TransformersServe":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        if missing := missing_serving_modules():
            raise ServeUnavailable(f"transformers serve needs {', '.join(missing)} "
                                   f"(pip install -e '.[dev,local]' or 'transformers[serving]')")
        env = {**os.environ,
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
               "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(self.log_dir / "hf-home"),
               "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "NO_PROXY": "127.0.0.1,localhost"}
        script = Path(sys.executable).with_name("transformers")  # the CLI of this interpreter's transformers
        cli = [str(script)] if script.exists() else [sys.executable, "-m", "transformers.cli.transformers"]
        command = cli + ["serve", "--host", "127.0.0.1", "--device", "cpu", "--log-level", "warning"]
        for _ in range(3):  # another process may take the free port between our check and its bind
            self.port = free_port()
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(command + ["--port", str(self.port)], env=env, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)
            if self._wait_ready():
                return
            if "address already in use" not in self.log_tail().lower():
                break
        reason = ("exited with status %s" % self.process.returncode if self.process.poll() is not None
                  else f"did not answer /health within {self.startup_timeout_s:.0f}s")
        self.stop()
        raise ServeUnavailable(f"transformers serve {reason}; its log ends:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                status, _ = _http("GET", f"http://127.0.0.1:{self.port}/health", timeout=2)
                if status == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.25)
        return False

    def warm_up(self, model: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """Load `model` (a local folder path) with a one-token request; return the answer. A
        failure here is the model's or the server's, and is raised as an AssertionError."""
        status, body = _http("POST", f"{self.base_url}/chat/completions", timeout=timeout_s, body={
            "model": model, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 1})
        assert status == 200, f"warm-up request failed ({status}): {body}\nserver log:\n{self.log_tail()}"
        return body

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)  # its own session: the server and nothing else
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        except ProcessLookupError:
            pass


@dataclass
class Exchange:
    path: str
    request: Any
    status: int
    response: Any


@dataclass
class RecordingProxy(BackgroundServer):
    """Forwards every request to `upstream` (a base URL ending in /v1) unchanged and records the
    request and response bodies, so a test can compare what the client kept with what the
    server said."""

    upstream: str = ""
    exchanges: list[Exchange] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def listen(self):
        session = ClientSession(timeout=ClientTimeout(total=120))
        app = web.Application()

        async def forward(request: web.Request) -> web.Response:
            raw = await request.read()
            target = self.upstream.rstrip("/") + "/" + request.match_info["tail"]
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "authorization")}
            async with session.request(request.method, target, data=raw, headers=headers) as upstream:
                body = await upstream.read()
                content_type = upstream.headers.get("content-type", "application/json")
                self.exchanges.append(Exchange(path=request.path, request=_json(raw), status=upstream.status,
                                               response=_json(body)))
                return web.Response(body=body, status=upstream.status, content_type=content_type.split(";")[0])

        app.router.add_route("*", "/v1/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

        async def clean_up() -> None:
            await runner.cleanup()
            await session.close()

        return clean_up


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
