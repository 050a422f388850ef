"""A forward HTTP proxy on loopback: CONNECT tunnels (for https) and absolute-form requests
(for http), both piped to the origin as bytes. It records what it was asked, so a test can
tell that traffic went through it and with which credentials. Given an SSL context, it is an
https:// proxy: clients reach it over TLS."""

from __future__ import annotations

import asyncio
import ssl
from urllib.parse import urlsplit

from shaping.testing.background import BackgroundServer


class ForwardProxy(BackgroundServer):
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.request_lines: list[str] = []
        self.credentials: list[str | None] = []
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def listen(self):
        server = await asyncio.start_server(self._client, "127.0.0.1", 0, ssl=self.tls)
        self.port = server.sockets[0].getsockname()[1]

        async def clean_up() -> None:
            server.close()
            for writer in list(self._writers):  # tunnels still open: their pipes end
                writer.close()
            await asyncio.sleep(0.05)

        return clean_up

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        first, *header_lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
        self.request_lines.append(first)
        self.credentials.append(next((v for k, v in headers.items() if k.lower() == "proxy-authorization"), None))
        method, target, version = first.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute-form: the origin gets the request in origin-form, proxy headers removed
            url = urlsplit(target)
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            kept = [line for line in header_lines if line and not line.lower().startswith("proxy-")]
            up_writer.write(f"{method} {url.path} {version}\r\n".encode("latin-1")
                            + "".join(f"{line}\r\n" for line in kept).encode("latin-1") + b"\r\n")
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


class Socks5Proxy(ForwardProxy):
    """A SOCKS5 proxy on loopback (no authentication, CONNECT only): records where it was asked
    to connect, as "host:port"."""

    @property
    def url(self) -> str:
        return f"socks5://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, methods = await reader.readexactly(2)
        await reader.readexactly(methods)
        writer.write(b"\x05\x00")  # no authentication
        _, command, _, address_type = await reader.readexactly(4)
        if address_type == 1:  # IPv4
            host = ".".join(str(b) for b in await reader.readexactly(4))
        else:  # a domain name (socks5h)
            host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        self.request_lines.append(f"{host}:{port}")
        up_reader, up_writer = await asyncio.open_connection(host, port)
        writer.write(b"\x05\x00\x00\x01" + bytes(6))  # succeeded (bound address not given)
        self._writers.update((writer, up_writer))
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers.difference_update((writer, up_writer))
