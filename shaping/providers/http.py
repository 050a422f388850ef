"""What the HTTP providers share: the HTTP client, and turning HTTP outcomes into responses.

The client is pyreqwest: Python bindings to Rust's reqwest (hyper for HTTP/1.1 and HTTP/2,
rustls for TLS), a stack that thousands of projects exercise. Nothing of HTTP or TLS is written
here; this module only configures the client and maps its outcomes:

- https against the system's CA store, or the bundle `SSL_CERT_FILE` names (read when the
  provider opens); HTTP/2 where the server offers it through ALPN (`options.http2 = false` keeps
  HTTP/1.1), HTTP/1.1 otherwise;
- proxies from HTTP(S)_PROXY / NO_PROXY (looked up once per endpoint, as curl and httpx would):
  http:// or https:// proxies (CONNECT tunnels for https), socks5://, credentials in the URL;
- gzip, deflate, brotli and zstd bodies; at most `options.max_response_bytes` of body, counted
  after decompression;
- `timeout_s` bounds connecting and every wait for data (a slow but steady answer is not cut);
- redirects are not followed (the key would go to another host): a 3xx is an error naming it.

The async client runs its requests on a Tokio runtime of its own (a thread) and hands results to
the running asyncio loop (uvloop or not); it does not work under trio. Every failure becomes a
`ModelResponse` whose error says whether a retry may help; the API key is scrubbed from every
message, and no message is built from a header value.
"""

from __future__ import annotations

import email.utils
import http
import time
import urllib.request
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import unquote, urljoin, urlsplit

import anyio
import orjson
from pydantic import BaseModel, ConfigDict, Field
from pyreqwest import exceptions as rq
from pyreqwest.client import Client as _RqClient, ClientBuilder
from pyreqwest.http import Url
from pyreqwest.proxy import ProxyBuilder

from shaping import __version__
from shaping.error_types import ErrorType
from shaping.errors import ConfigError
from shaping.providers.base import Provider, UnsupportedRequest
from shaping.providers.batch import BatchCallError
from shaping.providers.endpoints import Endpoints
from shaping.requests import LLMRequest, ModelResponse, ResponseError

USER_AGENT = f"shaping/{__version__}"
KEEPALIVE_S = 15.0  # an idle connection older than this is closed rather than reused
DEFAULT_MAX_RESPONSE_BYTES = 64 * 2**20
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")


