"""Where a run's files go, and writing them so that a crash never leaves a half file."""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shaping.errors import OutputError

_serial = itertools.count()


@dataclass(frozen=True)
class OutputPaths:
    samples: Path
    errors: Path
    manifest: Path
    #: a failed run's record (why it failed, what it would have written); removed by a good run
    failed: Path
    #: a failed run's error records (the good outputs are left as they were)
    failed_errors: Path
    #: the samples dedupe removed, each with the sample it duplicates (see shaping.quality.dedupe)
    removed: Path
    #: the samples under the pipeline's min_judge_score, each with the reason (see shaping.judge)
    rejected: Path

    @classmethod
    def for_samples(cls, samples: Path) -> "OutputPaths":
        stem = samples.name[: -len(".jsonl")] if samples.name.endswith(".jsonl") else samples.name
        errors = samples.parent / "errors"  # beside, not among, the samples: a glob of *.jsonl takes samples only
        return cls(
            samples=samples,
            errors=errors / f"{stem}.jsonl",
            manifest=samples.with_name(f"{stem}.manifest.json"),
            failed=samples.with_name(f"{stem}.failed.json"),
            failed_errors=errors / f"{stem}.failed.jsonl",
            removed=samples.parent / "dedupe" / f"{stem}.removed.jsonl",
            rejected=samples.parent / "rejected" / f"{stem}.jsonl",
        )


def output_paths(project: Any, name: str, output: Path | None) -> OutputPaths:
    """The run's files (`project.outputs(name)` unless `output` is given); checks before any
    request is sent that they can be written."""
    if output is None:
        samples = project.outputs(name).samples
        try:
            samples.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create output folder {samples.parent}: {exc.strerror}") from exc
    else:
        samples = Path(output).expanduser().resolve()
        if samples.is_dir():
            raise OutputError(f"output path {output} is a folder; give a file name such as {name}.jsonl")
        if not samples.parent.is_dir():
            raise OutputError(f"output folder {samples.parent} does not exist (from -o {output})")
    if not os.access(samples.parent, os.W_OK):
        raise OutputError(f"output folder {samples.parent} is not writable")
    return OutputPaths.for_samples(samples)


class AtomicWriter:
    """Write files under temporary names; `commit()` renames them all into place,
    `discard()` (or leaving the `with` block by an exception) removes them."""

    def __init__(self) -> None:
        self._pending: list[tuple[Path, Path]] = []

    def write_lines(self, path: Path, lines: Iterable[str]) -> str:
        """Write one line per item; returns the file's sha256."""
        digest = hashlib.sha256()
        tmp = self._tmp(path)
        with open(tmp, "w", encoding="utf-8") as f:
            for line in lines:
                data = line + "\n"
                digest.update(data.encode("utf-8"))
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return digest.hexdigest()

    def write_text(self, path: Path, text: str) -> None:
        tmp = self._tmp(path)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    def place(self, tmp: Path, path: Path) -> None:
        """Rename a finished temporary file (a spool) to `path` at commit."""
        self._pending.append((tmp, path))

    def take(self, path: Path) -> Path | None:
        """Withdraw what was to become `path` at commit; returns its temporary file (now the
        caller's to read and delete), or None when nothing was."""
        for i, (tmp, target) in enumerate(self._pending):
            if target == path:
                del self._pending[i]
                return tmp
        return None

    def _tmp(self, path: Path) -> Path:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{next(_serial)}.tmp")
        self._pending.append((tmp, path))
        return tmp

    def commit(self) -> None:
        for tmp, path in self._pending:
            path.parent.mkdir(exist_ok=True)  # errors/ is made with the first file put in it
            os.replace(tmp, path)
        self._pending.clear()

    def discard(self) -> None:
        for tmp, _ in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()

    def __enter__(self) -> "AtomicWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def sha256_path(path: Path) -> str:
    """A file's sha256; for a folder, one hash over every file in it (names and contents)."""
    if not path.is_dir():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(f"{file.relative_to(path).as_posix()}\0{sha256_file(file)}\n".encode())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
