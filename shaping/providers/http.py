"""What the HTTP providers share: a fast client, and turning HTTP outcomes into responses.

The client is aiohttp, used directly. Measured here at 256 requests in flight (bench/): httpx's
own pool managed about 0.04x the requests/s of a plain aiohttp loop; httpx over the aiohttp
transport (`httpx-aiohttp`) reached about 0.6x, its request/response translation alone costing
some 200 us of CPU per request; aiohttp directly is the only way to the 0.8x goal. A provider
POSTs one JSON body to one URL, so none of httpx's client features were in use.

`timeout_s` bounds connecting and each read. Every failure becomes a `ModelResponse` whose error
says whether a retry may help; the API key is scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import time
import urllib.request
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import aiohttp
import anyio
import orjson
from yarl import URL

from pydantic import BaseModel, ConfigDict, Field

from shaping.providers.base import Provider
from shaping.providers.endpoints import Endpoints
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


def proxy_for(url: URL) -> str | None:
    """The proxy HTTP(S)_PROXY / NO_PROXY name for `url`, as curl and httpx would use."""
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)


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

    def __init__(self, name, config, api_key=None) -> None:
        super().__init__(name, config, api_key)
        bases = config.base_urls or [config.base_url or self.default_base_url]
        self.base_urls = [b.rstrip("/") for b in bases]
        self.base_url = self.base_urls[0]
        self.endpoints = Endpoints(self.base_urls, self.path, self.options.eject_after, self.options.eject_s)
        self._session: aiohttp.ClientSession | None = None

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
        timeout = self.config.timeout_s
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300),
            headers={"content-type": "application/json", **self.headers()},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            proxy=proxy_for(self.endpoints.all[0].url),  # looked up once, not per request as trust_env would
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

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

    async def _send_to(self, url: URL, base_url: str, request: LLMRequest) -> ModelResponse:
        try:
            async with self._session.post(url, data=orjson.dumps(self.body(request))) as response:
                status, body = response.status, await response.read()
                headers, reason = response.headers, response.reason
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors
            return self.failure("timeout", f"timed out talking to {base_url} "
                                           f"({type(exc).__name__}, timeout_s={self.config.timeout_s:g})",
                                retryable=True)
        except aiohttp.ClientError as exc:  # refused, reset, dropped mid-response
            return self.failure("connection_error", f"{type(exc).__name__}: {exc or 'connection lost'}",
                                retryable=True)
        if status >= 400:
            return self.http_failure(status, body, headers, reason, base_url)
        try:
            result = self.parse(orjson.loads(body))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            snippet = body[:120].decode(errors="replace").replace("\n", " ")
            return self.failure("bad_response", f"unparseable response body ({type(exc).__name__}): {snippet!r}",
                                retryable=True)
        result.model = result.model or self.config.model
        return result

    def http_failure(self, status: int, body: bytes, headers: Mapping[str, str], reason: str | None,
                     base_url: str) -> ModelResponse:
        kind, retryable = STATUS_ERRORS.get(status, ("server_error", True) if status >= 500 else ("client_error", False))
        return self.failure(
            kind, f"HTTP {status} from {base_url}{self.path}: {server_message(body, reason)}",
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