class TransportError(Exception):
    """No usable HTTP answer: `kind` is timeout, connection_error, tls_error or bad_response;
    retryable as the kind is unless said. `unsent`: it failed while connecting, so the server
    cannot have acted on the request (a batch API's create may be asked again)."""

    def __init__(self, kind: ErrorType, message: str, retryable: bool | None = None, unsent: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = kind.retryable if retryable is None else retryable
        self.unsent = unsent


class StatusError(Exception):
    """An HTTP answer with a status of 300 or more, where the caller reads a stream."""

    def __init__(self, response: "Response") -> None:
        super().__init__(f"HTTP {response.status}")
        self.response = response


class ResponseTooLarge(TransportError):
    """The body was longer than `max_response_bytes`: not retried (it would be again)."""

    def __init__(self, where: str, limit: int) -> None:
        super().__init__(ErrorType.BAD_RESPONSE, f"the response from {where} is larger than max_response_bytes="
                                         f"{limit:,} bytes", retryable=False)


@dataclass(slots=True)
class Response:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes

    @property
    def reason(self) -> str:
        try:
            return http.HTTPStatus(self.status).phrase
        except ValueError:
            return ""


def _check_header(name: str, value: str) -> None:
    # the client would refuse it too, printing the value: here only the name is shown
    if any(c in value or c in name for c in "\r\n\0"):
        raise ValueError(f"header {name}: the value has a line break or a NUL (an API key variable ending in "
                         f"a newline?)")


class Client:
    """POSTs of JSON bodies to one URL, over kept-alive connections, directly or through a proxy.

    `headers` go on every request; a value with a line break is refused, naming the header
    only. The number of connections follows the requests in flight, which the caller bounds.
    """

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float, proxy: str | None = None,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, http2: bool = True) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.url = Url(url)  # parsed once
        self.where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        sent = {"accept": "application/json", "content-type": "application/json",
                **{k.lower(): v for k, v in headers.items()}}
        for name, value in sent.items():
            _check_header(name, value)
        timeout = timedelta(seconds=timeout_s)
        builder = (ClientBuilder().user_agent(USER_AGENT).default_headers(sent)
                   .follow_redirects(False).referer(False).http1_lower_case_headers()
                   .connect_timeout(timeout).read_timeout(timeout)
                   .pool_idle_timeout(timedelta(seconds=KEEPALIVE_S)).http2(http2))
        builder = builder.proxy(self._proxy(proxy)) if proxy else builder.no_proxy()
        self._client: _RqClient = builder.build()

    @staticmethod
    def _proxy(proxy: str) -> ProxyBuilder:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
            raise ValueError(f"proxy {parts.scheme}://{parts.hostname}: only {', '.join(PROXY_SCHEMES)} "
                             f"proxies are supported")
        netloc = parts.netloc.rpartition("@")[2]
        builder = ProxyBuilder.all(parts._replace(netloc=netloc).geturl())
        if parts.username:  # percent-decoded here, so that "user%40corp" logs in as user@corp
            builder = builder.basic_auth(unquote(parts.username), unquote(parts.password or ""))
        return builder

    async def post(self, body: bytes) -> Response:
        """POST `body`; raises TransportError when no complete answer came."""
        request = self._client.post(self.url).body_bytes(body).build_streamed()
        try:
            async with request as response:
                reader = response.body_reader
                chunk = await reader.read_chunk()  # the client has read ahead: most answers are one chunk
                data = b"" if chunk is None else chunk.to_bytes()
                if chunk is not None and (chunk := await reader.read_chunk()) is not None:
                    data = await self._read_on(reader, bytearray(data), chunk)
                if len(data) > self.max_response_bytes:
                    raise ResponseTooLarge(self.where, self.max_response_bytes)
                return Response(response.status, response.headers, data)
        except rq.PyreqwestError as exc:
            raise self._error(exc) from exc

    async def call(self, method: str, url: str, body: bytes | None = None, form: Any = None) -> Response:
        """One request of any method to any URL (a batch API's files and batches), read whole;
        `form` is a pyreqwest multipart FormBuilder. Raises TransportError as `post` does."""
        builder = self._client.request(method, Url(url))
        if form is not None:  # its content type, over the client's default (JSON)
            builder = builder.header("content-type", f"multipart/form-data; boundary={form.boundary}").multipart(form)
        elif body is not None:
            builder = builder.body_bytes(body)
        try:
            async with builder.build_streamed() as response:
                reader = response.body_reader
                chunk = await reader.read_chunk()
                data = await self._read_on(reader, bytearray(), chunk) if chunk is not None else b""
                return Response(response.status, response.headers, data)
        except rq.PyreqwestError as exc:
            raise self._error(exc) from exc

    async def lines(self, url: str) -> AsyncIterator[bytes]:
        """GET `url` and yield its body line by line as it arrives (a batch's results, which
        may be far larger than `max_response_bytes`: only one line must fit in it). A status
        of 300 or more raises StatusError with the (bounded) body."""
        try:
            request = self._client.get(Url(url)).header("accept", "application/binary").build_streamed()
            async with request as response:
                reader = response.body_reader
                if response.status >= 300:
                    chunk = await reader.read_chunk()
                    data = await self._read_on(reader, bytearray(), chunk) if chunk is not None else b""
                    raise StatusError(Response(response.status, response.headers, data))
                rest = b""
                while (chunk := await reader.read_chunk()) is not None:
                    *complete, rest = (rest + chunk.to_bytes()).split(b"\n")
                    if len(rest) > self.max_response_bytes:
                        raise ResponseTooLarge(self.where, self.max_response_bytes)
                    for line in complete:
                        yield line
                if rest:
                    yield rest
        except rq.PyreqwestError as exc:
            raise self._error(exc) from exc

    async def _read_on(self, reader: Any, data: bytearray, chunk: Any) -> bytes:
        """The rest of a body that came in more than one chunk, up to `max_response_bytes`."""
        while chunk is not None:
            data += chunk
            if len(data) > self.max_response_bytes:
                raise ResponseTooLarge(self.where, self.max_response_bytes)
            chunk = await reader.read_chunk()
        return bytes(data)

    async def aclose(self) -> None:
        await self._client.close()

    def _error(self, exc: rq.PyreqwestError) -> TransportError:
        """The client's error as a TransportError: what happened, never a header value."""
        causes = [c["message"] for c in (getattr(exc, "details", None) or {}).get("causes") or []]
        error = self._classify(exc, causes)
        error.unsent = any(c.startswith("client error (Connect)") for c in causes)  # no connection: nothing sent
        return error

    def _classify(self, exc: rq.PyreqwestError, causes: list[str]) -> TransportError:
        detail = causes[-1] if causes else exc.message
        connecting = any(c.startswith("client error (Connect)") for c in causes)
        where = self.where
        if isinstance(exc, rq.RequestTimeoutError):
            what = "could not connect to" if connecting else "no answer from"
            return TransportError(ErrorType.TIMEOUT, f"{what} {where} within timeout_s={self.timeout_s:g}")
        if any("certificate" in c for c in causes):
            return TransportError(ErrorType.TLS, f"{where}: certificate not trusted ({detail}); SSL_CERT_FILE can "
                                               "name a CA bundle that holds it", retryable=False)
        if isinstance(exc, rq.BodyDecodeError):
            return TransportError(ErrorType.CONNECTION, f"{where}: undecodable response body ({detail})")
        if isinstance(exc, rq.DecodeError):
            return TransportError(ErrorType.CONNECTION, f"malformed HTTP response from {where} ({detail})")
        if any("proxy authorization required" in c for c in causes):  # 407 to CONNECT: retries cannot help
            return TransportError(ErrorType.CONNECTION, f"could not connect to {where}: {detail} (the proxy URL "
                                                      "holds the credentials: user:password@host)", retryable=False)
        if connecting:
            return TransportError(ErrorType.CONNECTION, f"could not connect to {where}: {detail}")
        if isinstance(exc, rq.TransportError):  # reset, closed before or during the answer
            return TransportError(ErrorType.CONNECTION, f"{where}: {detail}")
        return TransportError(ErrorType.CONNECTION, f"{where}: {type(exc).__name__}: {detail}", retryable=False)


