"""What the HTTP providers share: a fast client, and turning HTTP outcomes into responses.

httpx is the API; aiohttp carries the bytes (`httpx-aiohttp`), because httpx's own pool slows
to a crawl with hundreds of connections in flight. Requests go straight to the transport
(`handle_async_request`, httpx's transport interface): a provider POSTs one JSON body to one
URL, so the client's cookie, redirect, auth and URL-merging layers were pure cost on the hot
path (bench/RESULTS.md). Timeouts are the transport's: `timeout_s` for connecting and for each
read. Every failure becomes a `ModelResponse` whose error says whether a retry may help; the
API key is scrubbed from every message.
"""

from __future__ import annotations

import email.utils
import time
from abc import abstractmethod
from typing import Any, ClassVar

import anyio
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

from shaping.providers.base import Provider
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


def parse_retry_after(headers: httpx.Headers) -> float | None:
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


def server_message(response: httpx.Response) -> str:
    """The error text a server sent: `error.message` of a JSON body, else the start of the body."""
    try:
        data = response.json()
        error = data.get("error", data) if isinstance(data, dict) else data
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    except ValueError:
        pass
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase


class HTTPProvider(Provider):
    """A provider that POSTs one JSON body per request; subclasses say what goes in and out."""

    default_batch_size = 1
    default_concurrency = 64
    needs_key = False
    default_base_url: ClassVar[str]
    path: ClassVar[str]

    def __init__(self, name, config, api_key=None) -> None:
        super().__init__(name, config, api_key)
        self.base_url = (config.base_url or self.default_base_url).rstrip("/")
        self._transport: AiohttpTransport | None = None

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
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        self._transport = AiohttpTransport(limits=limits)
        self._url = httpx.URL(self.base_url + self.path)
        self._headers = httpx.Headers({"content-type": "application/json", **self.headers()})
        timeout = self.config.timeout_s
        self._extensions = {"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    async def post(self, payload: bytes) -> httpx.Response:
        request = httpx.Request("POST", self._url, headers=self._headers, content=payload,
                                extensions=self._extensions)
        response = await self._transport.handle_async_request(request)
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

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
        model = self.config.model
        payload = orjson.dumps(self.body(request))
        try:
            response = await self.post(payload)
        except httpx.TransportError as exc:
            # the aiohttp transport reports a dropped connection as a ConnectTimeout: look at the cause
            cause = exc.__cause__ or exc
            if "Timeout" in type(cause).__name__:
                return self.failure("timeout", f"timed out talking to {self.base_url}: {type(cause).__name__}",
                                    retryable=True)
            return self.failure("connection_error", f"{type(cause).__name__}: {cause or 'connection lost'}",
                                retryable=True)
        if response.status_code >= 400:
            return self.http_failure(response)
        try:
            result = self.parse(orjson.loads(response.content))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            snippet = response.text[:120].replace("\n", " ")
            return self.failure("bad_response", f"unparseable response body ({type(exc).__name__}): {snippet!r}",
                                retryable=True)
        result.model = result.model or model
        return result

    def http_failure(self, response: httpx.Response) -> ModelResponse:
        status = response.status_code
        kind, retryable = STATUS_ERRORS.get(status, ("server_error", True) if status >= 500 else ("client_error", False))
        return self.failure(
            kind, f"HTTP {status} from {self.base_url}{self.path}: {server_message(response)}",
            retryable=retryable, status_code=status,
            retry_after=parse_retry_after(response.headers) if retryable else None,
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
