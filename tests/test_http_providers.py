"""The openai and anthropic providers against real HTTP servers on 127.0.0.1, and their HTTP
client (pyreqwest, configured in shaping.providers.http) against raw sockets: body framings and
encodings, keep-alive, timeouts, cancellation, malformed answers, size limits, TLS, HTTP/2,
proxies."""

import asyncio
import gzip
import re
import socket
import time
import zlib

import anyio
import pytest

from shaping import run_pipeline
from shaping.config import Project
from shaping.dispatch import Dispatcher
from shaping.errors import ConfigError
from shaping.pipeline import Pipeline, TrainingSample, model_request
from shaping.providers.http import Client, ResponseTooLarge, TransportError
from tests.conftest import write_project
from shaping.testing import Fault, LoopbackServer

KEY = "sk-test-0123456789abcdefSECRET"
KSHOT = [
    {"role": "system", "content": "You write one-line morals."},
    {"role": "user", "content": "A fox and grapes."},
    {"role": "assistant", "content": "We scorn what we cannot have."},
    {"role": "user", "content": "A tortoise and a hare."},
    {"role": "assistant", "content": "Slow and steady wins the race."},
    {"role": "user", "content": "An ant and a grasshopper."},
]


def model_toml(name, server, **extra):
    lines = [f"[models.{name}]", f'provider = "{server.api}"', 'model = "test-model"',
             f'base_url = "{server.base_url}"', 'api_key_env = "SHAPING_TEST_KEY"',
             "retry_backoff_s = 0.01", "retry_max_wait_s = 5"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(params=["openai", "anthropic"])
def server(request, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    with LoopbackServer(request.param, api_key=KEY) as s:
        yield s


@pytest.fixture
def openai_server(monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    with LoopbackServer("openai", api_key=KEY) as s:
        yield s


def project_for(tmp_path, server, **extra) -> Project:
    return write_project(tmp_path, model_toml("m", server, **extra))


def send(project, *requests):
    """Answer requests concurrently through a real dispatcher; responses in order."""
    out = [None] * len(requests)

    async def main():
        dispatcher = Dispatcher(project, "test", workers=64, annotate=True)
        async with dispatcher.session():
            async def one(i):
                out[i] = (await dispatcher.send(requests[i], i, f"r{i}"))[1]
            async with anyio.create_task_group() as tg:
                for i in range(len(requests)):
                    tg.start_soon(one, i)

    try:
        anyio.run(main)
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return out


def test_openai_receives_the_whole_conversation_and_params(tmp_path, openai_server):
    project = project_for(tmp_path, openai_server)
    (response,) = send(project, model_request(
        KSHOT, model="m", max_tokens=50, temperature=0.3, top_p=0.9, stop=["\n"], seed=7,
        response_format={"type": "json_object"}))
    assert response.is_success and response.get_text() == "echo: An ant and a grasshopper."
    body = openai_server.received[0].body
    assert body["messages"] == KSHOT
    assert body["model"] == "test-model"
    assert {k: body[k] for k in ("max_tokens", "temperature", "top_p", "stop", "seed", "response_format")} == {
        "max_tokens": 50, "temperature": 0.3, "top_p": 0.9, "stop": ["\n"], "seed": 7,
        "response_format": {"type": "json_object"}}
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens == 6
    assert response.finish_reason == "stop" and response.attempts == 1


def test_anthropic_gets_system_field_alternating_turns_and_headers(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    with LoopbackServer("anthropic", api_key=KEY) as server:
        project = project_for(tmp_path, server)
        conversation = KSHOT[:1] + [{"role": "system", "content": "Be brief."}] + KSHOT[1:] + [
            {"role": "user", "content": "Make it rhyme."}]
        (response,) = send(project, model_request(conversation, model="m", temperature=0.5, stop="END"))
        (refused,) = send(project, model_request(conversation, model="m", seed=3))
        received = server.received[0]
    assert response.is_success and response.get_text() == "echo: An ant and a grasshopper.\n\nMake it rhyme."
    body = received.body
    assert body["system"] == "You write one-line morals.\n\nBe brief."
    assert body["messages"] == KSHOT[1:5] + [
        {"role": "user", "content": "An ant and a grasshopper.\n\nMake it rhyme."}]
    # API version 2026-10-21 refuses sampling params, even at their defaults: not sent
    assert body["max_tokens"] == 1024 and "temperature" not in body
    assert body["stop_sequences"] == ["END"] and "stop" not in body
    # a param the API does not take is refused by name, never dropped
    assert refused.error.type == "unsupported_request" and "does not take seed" in refused.error.message
    assert len(server.received) == 1
    assert received.headers["x-api-key"] == KEY and received.headers["anthropic-version"] == "2026-10-21"
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0


def test_retries_500_then_succeeds(tmp_path, server):
    project = project_for(tmp_path, server)
    server.fail_next(Fault(status=500), Fault(status=503))
    (response,) = send(project, model_request("hi", model="m"))
    assert response.is_success and response.attempts == 3
    assert len(server.received) == 3


def test_gives_up_after_max_retries(tmp_path, server):
    project = project_for(tmp_path, server, max_retries=2)
    server.fail_when(lambda r: True, Fault(status=500, message="upstream exploded"))
    (response,) = send(project, model_request("hi", model="m"))
    assert not response.is_success
    assert response.error.type == "server_error" and response.error.status_code == 500
    assert "upstream exploded" in response.error.message
    assert "gave up after 3 attempts" in response.error.message
    assert response.attempts == 3 and len(server.received) == 3


def test_retry_after_is_honoured(tmp_path, server):
    project = project_for(tmp_path, server)
    server.fail_next(Fault(status=429, retry_after="1"))
    (response,) = send(project, model_request("hi", model="m"))
    assert response.is_success and response.attempts == 2
    first, second = server.received
    assert second.at - first.at >= 0.95


@pytest.mark.parametrize("status, kind", [(400, "bad_request"), (403, "permission_error"), (404, "not_found")])
def test_client_errors_are_not_retried(tmp_path, server, status, kind):
    project = project_for(tmp_path, server)
    server.fail_next(Fault(status=status, message="you sent nonsense"))
    (response,) = send(project, model_request("hi", model="m"))
    assert response.error.type == kind and "you sent nonsense" in response.error.message
    assert len(server.received) == 1 and response.attempts == 1


def test_401_not_retried_and_key_not_in_the_message(tmp_path, server, monkeypatch):
    project = project_for(tmp_path, server)
    monkeypatch.setenv("SHAPING_TEST_KEY", "sk-wrong-key-9876543210XYZ")
    (response,) = send(project, model_request("hi", model="m"))
    assert response.error.type == "auth_error" and len(server.received) == 1
    assert "Incorrect API key provided" in response.error.message
    assert "9876543210" not in response.error.message and "sk-wrong" not in response.error.message


def test_hang_past_the_timeout_is_retried(tmp_path, server):
    project = project_for(tmp_path, server, timeout_s=0.5)
    server.fail_next(Fault(hang=True))
    started = time.monotonic()
    (response,) = send(project, model_request("hi", model="m"))
    assert response.is_success and response.attempts == 2
    assert 0.45 < time.monotonic() - started < 5


def test_timeout_error_type_when_it_keeps_hanging(tmp_path, server):
    project = project_for(tmp_path, server, timeout_s=0.3, max_retries=1)
    server.fail_when(lambda r: True, Fault(hang=True))
    (response,) = send(project, model_request("hi", model="m"))
    assert response.error.type == "timeout" and "gave up after 2 attempts" in response.error.message


@pytest.mark.parametrize("fault, kind", [(Fault(malformed=True), "bad_response"), (Fault(drop=True), "connection_error")])
def test_malformed_body_and_dropped_connection_are_retried(tmp_path, server, fault, kind):
    project = project_for(tmp_path, server, max_retries=1)
    server.fail_next(fault)
    (response,) = send(project, model_request("hi", model="m"))
    assert response.is_success and response.attempts == 2
    server.fail_next(fault, fault)
    (failed,) = send(project, model_request("hi", model="m"))
    assert failed.error.type == kind


def test_max_concurrency_bounds_calls_in_flight(tmp_path, openai_server):
    openai_server.latency_s = 0.1
    project = project_for(tmp_path, openai_server, max_concurrency=4)
    responses = send(project, *[model_request(f"q{i}", model="m") for i in range(16)])
    assert all(r.is_success for r in responses)
    assert openai_server.peak_in_flight == 4


def test_requests_per_minute_is_held(tmp_path, openai_server):
    project = project_for(tmp_path, openai_server, requests_per_minute=600)  # 10 per second
    responses = send(project, *[model_request(f"q{i}", model="m") for i in range(30)])
    assert all(r.is_success for r in responses)
    times = sorted(r.at for r in openai_server.received)
    # a burst of at most 10, then 10 per second: 30 requests need about 2 seconds
    assert times[-1] - times[0] >= 1.8
    for i, t in enumerate(times):
        assert sum(1 for u in times[i:] if u - t < 1.0) <= 21


def test_missing_key_names_the_variable(tmp_path, openai_server, monkeypatch):
    project = project_for(tmp_path, openai_server)
    monkeypatch.delenv("SHAPING_TEST_KEY")
    with pytest.raises(ConfigError, match="environment variable SHAPING_TEST_KEY is not set"):
        send(project, model_request("hi", model="m"))


def test_anthropic_requires_a_key_variable(tmp_path):
    project = write_project(tmp_path, '[models.c]\nprovider = "anthropic"\nmodel = "claude-x"\n')
    with pytest.raises(ConfigError, match="models.c.api_key_env: required by provider 'anthropic'"):
        send(project, model_request("hi", model="c"))


def test_pipeline_run_never_writes_the_key(tmp_path, server):
    project = project_for(tmp_path, server, max_retries=0, price_per_million_input=1.0,
                          price_per_million_output=2.0)
    server.fail_when(lambda r: "FAIL" in r.last_user, Fault(status=500, message=f"bad key {KEY}"))

    class Keyless(Pipeline):
        name = "keyless"
        m = Pipeline.model_dep("m")

        def run(self):
            return self.run_task(self.task, records=[{"id": str(i), "q": "FAIL" if i == 2 else f"q{i}"}
                                                     for i in range(5)])

        def task(self, record):
            answer = yield model_request(record["q"], model=self.m)
            return TrainingSample(id=record["id"], messages=[
                {"role": "user", "content": record["q"]}, {"role": "assistant", "content": answer.get_text()}])

    result = run_pipeline(Keyless(project), annotate=True)
    assert result.manifest.counts.samples == 4 and result.manifest.counts.errors == {"server_error": 1}
    usage = result.manifest.usage["m"]
    assert usage.cost_usd == pytest.approx((usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6)
    for path in (tmp_path / "training").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert KEY.encode() not in content and KEY[:8].encode() not in content, path


def test_two_endpoints_share_the_traffic(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    with LoopbackServer("openai", api_key=KEY, latency_s=0.02) as a, LoopbackServer("openai", api_key=KEY, latency_s=0.02) as b:
        project = write_project(tmp_path, model_toml("m", a).replace(
            f'base_url = "{a.base_url}"', f'base_urls = ["{a.base_url}", "{b.base_url}"]'))
        responses = send(project, *[model_request(f"q{i}", model="m") for i in range(40)])
        assert all(r.is_success for r in responses)
        assert len(a.received) + len(b.received) == 40
        assert 10 <= len(a.received) <= 30  # least outstanding spreads them


def test_an_endpoint_that_keeps_failing_is_drained(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    with LoopbackServer("openai", api_key=KEY) as good, LoopbackServer("openai", api_key=KEY) as bad:
        bad.fail_when(lambda r: True, Fault(status=500))
        project = write_project(tmp_path, model_toml("m", good, max_concurrency=4).replace(
            f'base_url = "{good.base_url}"', f'base_urls = ["{bad.base_url}", "{good.base_url}"]')
            + "[models.m.options]\neject_after = 2\neject_s = 60\n")
        responses = send(project, *[model_request(f"q{i}", model="m") for i in range(40)])
        assert all(r.is_success for r in responses)  # failures were retried on the healthy endpoint
        assert len(good.received) >= 40
        assert len(bad.received) <= 6  # taken out after 2 failures in a row (a few were already in flight)


# -- TLS, proxies, redirects: what the client does on the way to a real API ---------------------

@pytest.fixture
def ca(tmp_path):
    """(a CA made for the test, the path of a bundle that holds it)"""
    import trustme

    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    return authority, bundle


@pytest.fixture
def tls(ca):
    """(server context, CA bundle path): a certificate for 127.0.0.1 from a CA made for the test."""
    import ssl

    authority, bundle = ca
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    return context, bundle


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_https_trusts_the_ca_bundle_named_by_ssl_cert_file(tmp_path, tls, monkeypatch, no_proxy_settings):
    context, bundle = tls
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    with LoopbackServer("openai", api_key=KEY, tls=context) as server:
        assert server.base_url.startswith("https://")
        project = project_for(tmp_path, server, max_retries=1)
        (untrusted,) = send(project, model_request("hi", model="m"))
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        (trusted,) = send(project, model_request("hi", model="m"))
    assert untrusted.error.type == "tls_error" and untrusted.attempts == 1  # no retry can fix it
    assert "certificate" in untrusted.error.message and "SSL_CERT_FILE" in untrusted.error.message
    assert trusted.is_success and trusted.get_text() == "echo: hi"
    assert len(server.received) == 1


def test_http_goes_through_the_proxy_with_its_credentials(tmp_path, openai_server, monkeypatch, no_proxy_settings):
    from shaping.testing.proxy import ForwardProxy

    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user%40corp:p%3Ass@127.0.0.1:{proxy.port}")
        (response,) = send(project_for(tmp_path, openai_server), model_request("hi", model="m"))
    assert response.is_success and response.get_text() == "echo: hi"
    assert proxy.request_lines == [f"POST {openai_server.base_url}/chat/completions HTTP/1.1"]
    assert proxy.credentials == ["Basic dXNlckBjb3JwOnA6c3M="]  # base64 of "user@corp:p:ss"
    assert "proxy-authorization" not in {k.lower() for k in openai_server.received[0].headers}


def test_https_goes_through_a_connect_tunnel(tmp_path, tls, monkeypatch, no_proxy_settings):
    from shaping.testing.proxy import ForwardProxy

    context, bundle = tls
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with LoopbackServer("anthropic", api_key=KEY, tls=context) as server, ForwardProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        responses = send(project_for(tmp_path, server), *[model_request(f"q{i}", model="m") for i in range(3)])
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        (direct,) = send(project_for(tmp_path, server), model_request("direct", model="m"))
    assert [r.get_text() for r in responses] == ["echo: q0", "echo: q1", "echo: q2"]
    assert direct.get_text() == "echo: direct"
    assert proxy.request_lines and set(proxy.request_lines) == {f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"}
    assert proxy.credentials[0] is None and len(server.received) == 4


def test_a_redirect_is_an_error_that_names_where_to_point(tmp_path, openai_server):
    project = project_for(tmp_path, openai_server)
    openai_server.fail_next(Fault(status=308, headers={"location": "https://api.example.com/v2/chat"}))
    (response,) = send(project, model_request("hi", model="m"))
    assert response.error.type == "client_error" and response.attempts == 1
    assert "redirected to https://api.example.com/v2/chat; set base_url" in response.error.message
    assert len(openai_server.received) == 1
    openai_server.fail_next(Fault(status=302, headers={"location": "/v2/chat/completions"}))
    (response,) = send(project, model_request("hi", model="m"))  # a relative target, as the URL it names
    assert f"redirected to {openai_server.base_url.split('/v1')[0]}/v2/chat/completions; set base_url" in response.error.message


def test_a_key_pasted_with_its_newline_still_works(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY + "\n")
    (response,) = send(project_for(tmp_path, openai_server), model_request("hi", model="m"))
    assert response.is_success


def test_https_proxy_tls_to_the_proxy_then_a_connect_tunnel(tmp_path, tls, monkeypatch, no_proxy_settings):
    from shaping.testing.proxy import ForwardProxy

    context, bundle = tls
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))  # the proxy's certificate, and the server's
    with LoopbackServer("openai", api_key=KEY, tls=context) as server, ForwardProxy(tls=context) as proxy:
        assert proxy.url.startswith("https://")
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        (response,) = send(project_for(tmp_path, server), model_request("via https", model="m"))
    assert response.get_text() == "echo: via https"
    assert proxy.request_lines == [f"CONNECT 127.0.0.1:{server.port} HTTP/1.1"]


def test_a_socks5_proxy_named_by_http_proxy(tmp_path, openai_server, monkeypatch, no_proxy_settings):
    from shaping.testing.proxy import Socks5Proxy

    with Socks5Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        (response,) = send(project_for(tmp_path, openai_server), model_request("socks", model="m"))
    assert response.get_text() == "echo: socks"
    assert proxy.request_lines == [f"127.0.0.1:{openai_server.port}"]


@pytest.mark.parametrize("http2", [True, False])
def test_http2_where_the_server_offers_it(tmp_path, ca, monkeypatch, no_proxy_settings, http2):
    from shaping.testing.h2 import H2Server

    authority, bundle = ca
    pem = tmp_path / "server.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with H2Server(str(pem), str(pem)) as server:  # ALPN offers h2, then http/1.1
        project = write_project(tmp_path, model_toml("m", server) + f"[models.m.options]\nhttp2 = {str(http2).lower()}\n")
        responses = send(project, *[model_request(f"q{i}", model="m") for i in range(4)])
    assert [r.get_text() for r in responses] == [f"echo: q{i}" for i in range(4)]
    assert server.versions == ["2" if http2 else "1.1"] * 4


def test_a_response_over_max_response_bytes_is_not_retried_and_says_how_to_raise_it(tmp_path, openai_server):
    openai_server.reply = lambda received: "x" * 5000
    project = write_project(tmp_path, model_toml("m", openai_server) + "[models.m.options]\nmax_response_bytes = 4000\n")
    (response,) = send(project, model_request("hi", model="m"))
    assert response.error.type == "bad_response" and not response.error.retryable and response.attempts == 1
    assert "larger than max_response_bytes=4,000 bytes" in response.error.message
    assert "[models.m.options] max_response_bytes can raise the limit" in response.error.message
    openai_server.reply = lambda received: "x" * 3000
    (fits,) = send(project, model_request("hi", model="m"))
    assert fits.is_success


# -- the client against raw sockets -------------------------------------------------------------

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
                length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))
                self.heads.append(head)
                self.bodies.append(await reader.readexactly(length))
                out = self.reply(len(self.heads))
                if callable(out):
                    if await out(writer) == "close":
                        return
                else:
                    writer.write(out)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


def run(coro):
    return asyncio.run(coro)


def test_a_kept_alive_connection_serves_every_request_in_turn():
    async def main():
        async with Canned(lambda n: response(b'{"n": %d}' % n)) as server:
            client = Client(server.url, {"authorization": "Bearer k"}, timeout_s=5)
            bodies = [(await client.post(b'{"q": %d}' % i)).body for i in range(3)]
            await client.aclose()
            return server, bodies

    server, bodies = run(main())
    assert bodies == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert server.connections == 1 and server.bodies == [b'{"q": 0}', b'{"q": 1}', b'{"q": 2}']
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/chat HTTP/1.1\r\n")
    port = server.url.split(":")[2].split("/")[0]
    for line in (f"host: 127.0.0.1:{port}", "authorization: Bearer k", "content-type: application/json",
                 "content-length: 8", "user-agent: shaping/"):
        assert f"\r\n{line}" in head


def test_chunked_compressed_and_read_until_close_bodies():
    import brotli
    import zstandard

    text = b'{"choices": "' + b"x" * 5000 + b'"}'
    replies = {
        1: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        2: response(gzip.compress(text), "content-encoding: gzip"),
        3: response(zlib.compress(text), "content-encoding: deflate"),
        4: response(brotli.compress(text), "content-encoding: br"),
        5: response(zstandard.ZstdCompressor().compress(text), "content-encoding: zstd"),
    }

    async def until_close(writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n" + OK)
        await writer.drain()
        return "close"

    async def main():
        async with Canned(lambda n: replies.get(n, until_close)) as server:
            client = Client(server.url, {}, timeout_s=5)
            bodies = [(await client.post(b"{}")).body for _ in range(7)]
            await client.aclose()
            return server, bodies

    server, bodies = run(main())
    assert bodies == [b"hello world", text, text, text, text, OK, OK]
    accepted = re.search(rb"accept-encoding: ([^\r]*)", server.heads[0]).group(1).decode()
    assert {e.strip() for e in accepted.split(",")} >= {"gzip", "deflate", "br", "zstd"}
    assert server.connections == 2  # the body that ended with its connection took it along


def test_max_response_bytes_holds_for_sized_chunked_and_compressed_bodies():
    big = b'{"x": "' + b"x" * 5000 + b'"}'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 1000]), big[i:i + 1000]) for i in range(0, len(big), 1000))
    replies = {
        1: response(big),
        2: b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n",
        3: response(gzip.compress(b'{"x": "' + b"x" * 10_000_000 + b'"}'), "content-encoding: gzip"),  # 10 kB -> 10 MB
        4: response(b'{"x": "' + b"x" * 3900 + b'"}'),
    }

    async def main():
        async with Canned(lambda n: replies[n]) as server:
            client = Client(server.url, {}, timeout_s=5, max_response_bytes=4000)
            errors = []
            for _ in range(3):
                with pytest.raises(ResponseTooLarge) as error:
                    await client.post(b"{}")
                errors.append(error.value)
            fits = await client.post(b"{}")
            await client.aclose()
            return errors, fits

    errors, fits = run(main())
    assert all(e.kind == "bad_response" and not e.retryable and "max_response_bytes=4,000" in e.message
               for e in errors)
    assert len(fits.body) == 3909


def test_connection_close_and_a_socket_the_server_closed_are_not_reused():
    async def close_after(writer):
        writer.write(response())  # says nothing of closing, then closes (an idle timeout)
        await writer.drain()
        return "close"

    async def main():
        async with Canned(lambda n: response(OK, "connection: close") if n <= 2 else close_after) as server:
            client = Client(server.url, {}, timeout_s=5)
            for _ in range(4):
                assert (await client.post(b"{}")).body == OK
                await asyncio.sleep(0.05)
            await client.aclose()
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
            client = Client(server.url, {}, timeout_s=0.5)
            started = time.monotonic()
            assert (await client.post(b"{}")).body.startswith(b'{"slow"')
            assert time.monotonic() - started > 0.9
            started = time.monotonic()
            with pytest.raises(TransportError) as error:
                await client.post(b"{}")
            waited = time.monotonic() - started
            await client.aclose()
            return error.value, waited

    error, waited = run(main())
    assert error.kind == "timeout" and error.retryable and "timeout_s=0.5" in error.message
    assert isinstance(error.__cause__, TimeoutError)  # converted at the boundary, the cause kept
    assert 0.45 < waited < 5


def test_a_cancelled_request_leaves_no_half_read_connection_behind():
    async def main():
        async with Canned(lambda n: (lambda w: asyncio.sleep(30)) if n == 1 else response()) as server:
            client = Client(server.url, {}, timeout_s=5)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.post(b"{}"), 0.2)
            assert (await client.post(b"{}")).body == OK
            await client.aclose()
            return server

    assert run(main()).connections == 2


