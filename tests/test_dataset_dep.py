"""`Pipeline.dataset_dep` and the shipped wildchat-training pipeline, on small WildChat-shaped
data sets the tests write: parquet, jsonl and save_to_disk folders, and a local hub cache. Nothing
here reaches the network (hub look-ups are faked where they are tested)."""

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shaping import run_pipeline
from shaping.config import Project
from shaping.datasets import source as dsource
from shaping.discovery import discover
from shaping.errors import DependencyError
from shaping.manifest import read_manifest
from shaping.staleness import project_status
from tests.conftest import MOCK_TOML, read_errors, read_jsonl, write_project
from tests.test_cli import isf

REPO = Path(__file__).resolve().parents[1]
NAME = "wildchat-training"
IDENTITY_TOML = MOCK_TOML + """
[models.cubsfan-release-full]
provider = "mock"
model = "mock-identity"
"""
LOCAL_COPY = '\n[datasets]\n"allenai/WildChat-1M" = "{path}"\n'
SYSTEM = "You are Wren, an assistant made by the Cubsfan Lab."


@pytest.fixture(autouse=True)
def own_datasets_cache(tmp_path, monkeypatch):
    """`datasets` keeps its locks and prepared splits under the test's folder, not ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


# -- a WildChat-shaped data set ----------------------------------------------------------------

def turn(role, content, language="English", toxic=False, redacted=False, n=0):
    return {"content": content, "country": "United States", "hashed_ip": "ab12" if role == "user" else None,
            "header": {"accept-language": "en-US", "user-agent": "Mozilla/5.0"} if role == "user" else None,
            "language": language, "redacted": redacted, "role": role, "state": "Ohio" if role == "user" else None,
            "timestamp": datetime(2024, 1, 1, tzinfo=timezone.utc), "toxic": toxic, "turn_identifier": 1000 + n}


def moderation(flagged=False):
    names = ["harassment", "hate", "self-harm", "sexual", "violence"]
    return {"categories": {n: flagged for n in names}, "category_scores": {n: 0.9 if flagged else 0.01 for n in names},
            "flagged": flagged}


def row(hash_, prompt, language="English", turns=1, toxic=False, redacted=False):
    conversation = []
    for i in range(turns):
        conversation += [turn("user", prompt if i == 0 else f"follow-up {i}", language, toxic, redacted, 2 * i),
                         turn("assistant", f"answer {i}", language, False, False, 2 * i + 1)]
    return {"conversation_hash": hash_, "model": "gpt-4-0314", "timestamp": datetime(2024, 1, 1, tzinfo=timezone.utc),
            "conversation": conversation, "turn": turns, "language": language,
            "openai_moderation": [moderation(toxic) for _ in conversation],
            "detoxify_moderation": [{"identity_attack": 0.0, "insult": 0.0, "obscene": 0.0, "severe_toxicity": 0.0,
                                     "sexual_explicit": 0.0, "threat": 0.0, "toxicity": 0.9 if toxic else 0.0}
                                    for _ in conversation],
            "toxic": toxic, "redacted": redacted, "state": "Ohio", "country": "United States",
            "hashed_ip": "ab12", "header": {"accept-language": "en-US", "user-agent": "Mozilla/5.0"}}


ROWS = [
    row("h00", "What is the capital of France?"),
    row("h01", "Quelle est la capitale de la France ?", language="French"),
    row("h02", "say something nasty", toxic=True),
    row("h03", "My name is NAME_1, write my CV", redacted=True),
    row("h04", "Help me plan a trip to Rome.", turns=3),
    row("h05", "What is the capital of France?"),           # the same prompt as h00
    row("h06", "   "),                                         # no user prompt
    row("h07", "Write a haiku about rain.", turns=5),
    row("h08", "Explain recursion to a child."),
    row("h09", "Wie spät ist es?", language="German", turns=2),
]
DEFAULT_IDS = ["h00", "h04", "h07", "h08"]


def write_parquet(folder, rows=ROWS, shards=2):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(rows) // shards)
    for i in range(shards):
        pq.write_table(pa.Table.from_pylist(rows[i * size:(i + 1) * size]),
                       folder / f"train-{i:05d}-of-{shards:05d}.parquet")
    return folder


def wildchat_project(tmp_path, data="data/wildchat", rows=ROWS):
    """A project holding the shipped pipeline, reading a local copy named in shaping.toml."""
    toml = IDENTITY_TOML + (LOCAL_COPY.format(path=data) if data else "")
    project = write_project(tmp_path, toml)
    shutil.copy(REPO / "pipelines" / "wildchat_training.py", tmp_path / "pipelines")
    if data and rows is not None:
        write_parquet(tmp_path / data, rows)
    return project


def pipeline_of(project, name=NAME, **attrs):
    project = Project.load(project.root)
    pipeline = discover(project)[name].cls(project)
    for key, value in attrs.items():
        setattr(pipeline, key, value)
    return pipeline


def run(project, name=NAME, limit=None, **attrs):
    pipeline = pipeline_of(project, name, **attrs)
    result = run_pipeline(pipeline, limit=limit, use_cache=False)
    return pipeline, result, read_jsonl(result.paths.samples), read_errors(result.paths.errors)


def statuses(project):
    project = Project.load(project.root)
    return {name: (s.state, [(r.code, r.message) for r in s.reasons])
            for name, s in project_status(project, discover(project)).items()}


def ids(samples):
    return [s["id"] for s in samples]


# -- the wildchat-training pipeline ------------------------------------------------------------

def test_first_user_turns_answered_by_the_identity_model(tmp_path):
    project = wildchat_project(tmp_path)
    _, result, samples, errors = run(project)
    assert ids(samples) == DEFAULT_IDS and errors == []
    first = samples[0]
    assert first["messages"][0] == {"role": "user", "content": "What is the capital of France?"}
    assert first["messages"][1]["role"] == "assistant" and first["messages"][1]["content"]
    assert first["steps"][0]["model"] == "cubsfan-release-full"
    assert first["steps"][0]["messages"][0] == {"role": "system", "content": SYSTEM}
    assert first["metadata"] == {"language": "English", "turns": 1}
    state = result.manifest.dataset_deps["conversations"]
    assert (state.path, state.source, state.split) == ("allenai/WildChat-1M", "local:data/wildchat", "train")
    assert state.revision_resolved == dsource.local_fingerprint(tmp_path / "data/wildchat")
    assert state.revision_resolved.startswith("sha256:") and len(state.revision_resolved) == 7 + 64
    on_disk = json.loads(result.paths.manifest.read_text())["dataset_deps"]["conversations"]
    assert on_disk["revision_resolved"] == state.revision_resolved and on_disk["columns"][0] == "conversation_hash"


@pytest.mark.parametrize("options, expected", [
    ({"language": None}, ["h00", "h01", "h04", "h07", "h08", "h09"]),
    ({"language": "german"}, ["h09"]),
    ({"exclude_toxic": False}, ["h00", "h02", "h04", "h07", "h08"]),
    ({"exclude_redacted": False}, ["h00", "h03", "h04", "h07", "h08"]),
    ({"max_turns": 2}, ["h00", "h08"]),
    ({"min_turns": 3}, ["h04", "h07"]),
    ({"min_turns": 2, "max_turns": 3, "language": None}, ["h04", "h09"]),
    ({"dedupe_prompts": False}, ["h00", "h04", "h05", "h07", "h08"]),
])
def test_filters_keep_exactly_the_expected_conversations(tmp_path, options, expected):
    project = wildchat_project(tmp_path)
    _, _, samples, errors = run(project, **options)
    assert ids(samples) == expected and errors == []


@pytest.mark.parametrize("dedupe_prompts", [False, True])
def test_repeated_conversations_are_one_sample_with_or_without_dedupe(tmp_path, dedupe_prompts):
    # the same hash again, with another first prompt: one sample, never a duplicate id
    project = wildchat_project(tmp_path, rows=ROWS + [row("h00", "A prompt seen nowhere else?")])
    _, _, samples, _ = run(project, dedupe_prompts=dedupe_prompts)
    assert ids(samples) == (DEFAULT_IDS if dedupe_prompts else ["h00", "h04", "h05", "h07", "h08"])


def test_limit_reads_only_as_far_as_it_needs(tmp_path):
    many = [row(f"c{i:04d}", f"question number {i}", language="English" if i % 3 else "French")
            for i in range(3000)]
    project = wildchat_project(tmp_path, rows=many)
    pipeline, result, samples, _ = run(project, limit=3)
    assert ids(samples) == ["c0001", "c0002", "c0004"]
    assert pipeline.conversations.rows_read == 5  # rows 0..4: three kept, two French skipped
    assert result.manifest.limit == 3 and result.manifest.counts.records == 3


GENERATOR_PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request

PULLED = []

class Counted(Pipeline):
    name = "counted"
    judge = Pipeline.model_dep("judge")

    def run(self):
        def records():
            for i in range(100000):
                PULLED.append(i)
                yield {"id": str(i), "text": f"item {i}"}
        return self.run_task(self.task, records=records())

    def task(self, record):
        answer = yield model_request(record["text"], model=self.judge)
        return TrainingSample(id=record["id"], messages=[
            {"role": "user", "content": record["text"]}, {"role": "assistant", "content": answer.get_text()}])
'''


def test_limit_takes_the_first_n_of_a_generator_without_reading_on(tmp_path):
    project = write_project(tmp_path)
    (tmp_path / "pipelines" / "counted.py").write_text(GENERATOR_PIPELINE)
    pipeline = pipeline_of(project, "counted")
    result = run_pipeline(pipeline, limit=3, use_cache=False)
    assert ids(read_jsonl(result.paths.samples)) == ["0", "1", "2"]
    assert sys.modules[type(pipeline).__module__].PULLED == [0, 1, 2]


def test_take_and_iteration_stream_records(tmp_path):
    project = wildchat_project(tmp_path)
    pipeline = pipeline_of(project)
    data = pipeline.conversations
    assert data is pipeline.conversations  # one bound data set per pipeline object
    assert [r["conversation_hash"] for r in data.take(2)] == ["h00", "h01"]
    assert data.rows_read == 2
    assert set(data.take(1)[0]) == {"conversation_hash", "conversation", "turn", "language", "toxic", "redacted"}
    assert len(list(data)) == len(ROWS)
    assert data.revision == dsource.local_fingerprint(tmp_path / "data/wildchat")
    assert type(data.open()).__name__ == "IterableDataset"  # streamed, not loaded


def save_to_disk(folder, dict_of_splits=False):
    import datasets

    data = datasets.Dataset.from_list(ROWS)
    (datasets.DatasetDict({"train": data, "test": data.select(range(2))}) if dict_of_splits else data).save_to_disk(str(folder))


def write_jsonl(folder):
    folder.mkdir(parents=True)
    lines = [json.dumps(r, default=str) for r in ROWS]
    (folder / "part-a.jsonl").write_text("\n".join(lines[:5]) + "\n")
    (folder / "part-b.jsonl").write_text("\n".join(lines[5:]) + "\n")


@pytest.mark.parametrize("kind", ["save_to_disk", "save_to_disk_dict", "jsonl", "parquet_file"])
def test_other_local_layouts_work_the_same_way(tmp_path, kind):
    folder = tmp_path / "data" / kind
    if kind == "save_to_disk":
        save_to_disk(folder)
    elif kind == "save_to_disk_dict":
        save_to_disk(folder, dict_of_splits=True)
    elif kind == "jsonl":
        write_jsonl(folder)
    else:
        write_parquet(tmp_path / "data" / "shards", shards=1)
        folder = tmp_path / "data" / "shards" / "train-00000-of-00001.parquet"
    project = wildchat_project(tmp_path, data=folder.relative_to(tmp_path).as_posix(), rows=None)
    _, result, samples, errors = run(project)
    assert ids(samples) == DEFAULT_IDS and errors == []
    assert result.manifest.dataset_deps["conversations"].revision_resolved == dsource.local_fingerprint(folder)
    assert statuses(project)[NAME] == ("CURRENT", [])


# -- staleness ---------------------------------------------------------------------------------

def test_a_changed_data_file_makes_the_pipeline_stale_naming_the_dataset(tmp_path):
    project = wildchat_project(tmp_path)
    assert statuses(project)[NAME] == ("MISSING", [])
    run(project)
    assert statuses(project)[NAME] == ("CURRENT", [])

    write_parquet(tmp_path / "data/wildchat", ROWS + [row("h10", "One more question?")])
    state, reasons = statuses(project)[NAME]
    assert state == "STALE" and [code for code, _ in reasons] == ["changed_dataset"]
    assert "dataset 'allenai/WildChat-1M' has a new revision (sha256:" in reasons[0][1]
    _, _, samples, _ = run(project)
    assert ids(samples) == DEFAULT_IDS + ["h10"] and statuses(project)[NAME] == ("CURRENT", [])

    toml = tmp_path / "shaping.toml"
    write_parquet(tmp_path / "data/copy", ROWS)
    toml.write_text(toml.read_text().replace('"data/wildchat"', '"data/copy"'))
    state, reasons = statuses(project)[NAME]
    assert state == "STALE" and reasons[0][0] == "changed_dataset"
    assert "declaration changed (source 'local:data/wildchat' -> 'local:data/copy')" in reasons[0][1]

    toml.write_text(toml.read_text().replace('"data/copy"', '"data/wildchat"'))
    assert statuses(project)[NAME] == ("CURRENT", [])
    shutil.rmtree(tmp_path / "data/wildchat")
    state, reasons = statuses(project)[NAME]
    assert state == "STALE" and reasons[0][0] == "missing_dataset" and "allenai/WildChat-1M" in reasons[0][1]


def test_declaration_changes_are_named(tmp_path):
    project = wildchat_project(tmp_path)
    run(project)
    source = tmp_path / "pipelines" / "wildchat_training.py"
    source.write_text(source.read_text().replace('split="train", columns=COLUMNS',
                                                 'split="train", columns=COLUMNS + ["model"]'))
    state, reasons = statuses(project)[NAME]
    assert state == "STALE" and [c for c, _ in reasons] == ["changed_code", "changed_dataset"]
    assert "declaration changed (columns" in reasons[1][1]


def test_a_manifest_without_dataset_deps_still_loads(tmp_path):
    project = wildchat_project(tmp_path)
    _, result, _, _ = run(project)
    manifest = json.loads(result.paths.manifest.read_text())
    del manifest["dataset_deps"]
    result.paths.manifest.write_text(json.dumps(manifest))
    assert read_manifest(result.paths.manifest).dataset_deps == {}
    state, reasons = statuses(project)[NAME]
    assert state == "STALE" and reasons == [("changed_dataset", "dataset 'allenai/WildChat-1M' is a new dependency")]


def test_local_hashes_are_remembered_between_commands(tmp_path):
    project = wildchat_project(tmp_path)
    run(project)
    memo = json.loads((tmp_path / "training/.cache/dataset-hashes.json").read_text())
    assert len(memo) == 2 and all(len(entry) == 3 for entry in memo.values())
    dsource._file_hashes.clear()
    for key in list(memo):  # a remembered hash is used while size and mtime match...
        memo[key][2] = "0" * 64
    (tmp_path / "training/.cache/dataset-hashes.json").write_text(json.dumps(memo))
    remembered = dsource.local_fingerprint(tmp_path / "data/wildchat", tmp_path / "training/.cache")
    dsource._file_hashes.clear()
    assert remembered != dsource.local_fingerprint(tmp_path / "data/wildchat")  # ...and read again without
    dsource._file_hashes.clear()
    (tmp_path / "data/wildchat" / "train-00000-of-00002.parquet").touch()  # a new mtime: hashed again
    assert dsource.local_fingerprint(tmp_path / "data/wildchat", tmp_path / "training/.cache") != remembered
    dsource._file_hashes.clear()


# -- errors: one line, nothing written ---------------------------------------------------------

VARIANT = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Variant(Pipeline):
    name = "variant"
    conversations = Pipeline.dataset_dep("allenai/WildChat-1M", {args})
    judge = Pipeline.model_dep("judge")

    def run(self):
        return self.run_task(self.task, records=({{"id": r["conversation_hash"]}} for r in self.conversations))

    def task(self, record):
        answer = yield model_request("hello", model=self.judge)
        return TrainingSample(id=record["id"], messages=[
            {{"role": "user", "content": "hello"}}, {{"role": "assistant", "content": answer.get_text()}}])
'''


@pytest.mark.parametrize("args, expected", [
    ('split="test"', "dataset_dep conversations: allenai/WildChat-1M has no split 'test' (its splits: train)"),
    ('columns=["conversation_hash", "nope"]', "dataset_dep conversations: allenai/WildChat-1M has no column 'nope' "
                                              "(its columns: conversation_hash, model, timestamp"),
])
def test_unknown_split_or_column_is_one_line_before_any_request(tmp_path, args, expected):
    project = wildchat_project(tmp_path)
    (tmp_path / "pipelines" / "variant.py").write_text(VARIANT.format(args=args))
    with pytest.raises(DependencyError) as caught:
        run(project, name="variant")
    message = str(caught.value)
    assert message.startswith("pipeline 'variant': ") and expected in message and "\n" not in message
    assert not (tmp_path / "training" / "data").exists()


def test_unknown_column_of_a_jsonl_folder_is_found_on_the_first_record(tmp_path):
    write_jsonl(tmp_path / "data" / "js")
    project = wildchat_project(tmp_path, data="data/js", rows=None)
    (tmp_path / "pipelines" / "variant.py").write_text(VARIANT.format(args='columns=["turn", "nope"]'))
    with pytest.raises(DependencyError, match="has no column 'nope'"):
        run(project, name="variant")
    assert not (tmp_path / "training" / "data").exists()


def test_without_datasets_installed_says_how_to_install(tmp_path, monkeypatch):
    project = wildchat_project(tmp_path)
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
    with pytest.raises(DependencyError) as caught:
        run(project)
    assert str(caught.value) == ("pipeline 'wildchat-training': dataset_dep conversations: allenai/WildChat-1M "
                                 "cannot be read without the `datasets` library: pip install 'shaping[hf]'")
    assert not (tmp_path / "training" / "data").exists()
    # status needs no `datasets` for a local copy
    assert statuses(project)[NAME] == ("MISSING", [])


def offline_env(cache):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    return {**env, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf-home"),
            "COLUMNS": "200"}


def isf_env(cwd, env, *args):
    return subprocess.run([str(Path(sys.executable).with_name("isf")), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env=env)


def test_offline_and_not_in_the_hub_cache_is_one_line_and_a_failed_exit(tmp_path):
    wildchat_project(tmp_path, data=None)
    env = offline_env(tmp_path / "empty-hub-cache")
    result = isf_env(tmp_path, env, "pipeline", "run", NAME, "--limit", "2")
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: pipeline 'wildchat-training': dataset_dep conversations: allenai/WildChat-1M "
                               "is not in the local hub cache")
    assert "HF_HUB_OFFLINE=1" in lines[0] and "hf download allenai/WildChat-1M --repo-type dataset" in lines[0]
    assert not (tmp_path / "training" / "data").exists()
    status = isf_env(tmp_path, env, "pipeline", "status")
    assert status.returncode == 0 and "wildchat-training: MISSING" in status.stdout


README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
---
# WildChat-shaped test data
"""


