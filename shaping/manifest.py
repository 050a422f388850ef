"""Manifests: what a run was made from (code, files, model configs) and what it produced.

Fingerprints here are what staleness compares. A model's fingerprint covers provider, model,
base_url and params: what changes the answers. Never the key, never rate limits.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shaping.config import ModelConfig
from shaping.dispatch.stats import ModelUsage
from shaping.gitinfo import GitState
from shaping.output import sha256_path
from shaping.providers.registry import provider_class, resolve_base_url, resolve_provider_name

SCHEMA_VERSION = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileState(_Model):
    path: str
    sha256: str


class ModelState(_Model):
    name: str
    fingerprint: str
    provider: str
    model: str
    base_url: str | None
    params: dict[str, Any]
    #: the options that shape answers (see Provider.fingerprint_parts)
    options: dict[str, Any] = Field(default_factory=dict)
    #: a local model's files, as one hash
    files: str | None = None


class KShotState(_Model):
    """The k-shot selection a run used: as asked for (file, config, count, required) and what
    that gave (`used`: source, configuration, count; None when there were no examples)."""

    file: str
    config: str | None
    count: int | None
    required: bool
    used: dict[str, Any] | None


class DatasetState(_Model):
    """A dataset_dep as asked for (path, where it was read from, split, revision, data_files,
    columns) and the revision that resolved to: the hub commit, or "sha256:..." of local files."""

    path: str
    source: str
    split: str
    revision: str | None = None
    revision_resolved: str
    data_files: Any = None
    columns: list[str] | None = None
    streaming: bool = True

    def declared(self) -> dict[str, Any]:
        """The fields `DatasetDep.declared` gives, to compare with it."""
        return self.model_dump(include={"path", "source", "split", "revision", "data_files", "columns"})


class BatchRecord(_Model):
    """One provider batch of a run (shaping.dispatch.batch): its id, model, size, last status,
    the round it formed (None: an earlier run's, re-attached)."""

    id: str | None
    model: str
    requests: int
    status: str
    round: int | None = None
    reattached: bool = False


def batch_records(stats: Any) -> list[BatchRecord]:
    return [BatchRecord(id=b.id, model=b.model, requests=b.requests, status=b.status, round=b.round,
                        reattached=b.reattached) for b in stats.batches.values()]


class Counts(_Model):
    records: int
    samples: int
    errors: dict[str, int] = Field(default_factory=dict)
    #: samples kept out of the output by the pipeline's min_judge_score
    rejected: int = 0


class DedupeRecord(_Model):
    """One dedupe pass over the output (see shaping.quality.dedupe): by the run (the pipeline's
    `dedupe` option) or by `isf pipeline dedupe`. `kept` is what the output held after it."""

    by: Literal["run", "cli"]
    on: str
    #: the near-duplicate threshold, or None for exact only
    near: float | None
    before: int
    kept: int
    removed_exact: int
    removed_near: int
    at: datetime


class Manifest(_Model):
    schema_version: int = SCHEMA_VERSION
    pipeline: str
    pipeline_source: str | None
    #: one hash over the pipeline's file and the local modules under pipelines/ it imports
    pipeline_source_sha256: str | None
    pipeline_sources: dict[str, str] = Field(default_factory=dict)
    shaping_version: str
    git: GitState
    file_deps: dict[str, FileState]
    model_deps: dict[str, ModelState]
    kshot: dict[str, KShotState] = Field(default_factory=dict)
    dataset_deps: dict[str, DatasetState] = Field(default_factory=dict)
    #: every parameter's value in the run (see shaping.params), as JSON
    params: dict[str, Any] = Field(default_factory=dict)
    #: the parameters the run set (--set, set_params); the others had the class's defaults
    params_set: list[str] = Field(default_factory=list)
    #: files the run read by a name given at run time (Pipeline.read_project_file), by path
    files_read: dict[str, FileState] = Field(default_factory=dict)
    limit: int | None
    #: why the run stopped before its last record (the cost cap), or None: it took them all
    stopped: str | None = None
    #: the cost cap the run ran under (--max-cost, max_cost_usd), or None
    max_cost_usd: float | None = None
    annotated: bool
    counts: Counts
    usage: dict[str, ModelUsage]  # the run's own counters, recorded as they are
    #: batch mode: the provider batches this run submitted or re-attached to
    batches: list[BatchRecord] = Field(default_factory=list)
    started_at: datetime
    completed_at: datetime
    duration_s: float
    output: FileState
    errors_output: FileState
    #: the samples under min_judge_score (training/data/rejected/NAME.jsonl), or None: none were
    rejected_output: FileState | None = None
    #: the dedupe passes over this output, in order; `counts.samples` is what the last one kept
    dedupe: list[DedupeRecord] = Field(default_factory=list)
    #: every sample they removed (training/data/dedupe/NAME.removed.jsonl), or None
    dedupe_removed: FileState | None = None

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def model_state(name: str, config: ModelConfig) -> ModelState:
    """The model's identity and its fingerprint: provider, model, base_url, params, and what its
    provider says also changes answers (options that shape generation, a local model's files)."""
    provider = resolve_provider_name(name, config)
    identity = {
        "provider": provider,
        "model": config.model,
        "base_url": resolve_base_url(config) if not config.base_urls else ",".join(sorted(config.base_urls)),
        "params": config.params,
    }
    extra = provider_class(name, provider).fingerprint_parts(config)
    canonical = json.dumps({**identity, **extra}, sort_keys=True, separators=(",", ":"), default=str)
    return ModelState(name=name, fingerprint=hashlib.sha256(canonical.encode()).hexdigest(), **identity,
                      options=extra.get("options", {}), files=extra.get("files"))


def file_state(path: Path, root: Path) -> FileState:
    """A file's (or a folder's) path relative to the project and its sha256."""
    try:
        shown = str(path.relative_to(root))
    except ValueError:
        shown = str(path)
    return FileState(path=shown, sha256=sha256_path(path))


def _import_statements(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth. Only statement bodies are walked (imports are
    statements): a fraction of the nodes `ast.walk` visits, and run before every run and status."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            inner = getattr(node, name, None)
            if isinstance(inner, list):
                todo.extend(inner)


def local_imports(source: Path, pipelines_dir: Path, trees: dict[Path, ast.Module] | None = None) -> list[Path]:
    """The modules under `pipelines_dir` that `source` imports, directly or through each other
    (`trees`: where each file's syntax tree is kept, for code_hash)."""
    found: list[Path] = []
    todo = [source]
    while todo:
        path = todo.pop()
        try:
            tree = ast.parse(path.read_bytes())
        except (OSError, SyntaxError, ValueError):
            continue
        if trees is not None:
            trees[path] = tree
        for node in _import_statements(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = [base] if base else []
                names += [f"{base}.{alias.name}".strip(".") for alias in node.names]
            for name in names:
                if name.startswith("pipelines."):
                    name = name[len("pipelines."):]
                parts = name.split(".")
                for candidate in (pipelines_dir.joinpath(*parts).with_suffix(".py"),
                                  pipelines_dir.joinpath(*parts, "__init__.py")):
                    if candidate.is_file() and candidate != source and candidate not in found:
                        found.append(candidate)
                        todo.append(candidate)
    return sorted(found)


def code_hash(path: Path, tree: ast.Module | None = None) -> str:
    """A Python file's hash as code: of its syntax tree (`tree`, when already parsed), so
    comments and formatting do not count (docstrings and every string do). A file that does
    not parse is hashed as bytes."""
    if tree is None:
        data = path.read_bytes()
        try:
            tree = ast.parse(data)
        except (SyntaxError, ValueError):
            return hashlib.sha256(data).hexdigest()
    return hashlib.sha256(ast.dump(tree).encode()).hexdigest()


def source_hashes(source: Path, pipelines_dir: Path, root: Path) -> tuple[str, dict[str, str]]:
    """(one combined hash, {file: code hash}) over a pipeline's file and its local imports."""
    files = {}
    trees: dict[Path, ast.Module] = {}  # each file parsed once
    for path in [source, *local_imports(source, pipelines_dir, trees)]:
        try:
            shown = str(path.relative_to(root))
        except ValueError:
            shown = str(path)
        files[shown] = code_hash(path, trees.get(path))
    combined = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return combined, files


def read_manifest(path: Path) -> Manifest:
    """Raises ValueError with a one-line reason when the file is not a valid manifest."""
    from pydantic import ValidationError

    from shaping.errors import describe_validation_error

    try:
        return Manifest.model_validate_json(path.read_bytes())
    except ValidationError as exc:
        raise ValueError(describe_validation_error(exc, path.name)) from exc

