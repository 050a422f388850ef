"""The providers' HTTP client (shaping.providers.wire) against real sockets on 127.0.0.1: body
framings, compression, keep-alive, timeouts, cancellation and malformed answers."""

import asyncio
import gzip
import re
import socket
import time
import zlib

import pytest

from shaping.providers.wire import Pool, TransportError

OK = b'{"ok": true}'


def response(body: bytes = OK, *headers: str) -> bytes:
    lines = "".join(f"{h}\r\n" for h in headers)
    return b"HTTP/1.1 200 OK\r\n" + lines.encode() + b"content-length: %d\r\n\r\n%s" % (len(body), body)


class Canned:
    """A server that answers each request on a connection with `reply(n)` (n counts requests
    over all connections): bytes to send, or a coroutine function given the writer."""

    def __init__(self, reply) -> None:
        self.reply = reply
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.url = ""

    async def __aenter__(self) -> "Canned":
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/chat"
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    async def handle(self, reader, writer) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head).group(1))
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                out = self.reply(len(self.heads))
                if callable(out):
                    if await out(writer) == "close":
                        return
                else:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def run(coro):
    return asyncio.run(coro)


def test_a_kept_alive_connection_serves_every_request_in_turn():
    async def main():
        async with Canned(lambda n: response(b'{"n": %d}' % n)) as server:
            pool = Pool(server.url, {"authorization": "Bearer k"}, timeout_s=5)
            bodies = [(await pool.post(b'{"q": %d}' % i)).body for i in range(3)]
            pool.close()
            return server, bodies

    server, bodies = run(main())
    assert bodies == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert server.connections == 1 and server.bodies == [b'{"q": 0}', b'{"q": 1}', b'{"q": 2}']
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat HTTP/1.1\r\n")
    port = server.url.split(":")[2].split("/")[0]
    for line in (f"host: 127.0.0.1:{port}", "authorization: Bearer k", "content-type: application/json",
                 "content-length: 8"):
        assert f"\r\n{line}\r\n" in head


def test_chunked_gzip_deflate_and_read_until_close_bodies():
    text = b'{"choices": "' + b"x" * 5000 + b'"}'
    replies = {
        1: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        2: response(gzip.compress(text), "content-encoding: gzip"),
        3: response(zlib.compress(text), "content-encoding: deflate"),
        4: response(zlib.compress(text)[2:-4], "content-encoding: deflate"),  # raw deflate
    }

    async def until_close(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + OK)
        await writer.drain()
        return "close"

    async def main():
        async with Canned(lambda n: replies.get(n, until_close)) as server:
            pool = Pool(server.url, {}, timeout_s=5)
            bodies = [(await pool.post(b"{}")).body for _ in range(6)]
            return server, bodies

    server, bodies = run(main())
    assert bodies == [b"hello world", text, text, text, OK, OK]
    assert b"accept-encoding: gzip, deflate" in server.heads[0]
    assert server.connections == 2  # the body that ended with its connection took it along


def test_connection_close_and_a_socket_the_server_closed_are_not_reused():
    async def close_after(writer):
        writer.write(response())  # says nothing of closing, then closes (an idle timeout)
        await writer.drain()
        return "close"

    async def main():
        async with Canned(lambda n: response(OK, "connection: close") if n <= 2 else close_after) as server:
            pool = Pool(server.url, {}, timeout_s=5)
            for _ in range(4):
                assert (await pool.post(b"{}")).body == OK
                await asyncio.sleep(0.05)
            return server

    assert run(main()).connections == 4


def test_silence_times_out_but_a_slow_trickle_does_not():
    async def trickle(writer):
        body = b'{"slow": "' + b"." * 8 + b'"}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
        for byte in body:  # 20 bytes, 0.05 s apart: 1 s in all, never 0.5 s of silence
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)

    async def silence(writer):
        await asyncio.sleep(30)

    async def main():
        async with Canned(lambda n: trickle if n == 1 else silence) as server:
            pool = Pool(server.url, {}, timeout_s=0.5)
            started = time.monotonic()
            assert (await pool.post(b"{}")).body.startswith(b'{"slow"')
            assert time.monotonic() - started > 0.9
            started = time.monotonic()
            with pytest.raises(TransportError) as error:
                await pool.post(b"{}")
            return error.value, time.monotonic() - started

    error, waited = run(main())
    assert error.kind == "timeout" and error.retryable and "timeout_s=0.5" in error.message
    assert 0.45 < waited < 5


def test_a_cancelled_request_leaves_no_half_read_connection_behind():
    async def main():
        async with Canned(lambda n: (lambda w: asyncio.sleep(30)) if n == 1 else response()) as server:
            pool = Pool(server.url, {}, timeout_s=5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pool.post(b"{}"), 0.2)
            assert (await pool.post(b"{}")).body == OK
            return server

    assert run(main()).connections == 2


def test_malformed_http_a_dropped_answer_and_a_refused_connection_are_connection_errors():
    async def drop(writer):
        return "close"

    async def main():
        errors = []
        async with Canned(lambda n: b"NOT HTTP AT ALL\r\n\r\n" if n == 1 else drop) as server:
            pool = Pool(server.url, {}, timeout_s=5)
            for _ in range(2):
                with pytest.raises(TransportError) as error:
                    await pool.post(b"{}")
                errors.append(error.value)
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with pytest.raises(TransportError) as error:
            await Pool(f"http://127.0.0.1:{port}/v1", {}, timeout_s=5).post(b"{}")
        return [*errors, error.value]

    malformed, dropped, refused = run(main())
    assert all(e.kind == "connection_error" and e.retryable for e in (malformed, dropped, refused))
    assert "malformed HTTP response" in malformed.message
    assert "closed the connection without answering" in dropped.message
    assert f"could not connect to http://127.0.0.1:" in refused.message


def test_a_header_value_with_a_line_break_is_refused_without_showing_it():
    with pytest.raises(ValueError) as error:
        Pool("http://127.0.0.1:9/v1", {"authorization": "Bearer sk-secret\n"}, timeout_s=5)
    assert "authorization" in str(error.value) and "sk-secret" not in str(error.value)
    with pytest.raises(ValueError, match="only http:// proxies"):
        Pool("https://example.invalid/v1", {}, timeout_s=5, proxy="socks5://127.0.0.1:1080")