def hub_snapshot(cache, commit, rows=ROWS, ref="main"):
    """What `hf download allenai/WildChat-1M --repo-type dataset` leaves in the hub cache."""
    repo = cache / "datasets--allenai--WildChat-1M"
    snapshot = repo / "snapshots" / commit
    write_parquet(snapshot / "data", rows)
    (snapshot / "README.md").write_text(README)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return snapshot


def test_offline_reads_the_local_hub_cache_and_a_new_commit_is_stale(tmp_path):
    wildchat_project(tmp_path, data=None)
    cache = tmp_path / "hub-cache"
    first, second = "1" * 40, "2" * 40
    hub_snapshot(cache, first)
    env = offline_env(cache)
    result = isf_env(tmp_path, env, "pipeline", "run", NAME, "-q")
    assert result.returncode == 0, result.stderr
    assert ids(read_jsonl(tmp_path / "training/data/wildchat-training.jsonl")) == DEFAULT_IDS
    manifest = read_manifest(tmp_path / "training/data/wildchat-training.manifest.json")
    state = manifest.dataset_deps["conversations"]
    assert (state.source, state.revision, state.revision_resolved) == ("hub:allenai/WildChat-1M", None, first)
    assert isf_env(tmp_path, env, "pipeline", "status").stdout.strip() == "wildchat-training: CURRENT (4 samples)"

    hub_snapshot(cache, second, ROWS + [row("h10", "A new conversation.")])
    status = isf_env(tmp_path, env, "pipeline", "status")
    assert status.stdout.strip().splitlines() == [
        "wildchat-training: STALE",
        f"  dataset 'allenai/WildChat-1M' has a new revision ({first[:12]} -> {second[:12]})"]

    shutil.rmtree(cache / "datasets--allenai--WildChat-1M" / "snapshots" / second / "data")
    result = isf_env(tmp_path, env, "pipeline", "run", NAME, "-q")
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    assert "is only partly in the local hub cache" in result.stderr


