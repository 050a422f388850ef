"""What the HTTP providers share: a fast client, and turning HTTP outcomes into responses.

The client is `shaping.providers.wire` (kept-alive HTTP/1.1 over asyncio, parsed by httptools):
a provider POSTs one JSON body to one URL, and that client does so for a quarter of the CPU
aiohttp's ClientSession needs and a small fraction of httpx's (measured in bench/NOTES.md).

`timeout_s` bounds connecting and each wait for data. Every failure becomes a `ModelResponse`
whose error says whether a retry may help; the API key is scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import time
import urllib.request
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import anyio
import orjson
from pydantic import BaseModel, ConfigDict, Field

from shaping.errors import ConfigError
from shaping.providers.base import Provider, UnsupportedRequest
from shaping.providers.endpoints import Endpoints
from shaping.providers.wire import Pool, TransportError
from shaping.requests import LLMRequest, ModelResponse, ResponseError

#: HTTP status -> (error type, retryable)
STATUS_ERRORS: dict[int, tuple[str, bool]] = {
    400: ("bad_request", False),
    401: ("auth_error", False),
    403: ("permission_error", False),
    404: ("not_found", False),
    408: ("timeout", True),
    409: ("conflict", True),
    413: ("bad_request", False),
    422: ("bad_request", False),
    429: ("rate_limited", True),
}


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `Retry-After` as seconds or an HTTP date."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def server_message(body: bytes, reason: str | None) -> str:
    """The error text a server sent: `error.message` of a JSON body, else the start of the body."""
    try:
        data = orjson.loads(body)
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    except ValueError:
        pass
    text = body.decode(errors="replace").strip()
    return text[:300] if text else (reason or "no body")


def proxy_for(url: str) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url`, as curl and httpx would use."""
    parts = urlsplit(url)
    if not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class HTTPOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    eject_after: int = Field(default=3, ge=1, description="with base_urls: consecutive failures before an endpoint is left out")
    eject_s: float = Field(default=30.0, gt=0, description="how long it is left out (doubling while it keeps failing)")


class HTTPProvider(Provider):
    """A provider that POSTs one JSON body per request; subclasses say what goes in and out."""

    default_batch_size = 1
    default_concurrency = 64
    needs_key = False
    default_base_url: ClassVar[str]
    path: ClassVar[str]
    Options = HTTPOptions
    operational_options = frozenset({"eject_after", "eject_s"})

    def __init__(self, name, config, api_key=None) -> None:
        super().__init__(name, config, api_key)
        bases = config.base_urls or [config.base_url or self.default_base_url]
        self.base_urls = [b.rstrip("/") for b in bases]
        self.base_url = self.base_urls[0]
        self.endpoints = Endpoints(self.base_urls, self.path, self.options.eject_after, self.options.eject_s)
        self._pools: dict[str, Pool] = {}

    # -- what a concrete API defines ----------------------------------------------------------

    @abstractmethod
    def headers(self) -> dict[str, str]:
        """Headers for every call, the key among them."""

    @abstractmethod
    def body(self, request: LLMRequest) -> dict[str, Any]:
        """The JSON body for one request."""

    @abstractmethod
    def parse(self, data: Any) -> ModelResponse:
        """A successful body -> response; raise KeyError/TypeError/ValueError when malformed."""

    # -- shared machinery -------------------------------------------------------------------

    async def open(self) -> None:
        headers = self.headers()
        try:  # proxies looked up once per endpoint, not per request
            self._pools = {e.url: Pool(e.url, headers, self.config.timeout_s, proxy_for(e.url))
                           for e in self.endpoints.all}
        except ValueError as exc:
            raise ConfigError(f"model '{self.name}': {self.scrub(str(exc))}") from None

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools = {}

    async def generate_batch(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        if len(requests) == 1:
            return [await self.send(requests[0])]
        responses: list[ModelResponse] = [None] * len(requests)  # type: ignore[list-item]

        async def one(i: int) -> None:
            responses[i] = await self.send(requests[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(requests)):
                tg.start_soon(one, i)
        return responses

    async def send(self, request: LLMRequest) -> ModelResponse:
        endpoint = self.endpoints.pick()
        response = await self._send_to(endpoint.url, endpoint.base_url, request)
        error = response.error
        self.endpoints.done(endpoint, failed=error is not None and error.retryable)
        return response

    async def _send_to(self, url: str, base_url: str, request: LLMRequest) -> ModelResponse:
        try:
            payload = orjson.dumps(self.body(request))
        except UnsupportedRequest as exc:  # nothing sent: the same request would fail every time
            return self.failure("unsupported_request", f"model '{self.name}': {exc}")
        try:
            response = await self._pools[url].post(payload)
        except TransportError as exc:  # refused, reset, dropped mid-response, timed out, TLS
            return self.failure(exc.kind, exc.message, retryable=exc.retryable)
        status, body = response.status, response.body
        if status >= 300:
            return self.http_failure(status, body, response.headers, response.reason, base_url)
        snippet = body[:120].decode(errors="replace").replace("\n", " ")
        if body.lstrip().startswith((b"data:", b"event:")):  # the server streamed anyway: it would again
            return self.failure("bad_response", f"the server answered with a stream (server-sent events), "
                                f"not one JSON body: {snippet!r}")
        try:
            data = orjson.loads(body)
        except ValueError:  # cut short or garbled on the way: another try may get it whole
            return self.failure("bad_response", f"response body is not JSON: {snippet!r}", retryable=True)
        try:
            result = self.parse(data)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            # JSON of a shape we do not read: the same body would come back every time
            return self.failure("bad_response", f"unexpected response shape ({type(exc).__name__}: "
                                f"{str(exc)[:80]}): {snippet!r}")
        result.model = result.model or self.config.model
        return result

    def http_failure(self, status: int, body: bytes, headers: Mapping[str, str], reason: str | None,
                     base_url: str) -> ModelResponse:
        kind, retryable = STATUS_ERRORS.get(status, ("server_error", True) if status >= 500 else ("client_error", False))
        detail = server_message(body, reason)
        if status < 400:  # the API moved: requests are not followed elsewhere with the key on them
            detail = f"redirected to {headers.get('location', '?')}; set base_url to where it points"
        elif status in (401, 403):
            env = self.config.api_key_env
            detail += (f": check {env}" if env else
                       f": no key was sent (shaping.toml models.{self.name}.api_key_env names the variable holding it)")
        return self.failure(
            kind, f"HTTP {status} from {base_url}{self.path}: {detail}",
            retryable=retryable, status_code=status,
            retry_after=parse_retry_after(headers) if retryable else None,
        )

    def failure(self, kind: str, message: str, **fields: Any) -> ModelResponse:
        return ModelResponse(model=self.config.model,
                             error=ResponseError(type=kind, message=self.scrub(message), **fields))

    def scrub(self, text: str) -> str:
        """Remove the key (and its recognisable start) from text that may be shown or stored."""
        key = self._api_key
        if key:
            text = text.replace(key, "***")
            if len(key) >= 12:
                text = text.replace(key[:8], "***")
        return text
