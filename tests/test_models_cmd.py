"""`isf models`: every model of shaping.toml with its provider, host, key variable and prices;
`--check` sends each one tiny request (loopback servers only) and reports latency or the error."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_project
from shaping.testing import Fault, LoopbackServer

ISF = str(Path(sys.executable).with_name("isf"))
#: a key value that must never be printed, whole or its start
SENTINEL = "sk-SENTINEL-0123456789-abcdef"
#: variables the tests set or leave unset; cleared from the environment isf runs in
KEY_VARS = ("XAI_API_KEY", "TOGETHER_API_KEY", "OPENAI_API_KEY", "SHAPING_TEST_KEY")


def isf(cwd, *args, env=None, timeout=120):
    base = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    return subprocess.run([ISF, "models", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**base, "COLUMNS": "250", **(env or {})})


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_json(result):
    return {row["name"]: row for row in json.loads(result.stdout)["models"]}


HOSTED = """
[models.judge]
provider = "mock"
model = "mock-judge"

[models.grok]
provider = "xai"
model = "grok-4"

[models.tog]
provider = "together"
model = "meta-llama/Llama-3.3-70B-Instruct-Turbo"

[models.gpt]
model = "gpt-4o-mini"
api_key_env = "OPENAI_API_KEY"

[models.local]
provider = "ollama"
model = "llama3.2"

[models.gpu]
provider = "vllm"
model = "Qwen/Qwen3-8B"
"""


def test_the_table_shows_every_model_its_host_key_variable_and_prices(tmp_path):
    write_project(tmp_path, HOSTED)
    result = isf(tmp_path, env={"XAI_API_KEY": SENTINEL})
    assert result.returncode == 1, result.stderr  # the vllm model without a base_url cannot run
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert lines["model"].split() == ["model", "provider", "model", "id", "host", "key", "prices"]
    assert "mock" in lines["judge"] and "local" in lines["judge"] and "free (local or self-hosted)" in lines["judge"]
    assert "xai (preset over openai)" in lines["grok"] and "https://api.x.ai/v1" in lines["grok"]
    assert "XAI_API_KEY set" in lines["grok"]
    assert "https://api.together.ai/v1" in lines["tog"] and "TOGETHER_API_KEY unset" in lines["tog"]
    assert "openai (from the model id)" in lines["gpt"] and "$0.15 in / $0.60 out per M tokens" in lines["gpt"]
    assert "built-in list price of gpt-4o-mini" in result.stdout
    assert "http://localhost:11434/v1" in lines["local"] and "free (local or self-hosted)" in lines["local"]
    # vllm without a base_url: listed, and its problem said in one line
    assert "gpu: problem: shaping.toml: models.gpu.base_url: required by provider 'vllm'" in result.stdout
    assert SENTINEL not in result.stdout + result.stderr and SENTINEL[:8] not in result.stdout + result.stderr


def test_json_lists_the_same_and_never_a_key(tmp_path):
    write_project(tmp_path, HOSTED)
    result = isf(tmp_path, "--json", env={"XAI_API_KEY": SENTINEL, "TOGETHER_API_KEY": "  "})
    assert result.returncode == 1, result.stderr  # gpu (vllm, no base_url) cannot run
    rows = as_json(result)
    assert list(rows) == ["judge", "grok", "tog", "gpt", "local", "gpu"]
    assert rows["grok"]["key"] == {"env": "XAI_API_KEY", "set": True}
    assert rows["tog"]["key"] == {"env": "TOGETHER_API_KEY", "set": False}  # blank is not set
    assert rows["local"]["key"] is None and rows["judge"]["key"] is None
    assert rows["grok"]["preset_of"] == "openai" and rows["judge"]["preset_of"] is None
    assert rows["gpt"]["inferred"] and rows["gpt"]["provider"] == "openai"
    assert rows["gpt"]["prices"]["input"] == 0.15 and rows["gpt"]["prices"]["source"].startswith("built-in")
    assert rows["tog"]["prices"] is None
    assert rows["judge"]["host"] == "local" and rows["local"]["host"] == ["http://localhost:11434/v1"]
    assert rows["gpu"]["host"] is None and "required by provider 'vllm'" in rows["gpu"]["problem"]
    assert all(row["problem"] is None for name, row in rows.items() if name != "gpu")
    assert "check" not in rows["judge"]
    assert SENTINEL not in result.stdout + result.stderr


def test_names_choose_models_and_an_unknown_one_is_one_line(tmp_path):
    write_project(tmp_path, HOSTED)
    assert list(as_json(isf(tmp_path, "local", "judge", "--json"))) == ["local", "judge"]
    result = isf(tmp_path, "nope")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().startswith("error: ") and "unknown model 'nope'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture
def server():
    with LoopbackServer("openai") as s:
        yield s


def served(server, down_port):
    return f"""
[models.judge]
provider = "mock"
model = "mock-judge"

[models.local]
provider = "ollama"
model = "llama3.2"
base_url = "{server.base_url}"

[models.gpu]
provider = "vllm"
model = "Qwen/Qwen3-8B"
base_url = "{server.base_url}"
[models.gpu.params]
temperature = 0.6
max_tokens = 4096