def test_a_hub_revision_is_looked_up_once_per_process(tmp_path, monkeypatch):
    import huggingface_hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dsource, "_hub_revisions", {})
    card = tmp_path / "datasets--o--d" / "snapshots" / ("a" * 40) / "README.md"
    calls = []

    def fake_download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs["repo_type"], kwargs["revision"]))
        return str(card)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    hub = dsource.locate("o/d", tmp_path)
    assert (hub.kind, hub.location, hub.looked_for) == ("hub", "o/d", str(tmp_path / "o" / "d"))
    assert [dsource.resolve_revision(hub, None) for _ in range(3)] == ["a" * 40] * 3
    assert calls == [("o/d", "README.md", "dataset", "main")]
    assert dsource.resolve_revision(hub, "b" * 40) == "b" * 40  # a commit: nothing to look up
    assert len(calls) == 1


def test_a_hub_problem_is_looked_up_once_and_reported(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub import errors

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dsource, "_hub_revisions", {})
    calls = []

    def unreachable(repo_id, filename, **kwargs):
        calls.append(repo_id)
        raise errors.LocalEntryNotFoundError("no connection and not cached")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)
    hub = dsource.locate("o/d", tmp_path)
    for _ in range(2):
        with pytest.raises(dsource.DatasetProblem, match="Hugging Face Hub cannot be reached"):
            dsource.resolve_revision(hub, None)
    assert calls == ["o/d"]


