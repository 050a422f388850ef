"""What a pipeline declares it depends on: files it reads and models it calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def conversation(examples: list[dict[str, str]], prompt: str, system: str | None) -> list[dict[str, str]]:
    """`[system] + example turns + the user prompt`, ready for `model_request`."""
    head = [{"role": "system", "content": system}] if system else []
    return head + examples + [{"role": "user", "content": prompt}]


class Dependency:
    """What a Pipeline declares as a class attribute; it knows its attribute's name, and on an
    instance gives what a task works with (`bind`)."""

    attr = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = name

    def __get__(self, instance: Any, owner: type) -> Any:
        return self if instance is None else self.bind(instance)

    def bind(self, instance: Any) -> Any:
        return self


class FileDep(Dependency):
    """`Pipeline.file_dep("identity/NARRATIVE.md")`: a file (or a folder: every file in it
    counts) under the project root.

    On an instance it gives a `BoundFile` with `.path` (absolute) and `.read()`.
    """

    def __init__(self, path: str) -> None:
        if not isinstance(path, (str, Path)) or not str(path):
            raise TypeError(f"file_dep: expected a path relative to the project root, got {path!r}")
        self.relpath = str(path)

    def bind(self, instance: Any) -> "BoundFile":
        return BoundFile(self, instance.project.root, getattr(instance, "name", None))

    def __repr__(self) -> str:
        return f"file_dep({self.relpath!r})"


class BoundFile:
    def __init__(self, dep: FileDep, root: Path, pipeline: str | None = None) -> None:
        self.dep = dep
        self.path = (root / dep.relpath).resolve()
        self.pipeline = pipeline

    @property
    def attr(self) -> str:
        return self.dep.attr

    def read(self, encoding: str = "utf-8") -> str:
        """The file's text; a problem is one line naming the pipeline, the dependency and the file."""
        try:
            return self.path.read_text(encoding=encoding)
        except UnicodeDecodeError as exc:
            raise self._error(f"is not {encoding} text (byte {exc.start}); use read_bytes()") from exc
        except OSError as exc:
            raise self._problem(exc) from exc

    def read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise self._problem(exc) from exc

    def _problem(self, exc: OSError) -> Exception:
        if isinstance(exc, IsADirectoryError):
            return self._error(f"is a folder; read the files in it through .path "
                               f"(e.g. sorted(self.{self.attr}.path.glob('*.txt')))")
        if isinstance(exc, FileNotFoundError):
            return self._error(f"not found (looked for {self.path})")
        return self._error(f"cannot be read: {exc.strerror or exc}")

    def _error(self, what: str) -> Exception:
        from shaping.errors import DependencyError

        owner = f"pipeline '{self.pipeline}': " if self.pipeline else ""
        return DependencyError(f"{owner}file_dep {self.attr}: {self.dep.relpath} {what}")

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"<file {self.dep.relpath}>"


class ModelDep(Dependency):
    """`Pipeline.model_dep("judge")`: a model named in shaping.toml.

    Pass it as `model=` to `model_request` or `query`.
    """

    def __init__(self, model_name: str) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise TypeError(f"model_dep: expected a model name from shaping.toml, got {model_name!r}")
        self.model_name = model_name

    def __repr__(self) -> str:
        return f"model_dep({self.model_name!r})"


class KShotDep(FileDep):
    """`Pipeline.kshot_dep("identity/k_shot_samples.json", config="short-moral", count=2)`.

    A file dependency (staleness tracks it) whose examples a task puts before its prompt:
    `self.kshot.conversation(prompt, system=...)` or `self.kshot.messages()`. With
    `required=False` a missing file means no examples; any other problem is still an error.
    """

    def __init__(self, path: str, config: str | None = None, count: int | None = None,
                 required: bool = True) -> None:
        super().__init__(path)
        if count is not None and (not isinstance(count, int) or count < 1):
            raise TypeError(f"kshot_dep: count must be a positive integer, got {count!r}")
        self.config = config
        self.count = count
        self.required = required

    def bind(self, instance: Any) -> "BoundKShot":
        return instance._bound_kshot(self)

    def __repr__(self) -> str:
        return f"kshot_dep({self.relpath!r}, config={self.config!r}, count={self.count!r})"


class BoundKShot(BoundFile):
    """The k-shot examples one run uses: the dependency with any --k-shot-* flags applied."""

    def __init__(self, dep: KShotDep, root: Path, relpath: str, config: str | None,
                 count: int | None, required: bool) -> None:
        super().__init__(dep, root)
        self.relpath = relpath
        self.path = (root / relpath).resolve()
        self.config_name = config
        self.count = count
        self.required = required
        self._loaded: Any = None
        self._pairs: list[dict[str, str]] | None = None

    def load(self) -> Any:
        """Load and check the examples; None when the file is missing and not required."""
        from shaping.kshot import KShotError, load

        if self._pairs is None:
            if not self.path.exists() and not self.required:
                self._pairs = []
                return None
            source = load(self.path, shown=self.relpath)
            config = source.get(self.config_name)
            try:
                self._pairs = config.pairs(self.count)
            except KShotError as exc:
                raise KShotError(f"{self.relpath}: {exc}") from None
            self._loaded = config
        return self._loaded

    @property
    def config(self) -> Any:
        """The `KShotConfig` in use, or None when there are no examples."""
        self.load()
        return self._loaded

    def messages(self) -> list[dict[str, str]]:
        """The example turns, user/assistant alternating, ending on assistant."""
        self.load()
        return [dict(m) for m in self._pairs]

    def conversation(self, prompt: str, system: str | None = None) -> list[dict[str, str]]:
        """`[system] + examples + the user prompt`, ready for `model_request`."""
        return conversation(self.messages(), prompt, system)

    @property
    def info(self) -> dict[str, Any] | None:
        """Which source, configuration and count were used (None: no examples)."""
        config = self.config
        if config is None:
            return None
        return {"source": self.relpath, "configuration": config.name, "count": len(self._pairs) // 2}


class FeedbackDep(Dependency):
    """`Pipeline.feedback(examples=3)`: learn from earlier runs (see `shaping.feedback`).

    Each run records its samples and failures in the project's feedback store; in a task,
    `self.feedback.conversation(prompt, system=...)` puts the most similar successful examples
    before the prompt as user/assistant turns.
    """

    def __init__(self, examples: int = 3) -> None:
        if not isinstance(examples, int) or examples < 0:
            raise TypeError(f"feedback: examples must be a non-negative integer, got {examples!r}")
        self.examples = examples

    def bind(self, instance: Any) -> "BoundFeedback":
        return BoundFeedback(self, instance.feedback_store(), instance.name)


class BoundFeedback:
    def __init__(self, dep: FeedbackDep, store: Any, pipeline: str) -> None:
        self.dep, self.store, self.pipeline = dep, store, pipeline

    def similar(self, prompt: str, k: int | None = None) -> list[Any]:
        return self.store.similar(self.pipeline, prompt, self.dep.examples if k is None else k)

    def messages(self, prompt: str, k: int | None = None) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for example in reversed(self.similar(prompt, k)):  # the most similar nearest the prompt
            turns += [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.output}]
        return turns

    def conversation(self, prompt: str, system: str | None = None, k: int | None = None) -> list[dict[str, str]]:
        """`[system] + the most similar earlier examples + the user prompt`."""
        return conversation(self.messages(prompt, k), prompt, system)
