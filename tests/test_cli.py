"""`isf` as a user runs it, in a temporary project, files read back: in this process through
click's runner (`isf`), and where a separate process matters (start-up, signals, the installed
script) as a subprocess (`isf_process`)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_errors, read_jsonl, write_project

REPO = Path(__file__).resolve().parents[1]
ISF = str(Path(sys.executable).with_name("isf"))

PIPELINE = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request


class Demo(Pipeline):
    name = "demo"
    narrative = Pipeline.file_dep("identity/NARRATIVE.md")
    judge = Pipeline.model_dep("judge")
    writer = Pipeline.model_dep("writer")

    def run(self):
        facts = [l[2:] for l in self.narrative.read().splitlines() if l.startswith("- ")]
        records = [{"id": f"f{i}", "fact": f} for i, f in enumerate(facts * 4)]
        return self.run_task(self.task, records=records)

    def task(self, record):
        question = yield model_request(f"ask about {record['fact']}", model=self.judge)
        answer = yield model_request(question.get_text(), model=self.writer)
        a, b = yield [model_request("check a", model=self.judge), model_request("check b", model=self.judge)]
        if record["id"] == "f5":
            raise PipelineError("judge disagreed", error_type="judge_rejected")
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": question.get_text()},
            {"role": "assistant", "content": answer.get_text()}])


if __name__ == "__main__":
    Demo().execute()
'''


def isf(cwd, *args, timeout=60):
    """`isf ARGS` in `cwd`, in this process (click's runner: the same command, its output and
    exit code, without a second second of imports); `isf_process` runs the real executable."""
    import contextlib

    from click.testing import CliRunner

    from shaping.cli import main

    with contextlib.chdir(cwd):
        result = CliRunner().invoke(main, list(args), env={"COLUMNS": "200"}, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess([ISF, *args], result.exit_code, result.stdout, result.stderr)


def isf_process(cwd, *args, timeout=60):
    return subprocess.run([ISF, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200"})


@pytest.fixture
def proj(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "demo.py").write_text(PIPELINE)
    return tmp_path


def data_files(root):
    data = root / "training" / "data"
    return sorted(p.name for p in data.iterdir()) if data.exists() else []


def one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_run_writes_samples_errors_manifest(proj):
    result = isf(proj, "pipeline", "run", "demo")
    assert result.returncode == 0, result.stderr
    samples = read_jsonl(proj / "training/data/demo.jsonl")
    errors = read_errors(proj / "training/data/errors/demo.jsonl")
    assert [s["id"] for s in samples] == [f"f{i}" for i in range(12) if i != 5]
    assert "steps" in samples[0] and len(samples[0]["steps"]) == 4  # annotated by default
    assert [(e["id"], e["error"]) for e in errors] == [("f5", "judge_rejected")]
    assert data_files(proj) == ["demo.jsonl", "demo.manifest.json", "errors"]
    assert "demo: 11 samples, 1 errors from 12 records" in result.stdout
    assert "judge_rejected 1" in result.stdout


def test_no_annotate_limit_and_output_flags(proj, tmp_path):
    out = tmp_path / "elsewhere.jsonl"
    result = isf(proj, "pipeline", "run", "demo", "--limit", "3", "--no-annotate", "-o", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr
    samples = read_jsonl(out)
    assert [set(s) for s in samples] == [{"id", "messages"}] * 3
    assert (tmp_path / "elsewhere.manifest.json").is_file() and not (tmp_path / "errors").exists()  # none failed
    assert "partial" in result.stdout


def test_script_execute_takes_the_same_flags(proj):
    result = subprocess.run([sys.executable, "pipelines/demo.py", "--limit", "2", "--no-annotate"],
                            cwd=proj, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert [s["id"] for s in read_jsonl(proj / "training/data/demo.jsonl")] == ["f0", "f1"]
    help_text = subprocess.run([sys.executable, "pipelines/demo.py", "--help"], cwd=proj,
                               capture_output=True, text=True, timeout=60).stdout
    for flag in ("--limit", "--workers", "--output", "--annotate / --no-annotate"):
        assert flag in help_text


def test_list_shows_name_file_and_deps(proj):
    result = isf(proj, "pipeline", "list")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.strip().startswith("demo"))
    assert "pipelines/demo.py" in row and "identity/NARRATIVE.md" in row and "judge" in row


def test_project_found_from_a_subfolder(proj):
    result = isf(proj / "identity", "pipeline", "run", "demo", "--limit", "1", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert (proj / "training/data/demo.jsonl").is_file()


def test_unknown_pipeline(proj):
    one_line_error(isf(proj, "pipeline", "run", "nope"), "unknown pipeline 'nope'", "known pipelines: demo")


@pytest.mark.parametrize("source, fragment", [
    ("import os\n\n\nx = undefined_name\n", "pipelines/broken.py:4: failed to import: NameError"),
    ("def f(:\n    pass\n", "pipelines/broken.py:1: failed to import: SyntaxError"),
    ("from shaping.pipeline import Pipeline\n\nclass Bad(Pipeline):\n    name = 'Has Spaces'\n",
     "pipelines/broken.py:3: pipeline Bad: name 'Has Spaces' must be lowercase"),
])
def test_pipeline_file_that_fails_to_import(proj, source, fragment):
    (proj / "pipelines" / "broken.py").write_text(source)
    listed = isf(proj, "pipeline", "list")
    assert listed.returncode == 0 and "demo" in listed.stdout
    assert len(listed.stderr.strip().splitlines()) == 1 and listed.stderr.startswith(f"BROKEN {fragment}")
    assert isf(proj, "pipeline", "run", "demo").returncode == 0  # the neighbour runs as usual
    assert "demo.jsonl" in data_files(proj)


def test_missing_file_dep(proj):
    (proj / "identity" / "NARRATIVE.md").unlink()
    one_line_error(isf(proj, "pipeline", "run", "demo"), "file_dep narrative: identity/NARRATIVE.md not found")
    assert data_files(proj) == []


def test_unknown_model(proj):
    (proj / "pipelines" / "demo.py").write_text(PIPELINE.replace('model_dep("writer")', 'model_dep("ghost")'))
    one_line_error(isf(proj, "pipeline", "run", "demo"), "unknown model 'ghost'", "known models: flaky, judge, writer")


def test_yield_of_non_request(proj):
    (proj / "pipelines" / "demo.py").write_text(PIPELINE.replace(
        'question = yield model_request(f"ask about {record[\'fact\']}", model=self.judge)',
        'question = yield {"role": "user"}'))
    one_line_error(isf(proj, "pipeline", "run", "demo"), "task Demo.task (record 'f0') yielded dict")
    assert data_files(proj) == []


def test_run_returning_non_samples(proj):
    (proj / "pipelines" / "demo.py").write_text(PIPELINE.replace(
        "return self.run_task(self.task, records=records)", "return 'oops'"))
    one_line_error(isf(proj, "pipeline", "run", "demo"), "run() returned str 'oops'")
    assert data_files(proj) == []


@pytest.mark.parametrize("value", ["0", "-2"])
def test_limit_must_be_positive(proj, value):
    one_line_error(isf(proj, "pipeline", "run", "demo", "--limit", value), f"--limit must be at least 1, got {value}")
    assert data_files(proj) == []


def test_output_in_missing_folder(proj, tmp_path):
    one_line_error(isf(proj, "pipeline", "run", "demo", "-o", str(tmp_path / "no" / "x.jsonl")),
                   "does not exist")
    assert not (tmp_path / "no").exists() and data_files(proj) == []


def test_no_project(tmp_path):
    one_line_error(isf(tmp_path, "pipeline", "list"), "no shaping.toml found")


def test_bad_shaping_toml_names_the_field(proj):
    (proj / "shaping.toml").write_text('[models.judge]\nprovider = "mock"\nmodel = "m"\nmax_concurrency = "lots"\n')
    one_line_error(isf(proj, "pipeline", "list"), "shaping.toml: models.judge.max_concurrency:", "'lots'")


def test_the_shipped_example_pipeline_runs(tmp_path):
    import shutil

    for part in ("shaping.toml", "pipelines", "identity"):  # a copy: the run's cache and history go there
        (shutil.copytree if (REPO / part).is_dir() else shutil.copy)(REPO / part, tmp_path / part)
    out = tmp_path / "identity-qa.jsonl"
    result = isf(tmp_path, "pipeline", "run", "identity-qa", "-o", str(out))
    assert result.returncode == 0, result.stderr
    samples = read_jsonl(out)
    assert len(samples) == 8 and all(len(s["steps"]) == 4 for s in samples)
    assert samples[0]["messages"][0]["role"] == "system"


def test_debug_shows_the_chain_of_causes_and_still_ends_on_the_one_line(proj):
    (proj / "shaping.toml").write_text("[models.judge]\nprovider = 'mock'\nmodel = ")  # invalid TOML
    plain = isf(proj, "pipeline", "list")
    assert plain.returncode == 1 and len(plain.stderr.strip().splitlines()) == 1
    assert plain.stderr.startswith("error: ") and "invalid TOML" in plain.stderr
    debug = isf(proj, "--debug", "pipeline", "list")
    lines = debug.stderr.strip().splitlines()
    assert debug.returncode == 1 and lines[-1] == plain.stderr.strip()
    assert "TOMLDecodeError" in debug.stderr and "The above exception was the direct cause" in debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr


def test_the_installed_script_runs_as_a_process(proj):
    """The other tests run `isf` in this process; this one the installed executable."""
    listed = isf_process(proj, "pipeline", "list")
    assert listed.returncode == 0 and "demo" in listed.stdout
    bad = isf_process(proj, "pipeline", "run", "nope")
    assert bad.returncode == 1 and bad.stderr.startswith("error: unknown pipeline 'nope'")


def test_piped_output_keeps_long_values_on_their_line(tmp_path):
    url = "http://127.0.0.1:36547/v1/a/rather/long/path/to/an/endpoint"
    write_project(tmp_path, f'[models.far]\nprovider = "openai"\nbase_url = "{url}"\nmodel = "a-long-model-name"\n')
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}  # as a pipe, a file or CI's log has it
    listed = subprocess.run([ISF, "models"], cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env)
    assert listed.returncode == 0 and url in listed.stdout, listed.stdout  # not split at rich's 80 columns
