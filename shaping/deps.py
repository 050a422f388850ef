"""What a pipeline declares it depends on: files it reads and models it calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shaping.error_types import ErrorType


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


class DatasetDep(Dependency):
    """`Pipeline.dataset_dep("allenai/WildChat-1M", split="train")`: records read through the
    `datasets` library (`pip install 'shaping[hf]'`), from the Hugging Face Hub or a local path
    (a folder of parquet/jsonl/arrow files, a `save_to_disk` folder); see shaping.datasets.source.

    On an instance it gives a `BoundDataset`: iterate it for the records (dicts, streamed, so
    memory stays flat and `--limit N` reads only what N records need), `.take(n)`, `.revision`.
    The revision it resolves to (the hub commit, or a hash of the local files) is recorded in
    the manifest; a new one makes the pipeline stale.
    """

    def __init__(self, path: str, split: str = "train", revision: str | None = None,
                 streaming: bool = True, data_files: Any = None, columns: list[str] | None = None) -> None:
        if not isinstance(path, (str, Path)) or not str(path):
            raise TypeError(f"dataset_dep: expected a hub dataset name or a local path, got {path!r}")
        if not isinstance(split, str) or not split:
            raise TypeError(f"dataset_dep: split must be a split name such as 'train', got {split!r}")
        if revision is not None and (not isinstance(revision, str) or not revision):
            raise TypeError(f"dataset_dep: revision must be a branch, tag or commit, got {revision!r}")
        if isinstance(columns, str) or (columns is not None and (
                not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns))):
            raise TypeError(f"dataset_dep: columns must be a list of column names, got {columns!r}")
        if data_files is not None and not isinstance(data_files, (str, list, tuple, dict)):
            raise TypeError(f"dataset_dep: data_files must be a pattern, a list or a dict of them, got {data_files!r}")
        self.path = str(path)
        self.split = split
        self.revision = revision
        self.streaming = bool(streaming)
        self.data_files = list(data_files) if isinstance(data_files, tuple) else data_files
        self.columns = list(columns) if columns is not None else None

    def bind(self, instance: Any) -> "BoundDataset":
        bound = instance.__dict__.setdefault("_bound_datasets", {})
        if self.attr not in bound or bound[self.attr].dep is not self:
            bound[self.attr] = BoundDataset(self, instance.project, getattr(instance, "name", None))
        return bound[self.attr]

    def source(self, project: Any) -> Any:
        """Where the records come from, after shaping.toml's `[datasets]` table."""
        from shaping.datasets.source import locate

        return locate(self.path, project.root, getattr(project.config, "datasets", None))

    def declared(self, project: Any) -> dict[str, Any]:
        """What the manifest records as asked (the resolved revision aside); staleness compares it."""
        return {"path": self.path, "source": self.source(project).label, "split": self.split,
                "revision": self.revision, "data_files": self.data_files, "columns": self.columns}

    def __repr__(self) -> str:
        return f"dataset_dep({self.path!r}, split={self.split!r})"