[models.down]
provider = "vllm"
model = "Qwen/Qwen3-8B"
base_url = "http://127.0.0.1:{down_port}/v1"
"""


def test_check_reports_latency_of_each_model_and_fails_when_a_server_is_down(tmp_path, server):
    write_project(tmp_path, served(server, closed_port()))
    result = isf(tmp_path, "--check")
    assert result.returncode == 1, result.stdout + result.stderr
    checks = {line.split()[0]: line for line in result.stdout.split("\n\n", 1)[1].splitlines() if line.strip()}
    for name in ("judge", "local", "gpu"):
        assert checks[name].split()[1:3] == ["ok", "in"] and checks[name].endswith(" s"), checks[name]
    assert checks["down"].split()[1] == "error:"
    assert "connection_error: could not connect to http://127.0.0.1:" in checks["down"]
    assert "1 of 4 checks failed" in result.stdout
    # one tiny request each, through the provider: the table's params, a few tokens
    bodies = sorted((r.body for r in server.received), key=lambda b: b["model"])
    assert [b["model"] for b in bodies] == ["Qwen/Qwen3-8B", "llama3.2"]
    assert bodies[0]["max_tokens"] == 8 and bodies[0]["temperature"] == 0.6
    assert bodies[1]["messages"] == [{"role": "user", "content": "Reply with the word OK."}]
    assert all("authorization" not in {k.lower() for k in r.headers} for r in server.received)  # no key


def test_check_of_named_models_that_answer_exits_zero_json(tmp_path, server):
    write_project(tmp_path, served(server, closed_port()))
    result = isf(tmp_path, "--check", "--json", "local", "judge", "gpu")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = as_json(result)
    assert list(rows) == ["local", "judge", "gpu"]
    for row in rows.values():
        assert row["check"]["ok"] is True and row["check"]["error"] is None
        assert isinstance(row["check"]["latency_s"], float) and 0 <= row["check"]["latency_s"] < 30
    assert rows["local"]["check"]["served_model"] == "llama3.2"

    down = isf(tmp_path, "--check", "--json", "down")
    assert down.returncode == 1
    check = as_json(down)["down"]["check"]
    assert check["ok"] is False and check["latency_s"] is None and check["error"].startswith("connection_error")


def test_checks_run_at_once(tmp_path):
    with LoopbackServer("openai", latency_s=1.5) as slow:
        write_project(tmp_path, "".join(f'[models.m{i}]\nprovider = "vllm"\nmodel = "q{i}"\nbase_url = "{slow.base_url}"\n'
                                        for i in range(3)))
        result = isf(tmp_path, "--check")
        assert result.returncode == 0, result.stdout + result.stderr
        arrivals = sorted(r.at for r in slow.received)
    assert len(arrivals) == 3 and arrivals[-1] - arrivals[0] < 1.0  # all sent before any answered


def test_a_missing_key_is_reported_without_sending(tmp_path, server):
    write_project(tmp_path, f'[models.tog]\nprovider = "together"\nmodel = "x"\nbase_url = "{server.base_url}"\n')
    result = isf(tmp_path, "--check")
    assert result.returncode == 1
    assert "tog  error: model 'tog': environment variable TOGETHER_API_KEY is not set" in result.stdout
    assert server.received == []


def test_a_rejected_key_is_an_error_line_that_never_shows_the_key(tmp_path):
    with LoopbackServer("openai", api_key="the-right-key") as guarded:  # it echoes the key it was given
        write_project(tmp_path, f'[models.grok]\nprovider = "xai"\nmodel = "grok-4"\nbase_url = "{guarded.base_url}"\n')
        result = isf(tmp_path, "--check", env={"XAI_API_KEY": SENTINEL})
        assert guarded.received[0].headers["Authorization"] == f"Bearer {SENTINEL}"  # it was sent
    assert result.returncode == 1
    assert "grok  error: auth_error: HTTP 401" in result.stdout and "check XAI_API_KEY" in result.stdout
    assert SENTINEL not in result.stdout + result.stderr and SENTINEL[:8] not in result.stdout + result.stderr


def test_a_check_that_hangs_is_cut_at_the_timeout(tmp_path, server):
    server.fail_next(Fault(hang=True))
    write_project(tmp_path, f'[models.local]\nprovider = "ollama"\nmodel = "m"\nbase_url = "{server.base_url}"\n')
    result = isf(tmp_path, "--check", "--timeout", "1")
    assert result.returncode == 1
    assert "local  error: timeout: no answer within --timeout 1 s" in result.stdout


def test_a_config_problem_fails_the_check(tmp_path):
    write_project(tmp_path, '[models.gpu]\nprovider = "vllm"\nmodel = "q"\n')
    result = isf(tmp_path, "--check")
    assert result.returncode == 1
    assert "gpu  error: shaping.toml: models.gpu.base_url: required by provider 'vllm'" in result.stdout


def test_a_transformers_model_is_checked_only_when_named(tmp_path):
    pytest.importorskip("torch")
    from tests.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "tiny")
    write_project(tmp_path, f'[models.judge]\nprovider = "mock"\nmodel = "j"\n\n'
                            f'[models.tiny]\nprovider = "transformers"\nmodel = "{folder}"\n'
                            f'[models.tiny.options]\ndevice = "cpu"\n')
    every = isf(tmp_path, "--check", "--json")
    assert every.returncode == 0, every.stdout + every.stderr
    tiny = as_json(every)["tiny"]["check"]
    assert tiny["ok"] is False and "name it to check it (isf models --check tiny)" in tiny["skipped"]
    named = isf(tmp_path, "--check", "tiny", env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert named.returncode == 0, named.stdout + named.stderr
    assert "tiny  ok in " in named.stdout
