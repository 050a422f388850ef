"""Dedupe applied to a pipeline's output file: by the run (the pipeline's `dedupe` option, just
before its outputs are put in place) and by `isf pipeline dedupe NAME`.

The output is read twice and never held whole: once for the texts compared, once to write the
kept lines (unchanged, byte for byte) and the removed ones. A removed line is the sample's line
plus `duplicate_of` (str), `reason` (str) and `similarity` (float), in
`training/data/dedupe/NAME.removed.jsonl`: beside the samples' folder, so a glob of
training/data/*.jsonl takes samples only, and the same columns on every line, so it loads with
`datasets.load_dataset("json", ...)`. A run replaces that file (or removes it when it removed
nothing); `isf pipeline dedupe` adds to it. Everything is written under temporary names and
renamed together with the manifest, which records each pass and keeps `counts.samples` and
`output.sha256` true to the file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from shaping.errors import ShapingError
from shaping.manifest import DedupeRecord, FileState, Manifest, read_manifest
from shaping.output import AtomicWriter, OutputPaths, sha256_file
from shaping.quality.dedupe import DedupeResult, DedupeSettings, prompt_text, require_datasketch, response_text


def _rows(path: Path) -> Iterator[tuple[bytes, Any]]:
    """(line without its newline, parsed) for each line that is not blank."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                yield line, orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ShapingError(f"{path}: line {number}: invalid JSON ({exc})") from exc


def plan_file(path: Path, settings: DedupeSettings) -> DedupeResult:
    """What dedupe would remove from the output file at `path`."""
    from shaping.quality.dedupe import find_duplicates

    def texts() -> Iterator[tuple[str, str, str]]:
        for _, row in _rows(path):
            row = row if isinstance(row, dict) else {}
            yield str(row.get("id")), prompt_text(row), response_text(row)

    return find_duplicates(texts(), settings)


def write_deduped(writer: AtomicWriter, source: Path, result: DedupeResult, target: Path,
                  removed_target: Path, append_to: Path | None = None) -> tuple[str, str]:
    """Write the kept lines of `source` to `target` and the removed ones to `removed_target`
    (after the lines of `append_to`, where given), under temporary names: (their sha256s)."""
    removed = result.removed_at()

    def kept() -> Iterator[str]:
        for index, (line, _) in enumerate(_rows(source)):
            if index not in removed:
                yield line.decode("utf-8")

    def gone() -> Iterator[str]:
        if append_to is not None:
            with open(append_to, encoding="utf-8") as f:
                yield from (line.rstrip("\r\n") for line in f if line.strip())
        for index, (_, row) in enumerate(_rows(source)):
            if index in removed:
                yield orjson.dumps({**row, **removed[index].fields()}).decode("utf-8")

    removed_target.parent.mkdir(exist_ok=True)
    return writer.write_lines(target, kept()), writer.write_lines(removed_target, gone())


def _record(result: DedupeResult, by: str) -> DedupeRecord:
    return DedupeRecord(by=by, on=result.settings.on, near=result.settings.near, before=result.total,
                        kept=result.kept, removed_exact=result.exact, removed_near=result.near,
                        at=datetime.now(timezone.utc))


# -- during a run ---------------------------------------------------------------------------------

def check_option(option: Any) -> DedupeSettings:
    """The pipeline's `dedupe` option as settings; says how to install datasketch before a run
    that needs it sends anything."""
    settings = DedupeSettings.parse(option)
    if settings.near is not None:
        require_datasketch()
    return settings


@dataclass
class RunDedupe:
    """What the run's dedupe did: the output's new sha256 and count, what the manifest adds."""

    sha256: str
    kept: int
    removed: int
    manifest_fields: dict[str, Any] = field(default_factory=dict)


def dedupe_run_output(writer: AtomicWriter, paths: OutputPaths, option: Any, project: Any) -> RunDedupe:
    """Dedupe the samples `writer` is about to put at `paths.samples`, in the same commit."""
    settings = check_option(option)
    source = writer.take(paths.samples)
    if source is None:
        raise ShapingError(f"dedupe: no samples pending for {paths.samples}")
    result = plan_file(source, settings)
    record = _record(result, "run")
    if not result.removed:  # nothing to take out: the samples go in place as they are
        writer.place(source, paths.samples)
        return RunDedupe(sha256_file(source), result.kept, 0, {"dedupe": [record]})
    try:
        sha, removed_sha = write_deduped(writer, source, result, paths.samples, paths.removed)
    finally:
        source.unlink(missing_ok=True)
    return RunDedupe(sha, result.kept, len(result.removed), {
        "dedupe": [record],
        "dedupe_removed": FileState(path=project.relative(paths.removed), sha256=removed_sha)})


# -- isf pipeline dedupe --------------------------------------------------------------------------

@dataclass
class CliDedupe:
    result: DedupeResult
    #: files written (empty for a dry run or when nothing was removed)
    written: list[Path] = field(default_factory=list)
    #: why the manifest was left as it was, or None when it records this pass
    manifest_note: str | None = None


def _current_manifest(paths: OutputPaths) -> tuple[Manifest | None, str | None]:
    """The manifest, when it describes the output as it is now; else (None, why not)."""
    if not paths.manifest.exists():
        return None, "no manifest: the output was not written by a run"
    try:
        manifest = read_manifest(paths.manifest)
    except (ValueError, OSError) as exc:
        return None, f"the manifest is unreadable ({exc})"
    if sha256_file(paths.samples) != manifest.output.sha256:
        return None, "the output was edited since its run"
    return manifest, None


def dedupe_output(project: Any, name: str, settings: DedupeSettings, dry_run: bool = False) -> CliDedupe:
    """Dedupe pipeline `name`'s output in place; see the module docstring."""
    from shaping.lock import RunLock

    paths = project.outputs(name)
    if not paths.samples.exists():
        raise ShapingError(f"pipeline '{name}' has no output yet ({project.relative(paths.samples)}); "
                           f"run it first: isf pipeline run {name}")
    if settings.near is not None:
        require_datasketch()
    if dry_run:
        return CliDedupe(plan_file(paths.samples, settings))
    project.cache_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(project.cache_dir / f"{name}.lock", name):  # not while a run writes it
        result = plan_file(paths.samples, settings)
        if not result.removed:
            return CliDedupe(result)
        manifest, note = _current_manifest(paths)
        with AtomicWriter() as writer:
            sha, removed_sha = write_deduped(writer, paths.samples, result, paths.samples, paths.removed,
                                             append_to=paths.removed if paths.removed.exists() else None)
            written = [paths.samples, paths.removed]
            if manifest is not None:
                manifest.output.sha256 = sha
                manifest.counts.samples = result.kept
                manifest.dedupe.append(_record(result, "cli"))
                manifest.dedupe_removed = FileState(path=project.relative(paths.removed), sha256=removed_sha)
                writer.write_text(paths.manifest, manifest.to_json())
                written.append(paths.manifest)
    return CliDedupe(result, written, note)
