"""Find the pipelines of a project: every `Pipeline` subclass defined in `pipelines/*.py`."""

from __future__ import annotations

import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

from shaping.config import Project
from shaping.errors import PipelineLoadError, ShapingError
from shaping.pipeline import Pipeline


@dataclass(frozen=True)
class PipelineEntry:
    name: str
    cls: type[Pipeline]
    file: Path


def _import_failure(path: Path, project: Project, exc: BaseException) -> PipelineLoadError:
    shown = project.relative(path)
    if isinstance(exc, ShapingError):  # a definition error already names the pipeline
        line = next((f.lineno for f in reversed(traceback.extract_tb(exc.__traceback__))
                     if Path(f.filename).resolve() == path), None)
        return PipelineLoadError(f"{shown}:{line or '?'}: {exc}")
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() == path:
        line = exc.lineno
    else:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).resolve() == path]
        line = frames[-1].lineno if frames else None
    detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return PipelineLoadError(f"{shown}:{line or '?'}: failed to import: {type(exc).__name__}: {detail}")


def load_file(path: Path, project: Project) -> list[type[Pipeline]]:
    path = path.resolve()
    module_name = f"shaping_pipelines.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001 - any failure is reported with file and line
        del sys.modules[module_name]
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        raise _import_failure(path, project, exc) from exc
    return list(dict.fromkeys(  # a class under two names (an alias) is one pipeline
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Pipeline) and obj.__module__ == module_name
        and obj.is_runnable()
    ))


class Pipelines(dict[str, PipelineEntry]):
    """The pipelines found, by name; `broken` holds the files that failed to import, each with
    its one-line error (`pipelines/b.py:25: failed to import: NameError: ...`)."""

    def __init__(self) -> None:
        super().__init__()
        self.broken: dict[Path, PipelineLoadError] = {}
        #: names that more than one class defines (none of them runs): name -> why
        self.conflicts: dict[str, str] = {}


def discover(project: Project) -> Pipelines:
    """Every pipeline of the project. A file that fails to import is kept in `.broken`; it never
    stops the others from being found."""
    entries = Pipelines()
    folder = project.pipelines_dir
    if not folder.is_dir():
        return entries
    for extra in (str(project.root), str(folder)):  # as `python pipelines/x.py` would see it
        if extra not in sys.path:
            sys.path.insert(0, extra)
    defined: dict[str, list[PipelineEntry]] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            classes = load_file(path, project)
        except PipelineLoadError as exc:
            entries.broken[path.resolve()] = exc
            continue
        for cls in classes:
            defined.setdefault(cls.name, []).append(PipelineEntry(cls.name, cls, path.resolve()))
    for name, found in defined.items():
        if len(found) == 1:
            entries[name] = found[0]
            continue
        # one name, several files: neither is the pipeline (which one ran would depend on the
        # files' order); each file is reported, and the name runs again once it is unique
        where = " and ".join(f"{project.relative(e.file)} ({e.cls.__name__})" for e in found)
        problem = entries.conflicts[name] = f"pipeline name '{name}' is defined in {where}; give all but one another name"
        for file in dict.fromkeys(e.file for e in found):  # a file with several such names: one line naming each
            known = entries.broken.get(file)
            entries.broken[file] = PipelineLoadError(f"{known}; {problem}" if known else
                                                     f"{project.relative(file)}: {problem}")
    return entries


def find_pipeline(project: Project, name: str, entries: Pipelines | None = None) -> PipelineEntry:
    entries = discover(project) if entries is None else entries
    try:
        return entries[name]
    except KeyError as exc:
        if name in getattr(entries, "conflicts", {}):
            raise ShapingError(entries.conflicts[name]) from exc
        known = ", ".join(sorted(entries)) or f"none in {project.relative(project.pipelines_dir)}/"
        broken = getattr(entries, "broken", {})
        also = f"; broken, so not searched: {'; '.join(map(str, broken.values()))}" if broken else ""
        raise ShapingError(f"unknown pipeline '{name}' (known pipelines: {known}){also}") from exc
