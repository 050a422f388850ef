"""`Pipeline`: what a user subclasses, in `pipelines/*.py`.

    class IdentityQA(Pipeline):
        name = "identity-qa"
        narrative = Pipeline.file_dep("identity/NARRATIVE.md")
        judge = Pipeline.model_dep("judge")

        def run(self):
            return self.run_task(self.ask, records=[{"id": "1", "fact": "..."}])

        def ask(self, record):
            answer = yield model_request([{"role": "user", "content": record["fact"]}], model=self.judge)
            return TrainingSample(id=record["id"], messages=[...])

Parameters: a pipeline's public class attributes with a simple value (str, int, float, bool,
None, list, tuple, dict), or any annotated value, are its run parameters, typed by the
annotation or else by the default. `isf pipeline run NAME --set batch_size=3` (or
`python pipelines/x.py --set ...`, or `pipeline.set_params(batch_size=3)`) overrides them for
one run; `isf pipeline list --params` shows them. Not parameters: Pipeline's own settings
(name, annotated, workers, dedupe, max_cost_usd, quality), dependencies, methods, names that
start with `_` or are UPPER_CASE, and attributes annotated `ClassVar[...]`. A run records every
parameter's value in its manifest; while the output was made with other values than the class
declares, `isf pipeline status` calls it STALE (changed_params). See shaping.params.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from shaping.config import Project
from shaping.deps import BoundKShot, DatasetDep, FeedbackDep, FileDep, KShotDep, ModelDep
from shaping.errors import DependencyError, PipelineDefinitionError, PipelineError, ShapingError
from shaping.params import Param, declared_params
from shaping.requests import ModelResponse, model_request
from shaping.samples import AnnotatedTrainingSample, TrainingSample

if TYPE_CHECKING:
    from shaping.runner import Runtime

__all__ = [
    "AnnotatedTrainingSample",
    "ModelResponse",
    "Pipeline",
    "PipelineError",
    "TrainingSample",
    "model_request",
]

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def default_name(cls_name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"-\1", cls_name).lower()


class Pipeline:
    #: the name used by `isf pipeline run NAME` and for output files; derived from the
    #: class name (IdentityQA -> identity-qa) when not given
    name: ClassVar[str]
    #: write input data, steps and times with each sample (`--no-annotate` overrides)
    annotated: ClassVar[bool] = True
    #: how many records are worked on at once (`--workers` overrides)
    workers: ClassVar[int] = 256
    #: remove duplicate samples before the output is written: "exact", or {"near": 0.9, "on":
    #: "pair" | "both" | "prompt" | "response"} (see shaping.quality.dedupe; near needs shaping[dedupe])
    dedupe: ClassVar[Any] = None
    #: stop taking records once a run would spend more than this many US dollars
    #: (`--max-cost` overrides; see shaping.dispatch.budget)
    max_cost_usd: ClassVar[float | None] = None
    #: quality gates: {"max_error_rate": 0.5, "min_judge_score": N} (see shaping.runner, shaping.judge)
    quality: ClassVar[dict[str, Any] | None] = None
    #: prompt A/B: {"plain": ..., "step_by_step": ...}; `self.variant(record)` gives a record's
    #: (name, value), the same in every run (see shaping.variants)
    variants: ClassVar[dict[str, Any] | None] = None

    file_deps: ClassVar[dict[str, FileDep]] = {}
    model_deps: ClassVar[dict[str, ModelDep]] = {}
    dataset_deps: ClassVar[dict[str, DatasetDep]] = {}
    _uses_feedback: ClassVar[bool] = False
    _params: ClassVar[dict[str, Param]] = {}

    file_dep = staticmethod(FileDep)
    model_dep = staticmethod(ModelDep)
    dataset_dep = staticmethod(DatasetDep)
    kshot_dep = staticmethod(KShotDep)
    feedback = staticmethod(FeedbackDep)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = default_name(cls.__name__)
        where = f"pipeline {cls.__qualname__}"
        if not isinstance(cls.name, str) or not NAME_PATTERN.match(cls.name):
            raise PipelineDefinitionError(
                f"{where}: name {cls.name!r} must be lowercase letters, digits, '.', '_' or '-' "
                f"(it names the output files)"
            )
        where = f"pipeline '{cls.name}'"
        if not isinstance(cls.annotated, bool):
            raise PipelineDefinitionError(f"{where}: annotated must be True or False, got {cls.annotated!r}")
        if not isinstance(cls.workers, int) or isinstance(cls.workers, bool) or cls.workers < 1:
            raise PipelineDefinitionError(f"{where}: workers must be a positive integer, got {cls.workers!r}")
        if cls.dedupe is not None:
            from shaping.quality.dedupe import DedupeSettings

            try:
                DedupeSettings.parse(cls.dedupe)
            except ValueError as exc:
                raise PipelineDefinitionError(f"{where}: dedupe: {exc}") from exc
        cap = cls.max_cost_usd
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0):
            raise PipelineDefinitionError(f"{where}: max_cost_usd must be a positive number of US dollars, "
                                          f"got {cap!r}")
        if cls.variants is not None:
            from shaping.variants import check_variants

            check_variants(cls)
        files: dict[str, FileDep] = {}
        models: dict[str, ModelDep] = {}
        datasets: dict[str, DatasetDep] = {}
        feedback = False
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                if (klass is not Pipeline and isinstance(value, (FileDep, ModelDep, DatasetDep, FeedbackDep))
                        and inspect.isfunction(inspect.getattr_static(Pipeline, attr, None))):
                    raise PipelineDefinitionError(f"{where}: {attr} is a method of Pipeline; give the "
                                                  f"{type(value).__name__} another name")
                if isinstance(value, FileDep):
                    files[attr] = value
                elif isinstance(value, ModelDep):
                    models[attr] = value
                elif isinstance(value, DatasetDep):
                    datasets[attr] = value
                elif isinstance(value, FeedbackDep):
                    feedback = True
        cls.file_deps, cls.model_deps, cls._uses_feedback = files, models, feedback
        cls.dataset_deps = datasets
        cls._params = declared_params(cls, Pipeline)

    def __init__(self, project: Project | None = None) -> None:
        self.project = project or Project.find(self.source_dir())
        #: set by `execute()` / `--limit`: `run_task` takes at most this many records
        self.limit: int | None = None
        self._runtime: Runtime | None = None  # set for the length of a run by shaping.runner
        self._kshot_overrides: dict[str, Any] = {}
        self._kshot_bound: dict[str, BoundKShot] = {}
        self._feedback_store: Any = None
        self._params_set: dict[str, Any] = {}  # what set_params / --set gave this run
        self._files_read: dict[str, Any] = {}  # what read_project_file read: {path: FileState}

    def __getstate__(self) -> dict[str, Any]:
        """What travels to a Ray worker: the pipeline and what run() set on it, not the run's
        event loop or open files."""
        return {**self.__dict__, "_runtime": None, "_feedback_store": None, "_kshot_bound": {}}

    @classmethod
    def source_file(cls) -> Path | None:
        try:
            return Path(inspect.getfile(cls)).resolve()
        except (TypeError, OSError):
            return None

    @classmethod
    def source_dir(cls) -> Path:
        source = cls.source_file()
        return source.parent if source else Path.cwd()

    @classmethod
    def uses_feedback(cls) -> bool:
        return cls._uses_feedback

    def feedback_store(self) -> Any:
        """The project's feedback store, opened on first use."""
        if self._feedback_store is None:
            from shaping.feedback import FeedbackStore

            self._feedback_store = FeedbackStore(self.project.feedback_path)
        return self._feedback_store

    @classmethod
    def parameters(cls) -> dict[str, Param]:
        """The pipeline's run parameters by name (see the module docstring and shaping.params)."""
        return cls._params

    def set_params(self, **values: Any) -> None:
        """Override parameters for this pipeline's runs (what `--set` does), each value checked
        against the parameter's type: `pipeline.set_params(batch_size=3, mode="template")`."""
        from shaping.params import unknown

        for key, value in values.items():
            if key not in self._params:
                raise unknown(type(self), key)
            value = self._params[key].validate(value, f"parameter {key}")
            setattr(self, key, value)
            self._params_set[key] = value

    def param_values(self) -> dict[str, Any]:
        """Every parameter's value for this pipeline (its class default unless set)."""
        return {key: getattr(self, key) for key in self._params}

    def read_project_file(self, relpath: str, what: str | None = None) -> str:
        """Read a file named at run time (a parameter's path, say), relative to the project root,
        like a file_dep: the run's manifest records its hash (`files_read`) and `status` says
        STALE when it changes. Call it from run(). `what` names it in the error for a missing file."""
        from shaping.manifest import file_state

        path = (self.project.root / relpath).resolve()
        what = what or "file"
        if not path.is_file():
            raise DependencyError(f"pipeline '{self.name}': {what}: {relpath} not found (looked for {path})")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise DependencyError(f"pipeline '{self.name}': {what}: cannot read {relpath}: {exc}") from exc
        self._files_read[str(relpath)] = file_state(path, self.project.root)
        return text

    @classmethod
    def kshot_deps(cls) -> dict[str, KShotDep]:
        return {attr: dep for attr, dep in cls.file_deps.items() if isinstance(dep, KShotDep)}

    def configure_kshot(self, file: str | None = None, name: str | None = None,
                        count: int | None = None, required: bool | None = None) -> None:
        """Override the k-shot dependency's file, configuration, count or `required`
        (what the --k-shot-* flags do)."""
        deps = self.kshot_deps()
        if not deps:
            raise ShapingError(f"pipeline '{self.name}' declares no kshot_dep; "
                               f"the --k-shot-* flags apply only to pipelines that do")
        if len(deps) > 1:
            raise ShapingError(f"pipeline '{self.name}' declares several kshot_deps "
                               f"({', '.join(deps)}); set them with configure_kshot in Python")
        if count is not None and count < 1:
            raise ShapingError(f"--k-shot-count must be at least 1, got {count}")
        given = {"relpath": file, "config": name, "count": count, "required": required}
        self._kshot_overrides = {k: v for k, v in given.items() if v is not None}
        if file is not None:  # the declared configuration name belongs to the declared file
            self._kshot_overrides["config"] = name
        self._kshot_bound.clear()

    def _bound_kshot(self, dep: KShotDep) -> BoundKShot:
        bound = self._kshot_bound.get(dep.attr)
        if bound is None:
            settings = {"relpath": dep.relpath, "config": dep.config, "count": dep.count,
                        "required": dep.required, **self._kshot_overrides}
            bound = self._kshot_bound[dep.attr] = BoundKShot(dep, self.project.root, **settings)
        return bound

    @classmethod
    def is_runnable(cls) -> bool:
        return cls.run is not Pipeline.run

    # -- what a pipeline implements -------------------------------------------------------

    def run(self) -> list[TrainingSample]:
        """Produce the samples; usually `return self.run_task(self.some_task, records=...)`."""
        raise NotImplementedError(f"pipeline '{self.name}' must define run()")

    # -- what a pipeline calls from run() ---------------------------------------------------

    def run_task(self, task: Callable[[Any], Any], records: Iterable[Any]) -> list[TrainingSample]:
        """Run the generator method `task` once per record, all records concurrently.

        Returns the samples in input order; records that failed are written to
        `errors/<name>.jsonl` and are not returned. With `--limit N`, takes the first N records.
        """
        runtime = self._require_runtime("run_task")
        return runtime.run_task(task, records, self.limit)

    def query(self, model: Any, messages: Any, **params: Any) -> ModelResponse:
        """Send one request and wait for it: for set-up work in `run()` before the tasks."""
        runtime = self._require_runtime("query")
        return runtime.call(lambda: runtime.dispatcher.query(model, messages, **params))

    def judge_sample(self, model: Any, sample: TrainingSample, rubric: str, scale: tuple[int, int] = (1, 5),
                     **options: Any) -> Any:
        """A task step that scores `sample` with an LLM judge by `rubric` and puts the score and
        rationale in `sample.metadata["judge"]`: `sample = yield from self.judge_sample(self.judge_model,
        sample, rubric="...")`. Options: `name`, `context`, `include_reasoning`, request params.
        With `quality = {"min_judge_score": N}` lower-scored samples go to a rejected file
        (see shaping.judge)."""
        from shaping.judge import judge

        return judge(model, sample, rubric, scale, **options)

    def judge_samples(self, model: Any, samples: list[TrainingSample], rubric: str,
                      scale: tuple[int, int] = (1, 5), **options: Any) -> Any:
        """`judge_sample` for several samples with one yield: `samples = yield from
        self.judge_samples(self.judge_model, samples, rubric="...", context=[...])`."""
        from shaping.judge import judge_all

        return judge_all(model, samples, rubric, scale, **options)

    def variant(self, record: Any = None) -> tuple[str, Any]:
        """This record's prompt variant: `(name, value)` from `variants`, a function of the
        record's id. Left out, or the task's own record: by the id the run knows that record by
        (its "id", else its position); another string or number is taken as an id. See
        shaping.variants.variant_for."""
        from shaping.variants import variant_for

        return variant_for(self, record)

    def _require_runtime(self, what: str) -> "Runtime":
        if self._runtime is None:
            raise ShapingError(
                f"pipeline '{self.name}': {what}() works during a run; start one with "
                f"execute(), `isf pipeline run {self.name}` or shaping.run_pipeline()"
            )
        return self._runtime

    # -- entry points ------------------------------------------------------------------------

    def execute(self, argv: list[str] | None = None) -> None:
        """Run from the command line, with the same flags as `isf pipeline run`."""
        from shaping.cli import execute_pipeline

        execute_pipeline(self, argv)