class BoundDataset:
    """A pipeline's data set for one run: iterable over its records (dicts), `.take(n)`,
    `.revision` (resolved once), `.rows_read` (records handed out so far)."""

    def __init__(self, dep: DatasetDep, project: Any, pipeline: str | None = None) -> None:
        self.dep = dep
        self.project = project
        self.pipeline = pipeline
        self.source = dep.source(project)
        self.rows_read = 0
        self._revision: str | None = None
        self._data: Any = None

    @property
    def attr(self) -> str:
        return self.dep.attr

    @property
    def revision(self) -> str:
        """The hub commit, or "sha256:..." of the local files; resolved once, then kept."""
        if self._revision is None:
            from shaping.datasets.source import DatasetProblem, resolve_revision

            try:
                self._revision = resolve_revision(self.source, self.dep.revision, self.project.cache_dir,
                                                  create_memo=True)
            except DatasetProblem as exc:
                raise self._error(exc) from exc
        return self._revision

    def open(self) -> Any:
        """The `datasets` object the records come from (loaded once; lazy when streaming):
        a missing data set, an unknown split or column is a DependencyError here."""
        if self._data is None:
            from shaping.datasets.source import DatasetProblem, open_dataset

            revision = self.revision
            try:
                self._data = open_dataset(self.source, split=self.dep.split, revision=revision,
                                          streaming=self.dep.streaming, data_files=self.dep.data_files,
                                          columns=self.dep.columns)
            except DatasetProblem as exc:
                raise self._error(exc) from exc
        return self._data

    def check(self) -> None:
        """Resolve and open now, afresh (once per run); where the columns are not known before
        reading, read one record."""
        self._revision = self._data = None
        self.rows_read = 0
        data = self.open()
        if self.dep.columns and data.column_names is None:
            next(iter(self._records(count=False)), None)

    def __iter__(self) -> Any:
        return self._records()

    def _records(self, count: bool = True) -> Any:
        from shaping.datasets.source import DatasetProblem, iterate

        rows = iterate(self.open(), self.dep.columns)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                return
            except DatasetProblem as exc:
                raise self._error(exc) from exc
            except Exception as exc:  # noqa: BLE001 - a read failing half way (network, a bad file)
                from shaping.datasets.source import _first_line

                raise self._error(f"failed while reading: {type(exc).__name__}: {_first_line(exc)}") from exc
            if count:
                self.rows_read += 1
            yield row

    def take(self, n: int) -> list[dict[str, Any]]:
        """The first `n` records (only those are read)."""
        import itertools

        return list(itertools.islice(self, n))

    def state(self) -> dict[str, Any]:
        """What the manifest records: the declaration and the revision it resolved to."""
        return {**self.dep.declared(self.project), "revision_resolved": self.revision,
                "streaming": self.dep.streaming}

    def _error(self, problem: Any) -> Exception:
        from shaping.errors import DependencyError

        owner = f"pipeline '{self.pipeline}': " if self.pipeline else ""
        text = str(problem)
        sep = "" if text.startswith((":", " (")) else " "
        return DependencyError(f"{owner}dataset_dep {self.attr}: {self.dep.path}{sep}{text}")

    def __getstate__(self) -> dict[str, Any]:
        """To a Ray worker: the resolved revision travels, the opened data set does not."""
        return {**self.__dict__, "_data": None}

    def __repr__(self) -> str:
        return f"<dataset {self.dep.path} split={self.dep.split}>"


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
                raise KShotError(f"{self.relpath}: {exc}") from exc
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
    """`Pipeline.feedback(examples=3, failures=0, progressive=False, start=0,
    retry_on=("validation_error",))`: learn from earlier runs (see `shaping.feedback`).

    Each run records its samples and failures in the project's feedback store; in a task,
    `self.feedback.conversation(prompt, system=...)` puts the most similar successful examples
    before the prompt as user/assistant turns and, with `failures=N`, the N most similar earlier
    failures after it as "previous errors to avoid". With `progressive=True` a record's first
    try has `start` examples, and a record failing with an error type in `retry_on` is run once
    more with all `examples` (`self.feedback.retrying` is then True) before its error is recorded.
    """

    def __init__(self, examples: int = 3, failures: int = 0, progressive: bool = False, start: int = 0,
                 retry_on: Any = (ErrorType.VALIDATION,)) -> None:
        for label, value in (("examples", examples), ("failures", failures), ("start", start)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TypeError(f"feedback: {label} must be a non-negative integer, got {value!r}")
        if not isinstance(progressive, bool):
            raise TypeError(f"feedback: progressive must be True or False, got {progressive!r}")
        if progressive and start >= examples:
            raise TypeError(f"feedback: with progressive=True, start ({start}) must be fewer than examples "
                            f"({examples}): the retry is the try with all of them")
        if isinstance(retry_on, str):
            retry_on = (retry_on,)
        if not isinstance(retry_on, (tuple, list, set, frozenset)) or not retry_on or \
                not all(isinstance(t, str) and t for t in retry_on):
            raise TypeError(f"feedback: retry_on must be error types such as ('validation_error',), got {retry_on!r}")
        self.examples = examples
        self.failures = failures
        self.progressive = progressive
        self.start = start
        self.retry_on = frozenset(retry_on)

    def bind(self, instance: Any) -> "BoundFeedback":
        return BoundFeedback(self, instance.feedback_store(), instance.name)


class BoundFeedback:
    def __init__(self, dep: FeedbackDep, store: Any, pipeline: str) -> None:
        self.dep, self.store, self.pipeline = dep, store, pipeline

    @property
    def attempt(self) -> int:
        """0: the record's first try; 1: the progressive retry (see FeedbackDep)."""
        from shaping.record_hooks import current

        now = current()
        return now.attempt if now is not None else 0

    @property
    def retrying(self) -> bool:
        """Whether this is the record's progressive retry, the try with all the examples."""
        return self.attempt > 0

    @property
    def k(self) -> int:
        """How many examples this try has: `start` on a progressive first try, else `examples`."""
        return self.dep.start if self.dep.progressive and not self.retrying else self.dep.examples

    def similar(self, prompt: str, k: int | None = None) -> list[Any]:
        return self.store.similar(self.pipeline, prompt, self.k if k is None else k)

    def failures(self, prompt: str, k: int | None = None) -> list[Any]:
        """The most similar earlier failures (`shaping.feedback.Failure`: type, message), best first."""
        return self.store.similar_failures(self.pipeline, prompt, self.dep.failures if k is None else k)

    def avoid(self, prompt: str, k: int | None = None) -> str:
        """The "previous errors to avoid" section for `prompt` (type and message of each similar
        earlier failure), or "" when there is none."""
        from shaping.feedback import AVOID_HEADER

        found = self.failures(prompt, k)
        return "\n".join([AVOID_HEADER, *(f.line() for f in found)]) if found else ""

    def messages(self, prompt: str, k: int | None = None) -> list[dict[str, str]]:
        turns: list[dict[str, str]] = []
        for example in reversed(self.similar(prompt, k)):  # the most similar nearest the prompt
            turns += [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": example.output}]
        return turns

    def conversation(self, prompt: str, system: str | None = None, k: int | None = None,
                     failures: int | None = None) -> list[dict[str, str]]:
        """`[system] + the most similar earlier examples + the user prompt`, the prompt followed
        by the most similar earlier failures when the dependency asks for them."""
        avoid = self.avoid(prompt, failures)
        return conversation(self.messages(prompt, k), f"{prompt}\n\n{avoid}" if avoid else prompt, system)
