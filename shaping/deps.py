"""What a pipeline declares it depends on: files it reads and models it calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class FileDep:
    """`Pipeline.file_dep("identity/NARRATIVE.md")`: a file under the project root.

    On an instance it gives a `BoundFile` with `.path` (absolute) and `.read()`.
    """

    def __init__(self, path: str) -> None:
        if not isinstance(path, (str, Path)) or not str(path):
            raise TypeError(f"file_dep: expected a path relative to the project root, got {path!r}")
        self.relpath = str(path)
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return self
        return BoundFile(self, instance.project.root)

    def __repr__(self) -> str:
        return f"file_dep({self.relpath!r})"


class BoundFile:
    def __init__(self, dep: FileDep, root: Path) -> None:
        self.dep = dep
        self.path = (root / dep.relpath).resolve()

    @property
    def attr(self) -> str:
        return self.dep.attr

    def read(self, encoding: str = "utf-8") -> str:
        return self.path.read_text(encoding=encoding)

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<file {self.dep.relpath}>"


class ModelDep:
    """`Pipeline.model_dep("judge")`: a model named in shaping.toml.

    Pass it as `model=` to `model_request` or `query`.
    """

    def __init__(self, model_name: str) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise TypeError(f"model_dep: expected a model name from shaping.toml, got {model_name!r}")
        self.model_name = model_name
        self.attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __repr__(self) -> str:
        return f"model_dep({self.model_name!r})"
