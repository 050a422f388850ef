"""Providers from outside shaping: a package naming one in the `shaping.providers` entry-point
group, and one given to `shaping.providers.register` in a pipeline file; both in a plain run and
in a local Ray run (whose workers are other processes: they find the entry point in the
installed packages, and get the registered one with each shard)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shaping import run_pipeline
from shaping.discovery import discover
from shaping.pipeline import Pipeline, TrainingSample, model_request
from shaping.providers import registry
from tests.conftest import write_project

ROOT = Path(__file__).resolve().parent.parent

PLUGIN = '''
from shaping.providers import Provider
from shaping.requests import ModelResponse


class EchoProvider(Provider):
    """Answers the last message, upper-cased: the same answer in every process."""

    async def generate_batch(self, requests):
        return [ModelResponse(model=self.config.model, text="echo: " + r.messages[-1].text.upper(),
                              finish_reason="stop") for r in requests]
'''

PIPELINE_FILE = '''
from shaping import Pipeline, TrainingSample, model_request
from shaping.providers import Provider, register
from shaping.requests import ModelResponse


class Shouty(Provider):
    async def generate_batch(self, requests):
        return [ModelResponse(model=self.config.model, text=r.messages[-1].text.upper() + "!",
                              finish_reason="stop") for r in requests]


register("shouty", Shouty)


class Loud(Pipeline):
    name = "loud"
    annotated = False
    voice = Pipeline.model_dep("voice")

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{i}"} for i in range(12)])

    def task(self, record):
        answer = yield model_request(f"say {record['id']}", model=self.voice)
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": f"say {record['id']}"},
            {"role": "assistant", "content": answer.get_text()}])
'''


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """A package installed the way pip leaves one: its module and a dist-info folder whose
    entry_points.txt names its provider, in a folder on sys.path (and on PYTHONPATH for
    subprocesses and Ray workers); nothing is installed into the venv."""
    folder = tmp_path_factory.mktemp("site")
    (folder / "shaping_echo_plugin.py").write_text(PLUGIN)
    info = folder / "shaping_echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shaping-echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[shaping.providers]\necho = shaping_echo_plugin:EchoProvider\n")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("shaping_echo_plugin", None)
    registry._LOADED.pop("echo", None)


@pytest.fixture(scope="module")
def local_ray(plugin_dir):
    ray = pytest.importorskip("ray", reason="Ray is installed by `make test` (the ray extra)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}})
    yield
    ray.shutdown()


class Echoes(Pipeline):
    name = "echoes"
    annotated = False
    echo = Pipeline.model_dep("echo")

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{i}"} for i in range(12)])

    def task(self, record):
        answer = yield model_request(f"hello {record['id']}", model=self.echo)
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": f"hello {record['id']}"},
            {"role": "assistant", "content": answer.get_text()}])


def echo_project(root):
    return write_project(root, '[models.echo]\nprovider = "echo"\nmodel = "e1"\n')


def expected_echoes():
    return [f"echo: HELLO R{i}" for i in range(12)]


def answers(result):
    import json

    return [json.loads(line)["messages"][-1]["content"] for line in result.paths.samples.read_text().splitlines()]


@pytest.fixture
def loud_project(tmp_path):
    project = write_project(tmp_path, '[models.voice]\nprovider = "shouty"\nmodel = "v1"\n')
    (project.pipelines_dir / "loud.py").write_text(PIPELINE_FILE)
    yield project
    registry.PROVIDERS.pop("shouty", None)


def test_built_in_providers_are_entry_points():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="shaping.providers")}
    assert names["mock"] == "shaping.providers.mock:MockProvider"
    assert {"mock", "openai", "anthropic", "transformers"} <= set(names)
    assert not {"mock", "openai", "anthropic", "transformers"} & set(registry.registrations())


def test_an_installed_package_provider_is_found_and_loaded_only_when_used(plugin_dir):
    code = textwrap.dedent("""
        import sys
        from shaping.config import ModelConfig
        from shaping.providers.registry import create_provider, provider_names
        assert "echo" in provider_names() and "mock" in provider_names()
        assert "shaping_echo_plugin" not in sys.modules and "shaping.providers.transformers" not in sys.modules
        provider = create_provider("e", ModelConfig(provider="echo", model="e1"))
        assert type(provider).__module__ == "shaping_echo_plugin", type(provider)
        assert "torch" not in sys.modules and "shaping.providers.openai" not in sys.modules
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_an_installed_package_provider_in_a_plain_run(tmp_path, plugin_dir):
    result = run_pipeline(Echoes(echo_project(tmp_path)))
    assert answers(result) == expected_echoes()
    assert result.manifest.model_deps["echo"].provider == "echo"


def test_a_provider_registered_in_the_pipeline_file_in_a_plain_run(loud_project):
    pipeline = discover(loud_project)["loud"].cls(loud_project)
    assert answers(run_pipeline(pipeline)) == [f"SAY R{i}!" for i in range(12)]


def test_a_broken_plugin_is_named_in_one_line(tmp_path, monkeypatch):
    from shaping.config import ModelConfig
    from shaping.errors import ConfigError

    registry.register("broken", "no_such_module_here:Provider")
    try:
        with pytest.raises(ConfigError, match=r"^shaping.toml: models.m.provider: provider 'broken' could not be "
                                              r"loaded \(registered as 'no_such_module_here:Provider'\): "
                                              r"ModuleNotFoundError: No module named 'no_such_module_here'$"):
            registry.create_provider("m", ModelConfig(provider="broken", model="x"))
    finally:
        registry.PROVIDERS.pop("broken")


def test_an_installed_package_provider_in_a_ray_run(tmp_path, plugin_dir, local_ray):
    result = run_pipeline(Echoes(echo_project(tmp_path)), executor="ray")
    assert answers(result) == expected_echoes()
    assert result.manifest.counts.samples == 12 and not result.paths.errors.exists()


def test_a_provider_registered_in_the_pipeline_file_in_a_ray_run(loud_project, local_ray):
    pipeline = discover(loud_project)["loud"].cls(loud_project)
    result = run_pipeline(pipeline, executor="ray")
    assert answers(result) == [f"SAY R{i}!" for i in range(12)]
    assert result.manifest.counts.samples == 12 and not result.paths.errors.exists()


def test_isf_models_providers_lists_what_a_provider_may_name(tmp_path, plugin_dir):
    isf = str(Path(sys.executable).with_name("isf"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
    done = subprocess.run([isf, "models", "--providers", "--json"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60)  # no shaping.toml needed
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)["providers"]}
    assert rows["echo"] == {"name": "echo", "from": "package shaping-echo-plugin",
                            "serves": "shaping_echo_plugin:EchoProvider"}
    assert rows["openai"]["from"] == "package shaping" and rows["openai"]["serves"].endswith(":OpenAIProvider")
    assert rows["ollama"] == {"name": "ollama", "from": "named host", "serves": "openai at http://localhost:11434/v1"}
    assert "shaping_echo_plugin" not in done.stderr
    table = subprocess.run([isf, "models", "--providers"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=60)
    assert any(line.split()[:3] == ["echo", "package", "shaping-echo-plugin"] for line in table.stdout.splitlines())


def test_a_registered_provider_is_listed_over_the_entry_point_of_its_name():
    registry.register("mock", "somewhere.else:Provider")
    try:
        rows = [row for row in registry.catalogue() if row["name"] == "mock"]
        assert rows == [{"name": "mock", "from": "register()", "serves": "somewhere.else:Provider"}]
    finally:
        registry.PROVIDERS.pop("mock", None)
