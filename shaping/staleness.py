"""Is a pipeline's output up to date, and if not, why: each status comes with named reasons.

    CURRENT   the manifest matches the code, files and model configs it was made from
    STALE     one reason per line: changed_code, changed_file, missing_file, changed_kshot,
              changed_model, missing_model, changed_dataset, missing_dataset, changed_params,
              edited_output, missing_output, stale_upstream, bad_manifest
    PARTIAL   made with --limit and nothing else changed (stale until a full run)
    FAILED    the last run failed (reason: failed_run); the outputs, if any, are an older run's
    MISSING   never run (no manifest)

changed_params: the output was made with parameter values (`--set`, set_params) other than
those the class declares now; a plain run makes it CURRENT again.

A pipeline whose file_dep is another pipeline's output (training/data/x.jsonl) depends on it:
statuses are computed upstream first, and a stale upstream makes its dependents stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from graphlib import CycleError, TopologicalSorter

from shaping.config import Project
from shaping.deps import DatasetDep, KShotDep
from shaping.discovery import PipelineEntry
from shaping.errors import ConfigError, ShapingError
from shaping.manifest import DatasetState, read_manifest, source_hashes
from shaping.output import OutputPaths, sha256_file, sha256_path
from shaping.params import same_value, short_repr

CURRENT, STALE, PARTIAL, FAILED, MISSING = "CURRENT", "STALE", "PARTIAL", "FAILED", "MISSING"


@dataclass(frozen=True)
class Reason:
    code: str
    message: str


@dataclass
class Status:
    name: str
    state: str
    samples: int | None = None
    reasons: list[Reason] = field(default_factory=list)

    @property
    def is_current(self) -> bool:
        return self.state == CURRENT

    def headline(self) -> str:
        if self.state in (CURRENT, PARTIAL):
            return f"{self.state} ({self.samples} samples)"
        return self.state

    def to_dict(self) -> dict:
        return {"name": self.name, "state": self.state, "samples": self.samples,
                "reasons": [asdict(r) for r in self.reasons]}


def upstreams(entry: PipelineEntry, project: Project, names: Iterable[str]) -> list[str]:
    """The pipelines (among `names`) whose default output this pipeline reads as a file_dep."""
    outputs = {project.outputs(name).samples.resolve(): name for name in names}
    found = []
    for dep in entry.cls.file_deps.values():
        other = outputs.get((project.root / dep.relpath).resolve())
        if other is not None and other != entry.name:
            found.append(other)
    return found


def dependency_order(project: Project, entries: dict[str, PipelineEntry]) -> list[str]:
    graph = {name: upstreams(entry, project, entries) for name, entry in entries.items()}
    try:
        return list(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise ShapingError(f"pipelines depend on each other in a cycle: {' -> '.join(exc.args[1])}") from exc


def pipeline_status(entry: PipelineEntry, project: Project, upstream: dict[str, Status]) -> Status:
    cls, name = entry.cls, entry.name
    paths = project.outputs(name)
    if paths.failed.exists():
        return failed_status(name, paths)
    if not paths.manifest.exists():
        return Status(name, MISSING)
    try:
        manifest = read_manifest(paths.manifest)
    except (ValueError, OSError) as exc:
        return Status(name, STALE, reasons=[Reason("bad_manifest", f"manifest unreadable: {exc}")])
    reasons: list[Reason] = []
    add = lambda code, message: reasons.append(Reason(code, message))  # noqa: E731

    source = cls.source_file()
    if source is not None:
        combined, files = source_hashes(source, project.pipelines_dir, project.root)
        if combined != manifest.pipeline_source_sha256:
            changed = sorted(p for p in files.keys() | manifest.pipeline_sources.keys()
                             if files.get(p) != manifest.pipeline_sources.get(p))
            add("changed_code", f"pipeline code changed ({', '.join(changed) or project.relative(source)})")

    for attr, dep in cls.file_deps.items():
        path = (project.root / dep.relpath).resolve()
        recorded = manifest.file_deps.get(attr)
        if not path.exists():
            if isinstance(dep, KShotDep) and not dep.required and recorded is None:
                continue  # optional examples, absent then and now
            add("missing_file", f"file '{attr}' is missing ({dep.relpath})")
        elif recorded is None:
            add("changed_file", f"file '{attr}' is a new dependency ({dep.relpath})")
        elif sha256_path(path) != recorded.sha256:
            add("changed_file", f"file '{attr}' content changed ({dep.relpath})")

    for attr, dep in cls.kshot_deps().items():
        recorded = manifest.kshot.get(attr)
        declared = (dep.relpath, dep.config, dep.count, dep.required)
        if recorded is None or (recorded.file, recorded.config, recorded.count, recorded.required) != declared:
            add("changed_kshot", f"k-shot '{attr}' selection differs from the kshot_dep "
                                 f"(the run used --k-shot-* flags, or the declaration changed)")

    for attr, dep in cls.model_deps.items():
        recorded = manifest.model_deps.get(attr)
        try:
            fingerprint = project.resolved(dep.model_name).fingerprint
        except ConfigError:
            add("missing_model", f"model '{dep.model_name}' is no longer in shaping.toml")
            continue
        if recorded is None or recorded.fingerprint != fingerprint:
            add("changed_model", f"model '{dep.model_name}' config changed")

    for attr, dep in cls.dataset_deps.items():
        dataset_reasons(dep, manifest.dataset_deps.get(attr), project, add)

    for key, param in cls.parameters().items():  # one recorded before parameters were: not compared
        if key in manifest.params and not same_value(manifest.params[key], param.default):
            made = f"--set {key}={short_repr(manifest.params[key], 60)}" if key in manifest.params_set \
                else f"{key}={short_repr(manifest.params[key], 60)}"
            add("changed_params", f"parameter {key}: the output was made with {made}; "
                                  f"the pipeline declares {param.shown_default(60)}")

    for relpath, recorded in manifest.files_read.items():
        path = project.root / recorded.path
        if not path.exists():
            add("missing_file", f"file {relpath} (read by the run) is missing")
        elif sha256_path(path) != recorded.sha256:
            add("changed_file", f"file {relpath} (read by the run) content changed")

    for other in upstreams(entry, project, upstream):
        if not upstream[other].is_current:
            add("stale_upstream", f"depends on stale pipeline {other}")

    if not paths.samples.exists():
        add("missing_output", f"output missing ({project.relative(paths.samples)})")
    elif sha256_file(paths.samples) != manifest.output.sha256:
        add("edited_output", "output edited since the run")

    samples = manifest.counts.samples
    partial = []
    if manifest.limit is not None:
        partial.append(f"partial run (--limit {manifest.limit})")
    if manifest.stopped is not None:
        partial.append(f"partial run ({manifest.stopped})")
    if reasons:
        for message in partial:
            add("partial_run", message)
        return Status(name, STALE, samples, reasons)
    if partial:
        return Status(name, PARTIAL, samples, [Reason("partial_run", f"{message}; stale until a full run")
                                               for message in partial])
    return Status(name, CURRENT, samples)


def dataset_reasons(dep: DatasetDep, recorded: DatasetState | None, project: Project, add) -> None:
    """changed_dataset: a new dependency, another declaration, or a new revision; missing_dataset:
    the revision cannot be found now. A hub revision is looked up once per process (with
    HF_HUB_OFFLINE=1 in the local hub cache only); see shaping.datasets.source."""
    from shaping.datasets.source import DatasetProblem, resolve_revision

    declared = dep.declared(project)
    if recorded is None:
        add("changed_dataset", f"dataset '{dep.path}' is a new dependency")
        return
    differs = [f"{k} {v!r:.60} -> {declared.get(k)!r:.60}" for k, v in recorded.declared().items()
               if declared.get(k) != v]
    if (declared["source"].startswith("hub:") and recorded.source == "local:" + declared["source"][4:]
            and len(differs) == 1):
        # a local folder that is gone now reads as a hub name: it is missing, not redeclared
        add("missing_dataset", f"dataset '{dep.path}' not found (looked for "
                               f"{project.root / recorded.source.partition(':')[2]})")
        return
    if differs:
        add("changed_dataset", f"dataset '{dep.path}' declaration changed ({'; '.join(differs)})")
        return
    try:
        revision = resolve_revision(dep.source(project), dep.revision, project.cache_dir)
    except DatasetProblem as exc:
        text = str(exc)
        add("missing_dataset", f"dataset '{dep.path}'{'' if text.startswith((':', ' (')) else ' '}{text}")
        return
    if revision != recorded.revision_resolved:
        add("changed_dataset", f"dataset '{dep.path}' has a new revision "
                               f"({_short(recorded.revision_resolved)} -> {_short(revision)})")


def _short(revision: str) -> str:
    kind, _, value = revision.rpartition(":")
    return f"{kind}:{value[:12]}" if kind else value[:12]


def failed_status(name: str, paths: OutputPaths) -> Status:
    try:
        failure = json.loads(paths.failed.read_text(encoding="utf-8")).get("failure") or "unknown reason"
    except (ValueError, OSError, AttributeError) as exc:
        failure = f"(its record {paths.failed.name} is unreadable: {exc})"
    samples = None
    if paths.manifest.exists():
        try:
            samples = read_manifest(paths.manifest).counts.samples
        except (ValueError, OSError):
            pass
    kept = f"; the output is an earlier run's ({samples} samples)" if samples is not None else ""
    return Status(name, FAILED, samples, [Reason("failed_run", f"last run failed: {failure}{kept}")])


def project_status(project: Project, entries: dict[str, PipelineEntry]) -> dict[str, Status]:
    """Every pipeline's status, computed upstream first; in dependency order."""
    result: dict[str, Status] = {}
    for name in dependency_order(project, entries):
        result[name] = pipeline_status(entries[name], project, result)
    return result