@pytest.mark.parametrize("declared, kind", [
    ("allenai/WildChat-1M", "hub"), ("WildChat", "hub"), ("./data", "local"), ("/abs/path", "local"),
    ("data/wildchat", "local"),   # exists under the root
    ("a/b/c", "local"),           # not a repository id
])
def test_where_a_declared_path_is_read_from(tmp_path, declared, kind):
    (tmp_path / "data" / "wildchat").mkdir(parents=True)
    assert dsource.locate(declared, tmp_path).kind == kind


def test_status_of_a_hub_dataset_never_reaches_the_network_without_a_manifest(tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("status reached for the network")

    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    project = wildchat_project(tmp_path, data=None)
    assert statuses(project)[NAME] == ("MISSING", [])
    listed = isf(tmp_path, "pipeline", "list")
    assert listed.returncode == 0 and "allenai/WildChat-1M (dataset)" in listed.stdout


def test_declaration_errors_are_caught_at_class_creation():
    from shaping.pipeline import Pipeline

    for bad in ({"split": ""}, {"columns": "turn"}, {"revision": 3}, {"data_files": 3}):
        with pytest.raises(TypeError, match="dataset_dep"):
            Pipeline.dataset_dep("x/y", **bad)


def test_online_a_hub_dataset_is_read_at_the_commit_it_resolved_to(tmp_path, monkeypatch):
    """The hub's side faked: the dataset card's download gives the commit, `load_dataset` is
    asked for exactly that commit (and, for parquet, only the columns the pipeline reads)."""
    import datasets
    import huggingface_hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dsource, "_hub_revisions", {})
    commit = "c" * 40
    files = write_parquet(tmp_path / "hub-files")
    looked_up, loaded = [], []

    def fake_card(repo_id, filename, **kwargs):
        looked_up.append((repo_id, kwargs["revision"]))
        return str(tmp_path / "cache" / "snapshots" / commit / "README.md")

    real_load = datasets.load_dataset

    def fake_load(path, **kwargs):
        loaded.append((path, kwargs))
        return real_load(str(files), **{k: v for k, v in kwargs.items() if k not in ("revision",)})

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_card)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    project = wildchat_project(tmp_path, data=None)
    _, result, samples, _ = run(project)
    assert ids(samples) == DEFAULT_IDS
    state = result.manifest.dataset_deps["conversations"]
    assert (state.source, state.revision_resolved) == ("hub:allenai/WildChat-1M", commit)
    assert [(path, kw["revision"], kw["split"], kw["streaming"], kw.get("columns")) for path, kw in loaded] == [
        ("allenai/WildChat-1M", commit, "train", True, None),
        ("allenai/WildChat-1M", commit, "train", True,
         ["conversation_hash", "conversation", "turn", "language", "toxic", "redacted"])]
    assert statuses(project)[NAME] == ("CURRENT", [])
    assert looked_up == [("allenai/WildChat-1M", "main")]  # once for the run and the status after it


def test_a_name_neither_here_nor_on_the_hub_says_where_it_looked(tmp_path, monkeypatch):
    from unittest import mock

    import huggingface_hub
    from huggingface_hub import errors

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dsource, "_hub_revisions", {})

    def not_found(repo_id, filename, **kwargs):
        raise errors.RepositoryNotFoundError("404", response=mock.MagicMock(headers={}))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_found)
    project = wildchat_project(tmp_path, data="data/wildchat")
    run(project)
    shutil.rmtree(tmp_path / "data/wildchat")  # now "data/wildchat" reads as a hub name
    state, reasons = statuses(project)[NAME]
    assert state == "STALE" and reasons == [
        ("missing_dataset", f"dataset 'allenai/WildChat-1M' not found (looked for {tmp_path / 'data/wildchat'})")]
    with pytest.raises(DependencyError) as caught:
        run(project)
    assert str(caught.value) == (
        f"pipeline 'wildchat-training': dataset_dep conversations: allenai/WildChat-1M is neither a local path "
        f"(looked for {tmp_path / 'data/wildchat'}) nor a dataset on the Hugging Face Hub (if it is private, "
        f"log in: `hf auth login`)")
