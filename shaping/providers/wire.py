"""The HTTP client of the providers: kept-alive HTTP/1.1 connections over asyncio, parsed by httptools.

A provider POSTs one JSON body to one URL and reads one JSON body back, thousands of times a
second; that is all this client does, and it does it with little CPU per request. Measured on
the 2-CPU development machine at 256 requests in flight (bench/NOTES.md): 85-105 us of CPU per
request over this client, 330-380 us over aiohttp's ClientSession (whose cookies, redirects,
tracing hooks and per-request objects are paid on every call), far more over httpx. Responses
are parsed by httptools (llhttp, the parser uvicorn uses): content-length, chunked and
read-until-close bodies.

What it handles: http and https (the system's CA store, or the bundle SSL_CERT_FILE names); an
HTTP proxy (absolute-form requests for http, a CONNECT tunnel for https, credentials taken from
the proxy URL); gzip and deflate bodies; `timeout_s` on connecting and on every wait for data;
idle connections kept for 15 s. Failures raise `TransportError`, whose message never holds a
header value (the API key travels in one).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote, urlsplit

import httptools

from shaping import __version__

KEEPALIVE_S = 15.0  # an idle connection older than this is closed rather than reused
USER_AGENT = f"shaping/{__version__}"


class TransportError(Exception):
    """No HTTP answer: `kind` is timeout, connection_error or tls_error."""

    def __init__(self, kind: str, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable


@dataclass(slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection, one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, where: str) -> None:
        self.loop = loop
        self.where = where
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.tunnel: bytearray | None = None  # the answer to CONNECT, while it is read
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.last_data = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.reason = ""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.headers_done = False
        self.got_data = False

    async def request(self, data: bytes, timeout_s: float) -> Response:
        if self.closed:  # closed by the server between connecting and asking
            raise TransportError("connection_error", f"{self.where} closed the connection without answering")
        self._reset()
        self.waiter = waiter = self.loop.create_future()
        self.last_data = self.loop.time()
        self.transport.write(data)
        self.timer = self.loop.call_later(timeout_s, self._check_timeout, timeout_s)
        try:
            return await waiter
        except asyncio.CancelledError:  # abandoned mid-answer: the connection cannot be reused
            self.close()
            raise
        finally:
            self.timer.cancel()
            self.waiter = None

    async def open_tunnel(self, authority: str, proxy_auth: str | None) -> None:
        """CONNECT through the proxy this connection reaches; returns once it answered 200."""
        self.tunnel = bytearray()
        self.waiter = waiter = self.loop.create_future()
        auth = f"proxy-authorization: {proxy_auth}\r\n" if proxy_auth else ""
        self.transport.write(f"CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n{auth}\r\n".encode("latin-1"))
        try:
            head = await waiter
        finally:
            self.waiter = None
            self.tunnel = None
        status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            raise TransportError("connection_error", f"proxy {self.where} refused the tunnel to {authority}: "
                                                     f"{status_line[:100]!r}", retryable=parts[1:2] != ["407"])

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:  # nothing asked: an idle connection the server wrote to is unusable
            self.close()
            return
        self.got_data = True
        self.last_data = self.loop.time()
        if self.tunnel is not None:
            self.tunnel += data
            end = self.tunnel.find(b"\r\n\r\n")
            if end >= 0 and not self.waiter.done():
                self.waiter.set_result(bytes(self.tunnel[:end]))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError("connection_error", f"malformed HTTP response from {self.where} ({exc})"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is None or self.waiter.done():
            return
        if self.tunnel is None and self.headers_done and not (
                "content-length" in self.headers or "transfer-encoding" in self.headers):
            self._complete(keep_alive=False)  # a body that ends where the connection does
        elif not self.got_data:
            self._fail(TransportError("connection_error", f"{self.where} closed the connection without answering"))
        else:
            self._fail(TransportError("connection_error", f"{self.where} closed the connection mid-response"))

    # -- httptools callbacks ---------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        self.headers_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self.parser.get_status_code() < 200:  # an interim answer: the real one follows
            self._reset()
            return
        self._complete(self.parser.should_keep_alive())

    # -- ending a request ------------------------------------------------------------------

    def _complete(self, keep_alive: bool) -> None:
        self.keep_alive = keep_alive
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        if not self.waiter.done():
            self.waiter.set_result(Response(self.parser.get_status_code(), self.reason, self.headers, body))

    def _fail(self, error: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def _check_timeout(self, timeout_s: float) -> None:
        if self.waiter is None or self.waiter.done():
            return
        left = self.last_data + timeout_s - self.loop.time()
        if left > 0:  # data came meanwhile: the wait starts again from the last of it
            self.timer = self.loop.call_later(left, self._check_timeout, timeout_s)
            return
        self._fail(TransportError("timeout", f"no answer from {self.where} within timeout_s={timeout_s:g}"))
        self.close()


def _authority(parts: SplitResult) -> str:
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    default = 443 if parts.scheme == "https" else 80
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


class Pool:
    """Kept-alive connections for POSTs to one URL, directly or through an HTTP proxy.

    The number of connections follows the requests in flight, which the caller bounds.
    `headers` go on every request; a value with a line break is refused (naming the header).
    """

    def __init__(self, url: str, headers: Mapping[str, str], timeout_s: float, proxy: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.timeout_s = timeout_s
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.authority = _authority(parts)
        self.where = f"{parts.scheme}://{self.authority}"
        self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        lines = {"host": self.authority, "user-agent": USER_AGENT, "accept": "application/json",
                 "accept-encoding": "gzip, deflate", "content-type": "application/json",
                 **{k.lower(): v for k, v in headers.items()}}
        self.proxy: SplitResult | None = None
        self.proxy_auth: str | None = None
        if proxy:
            self.proxy = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            if self.proxy.scheme != "http" or not self.proxy.hostname:
                raise ValueError(f"proxy {self.proxy.scheme}://{self.proxy.hostname}: only http:// proxies are supported")
            if self.proxy.username:
                credentials = f"{unquote(self.proxy.username)}:{unquote(self.proxy.password or '')}"
                self.proxy_auth = "Basic " + base64.b64encode(credentials.encode()).decode()
            if self.ssl is None:  # plain http through a proxy: the full URL as the request target
                path = f"{self.where}{path}"
                if self.proxy_auth:
                    lines["proxy-authorization"] = self.proxy_auth
        for name, value in lines.items():
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name}: the value has a line break (an API key variable ending "
                                 f"in a newline?)")
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines.items())
        self._head = head.encode("latin-1") + b"content-length: "
        self._idle: deque[_Connection] = deque()

    async def post(self, body: bytes) -> Response:
        """POST `body`; raises TransportError when no complete answer came."""
        connection = self._take() or await self._connect()
        response = await connection.request(b"%s%d\r\n\r\n%s" % (self._head, len(body), body), self.timeout_s)
        if connection.keep_alive and not connection.closed:
            connection.idle_since = connection.loop.time()
            self._idle.append(connection)
        else:
            connection.close()
        encoding = response.headers.get("content-encoding", "identity").lower()
        if encoding not in ("identity", ""):
            response.body = self._decode(response.body, encoding)
        return response

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def _take(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        oldest = idle[0].loop.time() - KEEPALIVE_S
        while idle and (idle[0].closed or idle[0].idle_since < oldest):
            idle.popleft().close()
        while idle:
            connection = idle.pop()  # the most recently used: the others may age out
            if not connection.closed and not connection.transport.is_closing():
                return connection
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        proxy = self.proxy
        where = f"proxy {proxy.hostname}:{proxy.port or 80}" if proxy else self.where
        host, port = (proxy.hostname, proxy.port or 80) if proxy else (self.host, self.port)
        direct_tls = self.ssl if proxy is None else None
        try:
            async with asyncio.timeout(self.timeout_s):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(loop, where), host, port, ssl=direct_tls,
                    server_hostname=self.host if direct_tls else None)
                if proxy is not None and self.ssl is not None:
                    await connection.open_tunnel(f"{self.host}:{self.port}", self.proxy_auth)
                    connection.transport = await loop.start_tls(transport, connection, self.ssl,
                                                                server_hostname=self.host)
                    connection.where = self.where
        except TimeoutError:
            raise TransportError("timeout", f"could not connect to {where} within "
                                            f"timeout_s={self.timeout_s:g}") from None
        except ssl.SSLCertVerificationError as exc:
            raise TransportError("tls_error", f"{self.where}: certificate not trusted ({exc.verify_message}); "
                                              "SSL_CERT_FILE can name a CA bundle that holds it",
                                 retryable=False) from None
        except OSError as exc:  # refused, unreachable, no such host, TLS handshake failures
            raise TransportError("connection_error", f"could not connect to {where}: "
                                                     f"{exc.strerror or exc}") from None
        return connection

    def _decode(self, body: bytes, encoding: str) -> bytes:
        try:
            if encoding in ("gzip", "x-gzip"):
                return zlib.decompress(body, zlib.MAX_WBITS | 16)
            if encoding == "deflate":
                try:
                    return zlib.decompress(body)
                except zlib.error:  # raw deflate, as some servers send it
                    return zlib.decompress(body, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise TransportError("connection_error", f"{self.where}: undecodable {encoding} body ({exc})") from None
        raise TransportError("connection_error", f"{self.where}: unsupported content-encoding {encoding!r}",
                             retryable=False)
