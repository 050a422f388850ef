"""A forward HTTP proxy on loopback: CONNECT tunnels (for https) and absolute-form requests
(for http), both piped to the origin as bytes. It records what it was asked, so a test can
tell that traffic went through it and with which credentials."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from tests.servers.background import BackgroundServer


class ForwardProxy(BackgroundServer):
    def __init__(self) -> None:
        self.request_lines: list[str] = []
        self.credentials: list[str | None] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def listen(self):
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

        async def clean_up() -> None:
            server.close()

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
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

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
