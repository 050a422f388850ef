"""The openai and anthropic providers against real HTTP servers on 127.0.0.1."""

import time

import anyio
import pytest

from shaping import run_pipeline
from shaping.config import Project
from shaping.dispatch import Dispatcher
from shaping.errors import ConfigError
from shaping.pipeline import Pipeline, TrainingSample, model_request
from tests.conftest import write_project
from tests.servers import Fault, LoopbackServer

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
def tls(tmp_path):
    """(server context, CA bundle path): a certificate for 127.0.0.1 from a CA made for the test."""
    import ssl

    import trustme

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
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
    from tests.servers.proxy import ForwardProxy

    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://user%40corp:p%3Ass@127.0.0.1:{proxy.port}")
        (response,) = send(project_for(tmp_path, openai_server), model_request("hi", model="m"))
    assert response.is_success and response.get_text() == "echo: hi"
    assert proxy.request_lines == [f"POST {openai_server.base_url}/chat/completions HTTP/1.1"]
    assert proxy.credentials == ["Basic dXNlckBjb3JwOnA6c3M="]  # base64 of "user@corp:p:ss"
    assert "proxy-authorization" not in {k.lower() for k in openai_server.received[0].headers}


def test_https_goes_through_a_connect_tunnel(tmp_path, tls, monkeypatch, no_proxy_settings):
    from tests.servers.proxy import ForwardProxy

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


def test_a_key_pasted_with_its_newline_still_works(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("SHAPING_TEST_KEY", KEY + "\n")
    (response,) = send(project_for(tmp_path, openai_server), model_request("hi", model="m"))
    assert response.is_success