#: HTTP status -> error type (whether a retry may help: the type's `retryable`)
STATUS_ERRORS: dict[int, ErrorType] = {
    400: ErrorType.BAD_REQUEST,
    401: ErrorType.AUTH,
    403: ErrorType.PERMISSION,
    404: ErrorType.NOT_FOUND,
    408: ErrorType.TIMEOUT,
    409: ErrorType.CONFLICT,
    413: ErrorType.BAD_REQUEST,
    422: ErrorType.BAD_REQUEST,
    429: ErrorType.RATE_LIMITED,
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


def _snippet(body: bytes) -> str:
    return body[:120].decode(errors="replace").replace("\n", " ")


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
    max_response_bytes: int = Field(default=DEFAULT_MAX_RESPONSE_BYTES, gt=0,
                                    description="the longest response body accepted (after decompression)")
    http2: bool = Field(default=True, description="HTTP/2 where the server offers it (false: HTTP/1.1 only)")


class HTTPProvider(Provider):
    """A provider that POSTs one JSON body per request; subclasses say what goes in and out."""

    default_batch_size = 1
    default_concurrency = 64
    needs_key = False
    default_base_url: ClassVar[str]
    path: ClassVar[str]
    Options = HTTPOptions
    operational_options = frozenset({"eject_after", "eject_s", "max_response_bytes", "http2"})

    def __init__(self, name, config, api_key=None) -> None:
        super().__init__(name, config, api_key)
        bases = config.base_urls or [config.base_url or self.default_base_url]
        self.base_urls = [b.rstrip("/") for b in bases]
        self.base_url = self.base_urls[0]
        self.endpoints = Endpoints(self.base_urls, self.path, self.options.eject_after, self.options.eject_s)
        self._clients: dict[str, Client] = {}
        self._api_client: Client | None = None  # batch API calls (other paths and methods)

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
        options = self.options
        try:  # proxies looked up once per endpoint, not per request
            for e in self.endpoints.all:
                self._clients[e.url] = Client(e.url, headers, self.config.timeout_s, proxy_for(e.url),
                                              options.max_response_bytes, options.http2)
        except ValueError as exc:  # the message names a header or a URL, never a header's value
            await self.aclose()
            raise ConfigError(f"model '{self.name}': {self.scrub(str(exc))}") from exc

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        if self._api_client is not None:
            clients["api"], self._api_client = self._api_client, None
        for client in clients.values():
            await client.aclose()

    # -- batch APIs: other paths and methods on the first base_url ---------------------------

    def _api(self) -> Client:
        if self._api_client is None:
            try:
                self._api_client = Client(self.base_url, self.headers(), self.config.timeout_s,
                                          proxy_for(self.base_url), self.options.max_response_bytes,
                                          self.options.http2)
            except ValueError as exc:
                raise ConfigError(f"model '{self.name}': {self.scrub(str(exc))}") from exc
        return self._api_client

    def _api_url(self, path: str) -> tuple[str, str]:
        """(URL, path shown in messages) for an API path or a URL the API gave (a results URL):
        never another host than base_url's, which would get the key."""
        if "://" not in path:
            return self.base_url + path, path
        if urlsplit(path).netloc != urlsplit(self.base_url).netloc:
            raise BatchCallError(self.failure(ErrorType.BAD_RESPONSE, f"the API pointed at {urlsplit(path).netloc}, "
                                              f"not {urlsplit(self.base_url).netloc}: not followed (the key "
                                              f"would go there)").error)
        return path, urlsplit(path).path

    async def api_call(self, method: str, path: str, body: Any = None, form: Any = None) -> Any:
        """`method` `path` (under base_url) with a JSON `body` (or its bytes) or a multipart
        `form`; the JSON answer. Raises BatchCallError (retryable as an online request would be)."""
        url, shown = self._api_url(path)
        try:
            payload = body if body is None or isinstance(body, bytes) else orjson.dumps(body)
            response = await self._api().call(method, url, payload, form)
        except TransportError as exc:
            raise BatchCallError(self.failure(exc.kind, exc.message, retryable=exc.retryable).error,
                                 unsent=exc.unsent) from exc
        if response.status >= 300:
            raise BatchCallError(self.http_failure(response.status, response.body, response.headers, response.reason,
                                                   self.base_url, shown).error)
        try:
            return orjson.loads(response.body)
        except ValueError as exc:
            raise BatchCallError(self.failure(ErrorType.BAD_RESPONSE, f"{method} {shown}: the answer is not JSON: "
                                              f"{_snippet(response.body)!r}", retryable=True).error) from exc

    async def api_lines(self, path: str) -> AsyncIterator[bytes]:
        """GET `path` (or a URL on base_url's host) line by line, as it arrives."""
        url, shown = self._api_url(path)
        try:
            async for line in self._api().lines(url):
                yield line
        except StatusError as exc:
            r = exc.response
            raise BatchCallError(self.http_failure(r.status, r.body, r.headers, r.reason, self.base_url,
                                                   shown).error) from exc
        except TransportError as exc:
            raise BatchCallError(self.failure(exc.kind, exc.message, retryable=exc.retryable).error) from exc

    async def generate_batch(self, requests: list[LLMRequest]) -> list[ModelResponse]:
        if len(requests) == 1:
            return [await self.generate(requests[0])]
        responses: list[ModelResponse] = [None] * len(requests)  # type: ignore[list-item]

        async def one(i: int) -> None:
            responses[i] = await self.generate(requests[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(requests)):
                tg.start_soon(one, i)
        return responses

    async def generate(self, request: LLMRequest) -> ModelResponse:
        """POST `request` to the next endpoint; what came back, as a response."""
        endpoint = self.endpoints.pick()
        try:
            payload = orjson.dumps(self.body(request))
        except UnsupportedRequest as exc:  # nothing sent: the same request would fail every time
            response = self.failure(ErrorType.UNSUPPORTED, f"model '{self.name}': {exc}")
        else:
            try:
                answer = await self._clients[endpoint.url].post(payload)
            except ResponseTooLarge as exc:
                response = self.failure(exc.kind, f"{exc.message}; [models.{self.name}.options] max_response_bytes "
                                                  "can raise the limit", retryable=False)
            except TransportError as exc:  # refused, reset, dropped mid-response, timed out, TLS
                response = self.failure(exc.kind, exc.message, retryable=exc.retryable)
            else:
                response = self.read_body(answer, endpoint.base_url)
        error = response.error
        self.endpoints.done(endpoint, failed=error is not None and error.retryable)
        return response

    def read_body(self, response: Response, base_url: str) -> ModelResponse:
        """An HTTP answer -> response: an HTTP failure, a body that is not JSON, or the answer."""
        status, body = response.status, response.body
        if status >= 300:
            return self.http_failure(status, body, response.headers, response.reason, base_url)
        try:
            data = orjson.loads(body)
        except ValueError:
            if body.lstrip().startswith((b"data:", b"event:")):  # the server streamed anyway: it would again
                return self.failure(ErrorType.BAD_RESPONSE, f"the server answered with a stream (server-sent events), "
                                    f"not one JSON body: {_snippet(body)!r}")
            # cut short or garbled on the way: another try may get it whole
            return self.failure(ErrorType.BAD_RESPONSE, f"response body is not JSON: {_snippet(body)!r}", retryable=True)
        return self.read_answer(data, body)

    def read_answer(self, data: Any, body: bytes | None = None) -> ModelResponse:
        """A successful answer's JSON (`body`: as it came, for the message) -> response; a shape
        we do not read is a `bad_response` failure (the same body would come back every time)."""
        try:
            result = self.parse(data)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            if body is None:
                body = orjson.dumps(data)
            return self.failure(ErrorType.BAD_RESPONSE, f"unexpected response shape ({type(exc).__name__}: "
                                f"{str(exc)[:80]}): {_snippet(body)!r}")
        if not result.model:
            result.model = self.config.model
        return result

    def http_failure(self, status: int, body: bytes, headers: Mapping[str, str], reason: str | None,
                     base_url: str, path: str | None = None) -> ModelResponse:
        kind = STATUS_ERRORS.get(status, ErrorType.SERVER_ERROR if status >= 500 else ErrorType.CLIENT_ERROR)
        retryable = kind.retryable
        detail = server_message(body, reason)
        if status < 400:  # the API moved: requests are not followed elsewhere with the key on them
            where = headers.get("location")  # a relative one, as the URL it stands for
            where = urljoin(f"{base_url}{self.path if path is None else path}", where) if where else "?"
            detail = f"redirected to {where}; set base_url to where it points"
        elif status in (401, 403):
            env = self.config.api_key_env
            detail += (f": check {env}" if env else
                       f": no key was sent (shaping.toml models.{self.name}.api_key_env names the variable holding it)")
        return self.failure(
            kind, f"HTTP {status} from {base_url}{self.path if path is None else path}: {detail}",
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
