"""Manifests: what a run was made from (code, files, model configs) and what it produced.

Fingerprints here are what staleness compares. A model's fingerprint covers provider, model,
base_url and params: what changes the answers. Never the key, never rate limits.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shaping.config import ModelConfig
from shaping.gitinfo import GitState
from shaping.output import sha256_file
from shaping.providers.registry import resolve_base_url, resolve_provider_name

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


class GitInfo(_Model):
    commit: str | None
    dirty: bool | None
    note: str | None = None


class Usage(_Model):
    requests: int = 0
    failed: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None


class Counts(_Model):
    records: int
    samples: int
    errors: dict[str, int] = Field(default_factory=dict)


class Manifest(_Model):
    schema_version: int = SCHEMA_VERSION
    pipeline: str
    pipeline_source: str | None
    pipeline_source_sha256: str | None
    shaping_version: str
    git: GitInfo
    file_deps: dict[str, FileState]
    model_deps: dict[str, ModelState]
    limit: int | None
    annotated: bool
    counts: Counts
    usage: dict[str, Usage]
    started_at: datetime
    completed_at: datetime
    duration_s: float
    output: FileState
    errors_output: FileState

    def to_json(self) -> str:
        return self.model_dump_json(indent=2) + "\n"


def model_state(name: str, config: ModelConfig) -> ModelState:
    identity = {
        "provider": resolve_provider_name(name, config),
        "model": config.model,
        "base_url": resolve_base_url(config),
        "params": config.params,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return ModelState(name=name, fingerprint=hashlib.sha256(canonical.encode()).hexdigest(), **identity)


def file_state(path: Path, root: Path) -> FileState:
    try:
        shown = str(path.relative_to(root))
    except ValueError:
        shown = str(path)
    return FileState(path=shown, sha256=sha256_file(path))


def git_info(state: GitState) -> GitInfo:
    return GitInfo(commit=state.commit, dirty=state.dirty, note=state.note)
