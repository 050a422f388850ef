"""Manifests and `isf pipeline status`: every reason a pipeline goes stale, and --stale order."""

import json
import subprocess

from shaping import run_pipeline
from shaping.config import Project
from shaping.discovery import discover
from shaping.staleness import project_status
from tests.conftest import write_project
from tests.test_cli import isf

CHAIN = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request
{imports}

class {cls}(Pipeline):
    name = "{name}"
    source = Pipeline.file_dep("{source}")
    judge = Pipeline.model_dep("judge")

    def run(self):
        lines = [l for l in self.source.read().splitlines() if l.strip()]
        return self.run_task(self.task, records=[{{"id": str(i), "text": l}} for i, l in enumerate(lines)])

    def task(self, record):
        answer = yield model_request({prompt}, model=self.judge)
        return TrainingSample(id=record["id"], messages=[
            {{"role": "user", "content": record["text"][:40]}}, {{"role": "assistant", "content": answer.get_text()}}])
'''


def add_pipeline(root, name, source, imports="", prompt='"say " + record["text"][:40]'):
    cls = "".join(part.title() for part in name.split("-"))
    (root / "pipelines" / f"{name.replace('-', '_')}.py").write_text(
        CHAIN.format(cls=cls, name=name, source=source, imports=imports, prompt=prompt))


def fresh(project):
    return Project.load(project.root)  # as each `isf` command does


def statuses(project):
    project = fresh(project)
    return {name: (s.state, [r.code for r in s.reasons]) for name, s in project_status(fresh(project), discover(project)).items()}


def run(project, name, **options):
    project = fresh(project)
    return run_pipeline(discover(project)[name].cls(project), **options)


def test_each_reason_in_turn(tmp_path):
    project = write_project(tmp_path)
    (tmp_path / "pipelines" / "helpers.py").write_text("PREFIX = 'say '\n")
    add_pipeline(tmp_path, "alpha", "identity/NARRATIVE.md", imports="from helpers import PREFIX",
                 prompt='PREFIX + record["text"]')
    assert statuses(project) == {"alpha": ("MISSING", [])}

    run(project, "alpha", limit=2)
    assert statuses(project) == {"alpha": ("PARTIAL", ["partial_run"])}
    assert project_status(fresh(project), discover(project))["alpha"].headline() == "PARTIAL (2 samples)"

    run(project, "alpha")
    assert statuses(project) == {"alpha": ("CURRENT", [])}
    manifest = json.loads((tmp_path / "training/data/alpha.manifest.json").read_text())
    assert set(manifest["pipeline_sources"]) == {"pipelines/alpha.py", "pipelines/helpers.py"}

    narrative = tmp_path / "identity" / "NARRATIVE.md"
    narrative.write_text(narrative.read_text() + "- fact four\n")
    assert statuses(project) == {"alpha": ("STALE", ["changed_file"])}
    run(project, "alpha")

    toml = tmp_path / "shaping.toml"
    toml.write_text(toml.read_text().replace("temperature = 0.2", "temperature = 0.9"))
    assert statuses(project) == {"alpha": ("STALE", ["changed_model"])}
    run(project, "alpha")

    (tmp_path / "shaping.toml").write_text(toml.read_text().replace('[models.writer]', '[models.writer]\nmax_concurrency = 2'))
    assert statuses(project) == {"alpha": ("CURRENT", [])}  # concurrency does not change answers

    (tmp_path / "pipelines" / "helpers.py").write_text("PREFIX = 'tell '\n")
    status = project_status(fresh(project), discover(project))["alpha"]
    assert (status.state, [r.message for r in status.reasons]) == (
        "STALE", ["pipeline code changed (pipelines/helpers.py)"])
    run(project, "alpha")

    output = tmp_path / "training/data/alpha.jsonl"
    output.write_text(output.read_text().replace("fact", "FACT"))
    assert statuses(project) == {"alpha": ("STALE", ["edited_output"])}
    output.unlink()
    assert statuses(project) == {"alpha": ("STALE", ["missing_output"])}
    run(project, "alpha")

    manifest_path = tmp_path / "training/data/alpha.manifest.json"
    manifest_path.write_text('{"pipeline": "alpha", "limit": "lots"')
    status = project_status(fresh(project), discover(project))["alpha"]
    assert status.state == "STALE" and status.reasons[0].code == "bad_manifest"
    assert "manifest unreadable" in status.reasons[0].message
    manifest_path.write_text(json.dumps({**manifest, "counts": "many"}))
    assert "counts" in project_status(fresh(project), discover(project))["alpha"].reasons[0].message
    run(project, "alpha")
    assert statuses(project) == {"alpha": ("CURRENT", [])}

    toml.write_text(toml.read_text().replace("models.judge", "models.judge-renamed"))
    assert statuses(project) == {"alpha": ("STALE", ["missing_model"])}


def test_status_cli_text_json_and_check(tmp_path):
    write_project(tmp_path)
    add_pipeline(tmp_path, "alpha", "identity/NARRATIVE.md")
    result = isf(tmp_path, "pipeline", "status", "--check")
    assert result.returncode == 1 and result.stdout.strip() == "alpha: MISSING"
    assert isf(tmp_path, "pipeline", "status").returncode == 0
    assert isf(tmp_path, "pipeline", "run", "alpha", "-q").returncode == 0
    result = isf(tmp_path, "pipeline", "status", "--check", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == [{"name": "alpha", "state": "CURRENT", "samples": 4, "reasons": []}]
    (tmp_path / "identity" / "NARRATIVE.md").write_text("- changed\n")
    result = isf(tmp_path, "pipeline", "status", "alpha")
    assert result.stdout.splitlines() == ["alpha: STALE", "  file 'source' content changed (identity/NARRATIVE.md)"]
    again = isf(tmp_path, "pipeline", "run", "alpha")
    assert again.returncode == 0 and "alpha: 1 samples" in again.stdout
    skipped = isf(tmp_path, "pipeline", "run", "alpha")
    assert "alpha is CURRENT (1 samples): nothing to do" in skipped.stdout


def test_stale_runs_a_chain_upstream_first(tmp_path):
    project = write_project(tmp_path)
    add_pipeline(tmp_path, "c-last", "training/data/b-middle.jsonl")
    add_pipeline(tmp_path, "a-first", "identity/NARRATIVE.md")
    add_pipeline(tmp_path, "b-middle", "training/data/a-first.jsonl")

    result = isf(tmp_path, "pipeline", "run", "--stale", "-q")
    assert result.returncode == 0, result.stderr
    started = {n: json.loads((tmp_path / f"training/data/{n}.manifest.json").read_text())["started_at"]
               for n in ("a-first", "b-middle", "c-last")}
    assert started["a-first"] < started["b-middle"] < started["c-last"]
    assert all(s == ("CURRENT", []) for s in statuses(project).values())

    (tmp_path / "identity" / "NARRATIVE.md").write_text("- only one fact now\n")
    assert statuses(project) == {
        "a-first": ("STALE", ["changed_file"]),
        "b-middle": ("STALE", ["stale_upstream"]),
        "c-last": ("STALE", ["stale_upstream"]),
    }
    text = isf(tmp_path, "pipeline", "status").stdout
    assert "  depends on stale pipeline a-first" in text and "  depends on stale pipeline b-middle" in text

    result = isf(tmp_path, "pipeline", "run", "--stale")
    assert result.returncode == 0, result.stderr
    order = [line.split(":")[0] for line in result.stdout.splitlines() if line.endswith(", running")]
    assert order == ["a-first", "b-middle", "c-last"]
    assert all(s == ("CURRENT", []) for s in statuses(project).values())
    assert isf(tmp_path, "pipeline", "run", "--stale").stdout.count("nothing to do") == 3


def test_cycle_is_reported(tmp_path):
    write_project(tmp_path)
    add_pipeline(tmp_path, "x", "training/data/y.jsonl")
    add_pipeline(tmp_path, "y", "training/data/x.jsonl")
    result = isf(tmp_path, "pipeline", "status")
    assert result.returncode == 1 and "cycle" in result.stderr


def test_run_without_name_or_stale_is_a_usage_error(tmp_path):
    write_project(tmp_path)
    result = isf(tmp_path, "pipeline", "run")
    assert result.returncode == 2 and "--stale" in result.stderr


def test_outside_a_git_repository_the_manifest_says_so_and_inside_it_records_the_commit(tmp_path):
    project = write_project(tmp_path)
    add_pipeline(tmp_path, "alpha", "identity/NARRATIVE.md")
    assert run(project, "alpha").manifest.git.note == "not a git repository"
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    git = run(project, "alpha", output=tmp_path / "again.jsonl").manifest.git
    assert git.commit == commit and git.dirty is True  # training/ was written since the commit


def test_local_imports_are_found_at_any_depth(tmp_path):
    from shaping.manifest import local_imports

    pipelines = tmp_path / "pipelines"
    (pipelines / "pkg").mkdir(parents=True)
    for name in ("top.py", "in_function.py", "in_handler.py", "in_else.py", "in_match.py", "chained.py",
                 "pkg/__init__.py", "unused.py"):
        (pipelines / name).write_text("")
    (pipelines / "in_function.py").write_text("import chained\n")
    source = pipelines / "p.py"
    source.write_text(
        "import top, os\n"
        "class P:\n    def task(self):\n        from pipelines.in_function import x\n"
        "try:\n    pass\nexcept ImportError:\n    import in_handler\n"
        "if False:\n    pass\nelse:\n    from pkg import thing\n"
        "for _ in ():\n    pass\nelse:\n    import in_else\n"
        "match 1:\n    case 1:\n        import in_match\n"
        "value = [i for i in 'import unused']\n")
    found = {p.relative_to(pipelines).as_posix() for p in local_imports(source, pipelines)}
    assert found == {"top.py", "in_function.py", "chained.py", "in_handler.py", "pkg/__init__.py",
                     "in_else.py", "in_match.py"}