def test_malformed_http_a_dropped_answer_and_a_refused_connection_are_connection_errors():
    async def drop(writer):
        return "close"

    async def main():
        errors = []
        async with Canned(lambda n: b"NOT HTTP AT ALL\r\n\r\n" if n == 1 else drop) as server:
            client = Client(server.url, {}, timeout_s=5)
            for _ in range(2):
                with pytest.raises(TransportError) as error:
                    await client.post(b"{}")
                errors.append(error.value)
            await client.aclose()
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        client = Client(f"http://127.0.0.1:{port}/v1", {}, timeout_s=5)
        with pytest.raises(TransportError) as error:
            await client.post(b"{}")
        await client.aclose()
        return [*errors, error.value]

    malformed, dropped, refused = run(main())
    assert all(e.kind == "connection_error" and e.retryable for e in (malformed, dropped, refused))
    assert "malformed HTTP response" in malformed.message
    assert "closed before message completed" in dropped.message
    assert "could not connect to http://127.0.0.1:" in refused.message and "refused" in refused.message


def test_the_client_runs_on_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def main():
        async with Canned(lambda n: response()) as server:
            client = Client(server.url, {}, timeout_s=5)
            bodies = await asyncio.gather(*(client.post(b"{}") for _ in range(20)))
            await client.aclose()
            return [b.body for b in bodies], type(asyncio.get_running_loop()).__module__

    bodies, loop_module = uvloop.run(main())
    assert bodies == [OK] * 20 and loop_module.startswith("uvloop")


def test_a_header_value_with_a_line_break_is_refused_without_showing_it():
    with pytest.raises(ValueError) as error:
        Client("http://127.0.0.1:9/v1", {"authorization": "Bearer sk-secret\n"}, timeout_s=5)
    assert "authorization" in str(error.value) and "sk-secret" not in str(error.value)
    with pytest.raises(ValueError, match="only http, https, socks5, socks5h proxies"):
        Client("https://example.invalid/v1", {}, timeout_s=5, proxy="ftp://127.0.0.1:21")


def test_a_proxy_asking_for_credentials_is_not_retried():
    async def main():
        async def refuse(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()
            writer.close()

        proxy = await asyncio.start_server(refuse, "127.0.0.1", 0)
        client = Client("https://127.0.0.1:9/v1", {}, timeout_s=5,
                        proxy=f"http://127.0.0.1:{proxy.sockets[0].getsockname()[1]}")
        with pytest.raises(TransportError) as error:
            await client.post(b"{}")
        await client.aclose()
        proxy.close()
        return error.value

    error = run(main())
    assert error.kind == "connection_error" and not error.retryable
    assert "proxy authorization required" in error.message and "user:password@host" in error.message
