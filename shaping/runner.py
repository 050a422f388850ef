"""Run a pipeline from Python: `run_pipeline(pipeline, limit=..., ...)`. The CLI calls this.

A run checks everything it can before the first request (file deps, model names, API keys,
the output folder), drives `pipeline.run()` with an event loop in a helper thread, then writes
samples, errors and the manifest under temporary names and renames them into place.
"""

from __future__ import annotations

import functools
import gc
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal

from shaping._version import __version__
from shaping.dispatch import Dispatcher, RunStats
from shaping.dispatch.cache import RequestCache
from shaping.deps import BoundKShot
from shaping.dispatch.driver import describe, now
from shaping.error_types import AUTH_ERRORS
from shaping.errors import DependencyError, PipelineError, RunFailedError, ShapingError, TaskContractError
from shaping.gitinfo import git_state
from shaping.history import RunHistory
from shaping.judge import min_score_of, rejection
from shaping.lock import RunLock
from shaping.manifest import (
    Counts, FileState, KShotState, Manifest, batch_records, file_state, source_hashes,
)
from shaping.output import AtomicWriter, OutputPaths, output_paths
from shaping.params import jsonable
from shaping.pipeline import Pipeline
from shaping.dispatch.budget import Budget
from shaping.dispatch.dispatcher import unpriced
from shaping.record_hooks import record_driver
from shaping.samples import AnnotatedTrainingSample, TrainingSample
from shaping.spool import SampleSpool, remove_leftovers
from shaping.quality.dedupe_output import check_option as check_dedupe_option, dedupe_run_output


@dataclass
class RunResult:
    pipeline: str
    paths: OutputPaths
    manifest: Manifest
    stats: RunStats
    warnings: list[str] = field(default_factory=list)
    #: why the run failed (its outputs were not put in place), or None
    failure: str | None = None

    @property
    def stopped(self) -> str | None:
        """Why the run stopped before its last record (the cost cap), or None."""
        return self.manifest.stopped


class Runtime:
    """What `Pipeline.run_task` and `Pipeline.query` reach during a run."""

    def __init__(self, portal: BlockingPortal, dispatcher: Dispatcher, executor: Any = None) -> None:
        self.portal = portal
        self.dispatcher = dispatcher
        self.executor = executor  # a RayExecutor, or None to run tasks here

    def call(self, fn: Any, *args: Any) -> Any:
        return self.portal.call(fn, *args)

    def run_task(self, task: Any, records: Any, limit: int | None) -> Any:
        runner = self.executor or self.dispatcher
        return self.portal.call(runner.run_task, task, records, limit)


def check_file_deps(pipeline: Pipeline) -> dict[str, FileState]:
    """Every file dependency's state; k-shot files are loaded and checked too."""
    states = {}
    for attr in pipeline.file_deps:
        bound = getattr(pipeline, attr)
        if isinstance(bound, BoundKShot) and bound.load() is None:
            continue  # not required, and not there
        if not bound.path.exists():
            raise DependencyError(
                f"pipeline '{pipeline.name}': file_dep {attr}: {bound.dep.relpath} not found "
                f"(looked for {bound.path})"
            )
        states[attr] = file_state(bound.path, pipeline.project.root)
    return states


def check_dataset_deps(pipeline: Pipeline) -> None:
    """Every dataset_dep resolved (its revision, kept for the manifest) and opened, before the
    first request: a missing data set, an unknown split or column stops the run here."""
    for attr in pipeline.dataset_deps:
        getattr(pipeline, attr).check()


def check_run_options(limit: int | None, workers: int | None) -> None:
    """--limit and --workers are at least 1 (checked before anything else, "nothing to do" included)."""
    for flag, value in (("limit", limit), ("workers", workers)):
        if value is not None and value < 1:
            raise ShapingError(f"--{flag} must be at least 1, got {value}")


def run_pipeline(
    pipeline: Pipeline,
    *,
    limit: int | None = None,
    workers: int | None = None,
    output: Path | None = None,
    annotate: bool | None = None,
    stats: RunStats | None = None,
    use_cache: bool = True,
    executor: str = "local",
    address: str | None = None,
    max_cost: float | None = None,
    batch: bool = False,
) -> RunResult:
    """Run `pipeline` and write its samples, errors and manifest; see the module docstring.

    Answers come from the project's request cache where it has them (`use_cache=False` neither
    reads nor writes it), so an interrupted run resumes without paying twice.
    `executor="ray"` runs the tasks on a Ray cluster (`address`, default: local) with the same
    outputs (see shaping.ray_executor). `max_cost` (USD; default: the pipeline's `max_cost_usd`)
    caps what the run spends: see shaping.dispatch.budget. `batch` puts every model whose
    provider has a batch API, and that is served by the provider's own API (or is local), in batch
    mode (as `batch = true` in a model's table does; a warning names those left online): see
    shaping.dispatch.batch.
    """
    name = pipeline.name
    project = pipeline.project
    check_run_options(limit, workers)
    annotate = pipeline.annotated if annotate is None else annotate
    if executor not in ("local", "ray"):
        raise ShapingError(f"executor must be 'local' or 'ray', got {executor!r}")
    if executor == "ray":
        from shaping.ray_executor import import_ray

        import_ray()  # say how to install it before anything else
    if pipeline.dedupe is not None:
        check_dedupe_option(pipeline.dedupe)  # near needs datasketch: say so before any request
    files = check_file_deps(pipeline)
    check_dataset_deps(pipeline)
    models = {}
    batch_models: list[str] = []  # in batch mode (shaping.dispatch.batch)
    online: dict[str, str] = {}  # models --batch left online: why
    for attr, dep in pipeline.model_deps.items():  # unknown model or provider, bad options: fail now
        model = project.resolved(dep.model_name)   # (keys are read when a model first sends)
        if model.batched(batch):
            batch_models.append(dep.model_name)
        elif batch:
            from shaping.providers.batch import left_online

            online[dep.model_name] = left_online(model.name, model.config, model.provider_cls) or "not batched"
        models[attr] = model.state
    check_batch_mode(batch_models, executor, use_cache, pipeline.max_cost_usd if max_cost is None else max_cost)
    cap = pipeline.max_cost_usd if max_cost is None else max_cost
    if cap is not None:
        check_cost_cap(pipeline, cap, executor)
    paths = output_paths(project, name, output)
    project.cache_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(project.cache_dir / f"{name}.lock", name):
        remove_leftovers(paths.samples.parent, name)
        cache = RequestCache(project.cache_dir) if use_cache else None
        stats = stats or RunStats()
        if online:
            stats.warnings.append("--batch left " + ", ".join(f"'{m}' ({why})" for m, why in online.items())
                                  + " online; a model whose server has a batch API takes batch = true in its table")
        try:
            with RunHistory(pipeline, stats, project.relative(paths.samples)) as history:  # one line a run
                result = history.result = _run_locked(
                    pipeline, paths=paths, files=files, models=models, annotate=annotate, limit=limit,
                    workers=workers, stats=stats, cache=cache, cap=cap, ray=(address,) if executor == "ray" else None,
                    batch=(batch, bool(batch_models)))
            if cache is not None and cache.moved_aside is not None:
                result.warnings.append(f"the request cache was from another version of shaping; "
                                       f"it was kept as {cache.moved_aside} and a new one started")
            return result
        finally:
            if cache is not None:
                cache.close()


def check_batch_mode(models: list[str], executor: str, use_cache: bool, cap: float | None) -> None:
    """Batch mode runs here (not on Ray), keeps its answers in the request cache, and has no
    cost cap (a round's cost is known only once its batch has ended)."""
    if not models:
        return
    named = ", ".join(models)
    if executor != "local":
        raise ShapingError(f"batch mode (models {named}) runs with the local executor: leave out --executor ray")
    if not use_cache:
        raise ShapingError(f"batch mode (models {named}) keeps every answer in the request cache, which a run "
                           f"resumes from: leave out --no-cache")
    if cap is not None:
        raise ShapingError(f"--max-cost works with online models only; {named} are in batch mode (leave out "
                           f"--max-cost or max_cost_usd, or run online)")


def check_cost_cap(pipeline: Pipeline, cap: float, executor: str) -> None:
    """A cost cap needs a positive amount, the local executor and a price for every model that
    is not local (a model used without a model_dep is checked when it first sends)."""
    if not cap > 0:
        raise ShapingError(f"--max-cost must be more than 0 (US dollars), got {cap}")
    if executor != "local":
        raise ShapingError("the cost cap (--max-cost, max_cost_usd) works with the local executor only: "
                           "leave out --executor ray")
    project = pipeline.project
    for dep in pipeline.model_deps.values():
        if project.resolved(dep.model_name).prices is None:
            raise ShapingError(unpriced(dep.model_name))


def _run_locked(pipeline, *, paths, files, models, annotate, limit, workers, stats, cache, ray,
                cap=None, batch=(False, False)) -> RunResult:
    name, project = pipeline.name, pipeline.project
    git = git_state(project.root)
    stats = stats or RunStats()
    started_at, started = now(), time.monotonic()
    kshots = {attr: getattr(pipeline, attr) for attr in pipeline.kshot_deps()}
    params = {key: jsonable(value) for key, value in pipeline.param_values().items()}  # before run() can change them
    pipeline._files_read = {}
    min_score = min_score_of(pipeline)
    used = {attr: bound.info for attr, bound in kshots.items()}
    dispatcher = Dispatcher(
        project, name, workers=workers or pipeline.workers, annotate=annotate,
        commit=git.commit, stats=stats, cache=cache, spool_dir=paths.samples.parent,
        metadata={"kshot": next(iter(used.values())) if len(used) == 1 else used} if used else None,
        budget=Budget(cap) if cap is not None else None,
        batch=batch[0], take_all=batch[1],
        reject=functools.partial(rejection, min_score=min_score) if min_score is not None else None,
    )
    dispatcher.drive_record = record_driver(pipeline)  # variants, Pipeline.feedback(progressive=True)
    pipeline.limit = limit
    executor = None
    if ray is not None:
        from shaping.ray_executor import RayExecutor

        executor = RayExecutor(pipeline, dispatcher, address=ray[0], shards=None, use_cache=cache is not None)
    try:
        with quiet_collector(), start_blocking_portal(backend_options=event_loop_options()) as portal:
            with portal.wrap_async_context_manager(dispatcher.session()):
                pipeline._runtime = Runtime(portal, dispatcher, executor)
                stopped = None
                try:
                    samples = pipeline.run()
                except PipelineError as exc:  # run() itself failed (a query() that got a 401, say)
                    stopped = f"run() failed: {exc.error_type}: {exc.message}"
                finally:
                    pipeline._runtime = None
        if stopped is not None:  # nothing to write: the failure is recorded, the outputs kept
            write_failure(paths, stopped, now())
            raise RunFailedError(f"pipeline '{name}' failed: {stopped}; {_kept(project, paths)}")
        failure = run_failure(pipeline, stats)
        stopped = dispatcher.budget.stopped if dispatcher.budget is not None else None
        if stopped is not None:
            total = f" of {stats.records_total:,}" if stats.records_total else ""
            stopped = f"{stopped}; {stats.records_done:,}{total} records done"
        with AtomicWriter() as writer:
            if failure is not None:  # nothing good is replaced: the failed run is written beside
                samples_target, errors_target = None, paths.failed_errors
            else:
                samples_target, errors_target = paths.samples, paths.errors
            if isinstance(samples, SampleSpool) and samples in dispatcher.spools:
                output_sha, count = samples.finish(), len(samples)  # what run_task wrote is the output
                if samples_target is not None:
                    writer.place(samples.path, samples_target)
            else:
                samples = _check_samples(pipeline, samples)
                if dispatcher.reject is not None:  # made in run(): the same threshold
                    samples = dispatcher.keep(samples)
                count = len(samples)
                output_sha = (writer.write_lines(samples_target, _lines(samples, annotate))
                              if samples_target is not None else None)
            deduped = None
            if pipeline.dedupe is not None and samples_target is not None:  # in the same commit
                deduped = dedupe_run_output(writer, paths, pipeline.dedupe, project)
                output_sha, count = deduped.sha256, deduped.kept
            rejected = None
            if dispatcher.rejections and samples_target is not None:  # none rejected: no file
                rejected = FileState(path=project.relative(paths.rejected), sha256=dispatcher.rejected.finish())
                paths.rejected.parent.mkdir(exist_ok=True)
                writer.place(dispatcher.rejected.path, paths.rejected)
            errors_sha = dispatcher.errors.finish()
            no_errors = not dispatcher.errors.path.stat().st_size
            if not no_errors:  # no failed record: no errors file (an empty one is no JSON Lines dataset)
                writer.place(dispatcher.errors.path, errors_target)
            completed_at = now()
            source = pipeline.source_file()
            combined, sources = source_hashes(source, project.pipelines_dir, project.root) if source else (None, {})
            manifest = Manifest(
                pipeline=name,
                pipeline_source=project.relative(source) if source else None,
                pipeline_source_sha256=combined,
                pipeline_sources=sources,
                shaping_version=__version__,
                git=git,
                file_deps=files,
                model_deps=models,
                dataset_deps={attr: getattr(pipeline, attr).state() for attr in pipeline.dataset_deps},
                params=params,
                params_set=sorted(pipeline._params_set),
                files_read=dict(pipeline._files_read),
                kshot={attr: KShotState(file=b.relpath, config=b.config_name, count=b.count,
                                        required=b.required, used=b.info) for attr, b in kshots.items()},
                limit=limit,
                stopped=stopped,
                max_cost_usd=cap,
                annotated=annotate,
                counts=Counts(records=stats.records_done, samples=count, errors=dict(stats.errors),
                              rejected=dispatcher.rejections),
                usage=dict(stats.models),
                batches=batch_records(stats),
                started_at=started_at,
                completed_at=completed_at,
                duration_s=round(time.monotonic() - started, 3),
                output=FileState(path=project.relative(samples_target or paths.samples), sha256=output_sha or ""),
                errors_output=FileState(path=project.relative(errors_target), sha256=errors_sha),
                rejected_output=rejected,
                **(deduped.manifest_fields if deduped is not None else {}),
            )
            if failure is not None:
                write_failure(paths, failure, completed_at, manifest, writer)
            else:
                writer.write_text(paths.manifest, manifest.to_json())
        if no_errors:  # an earlier run's errors are not this run's
            errors_target.unlink(missing_ok=True)
        result = RunResult(pipeline=name, paths=paths, manifest=manifest, stats=stats, failure=failure,
                           warnings=list(stats.warnings))
        if failure is not None:
            raise RunFailedError(f"pipeline '{name}' failed: {failure}; {_kept(project, paths)}; failed "
                                 f"records are in {project.relative(paths.failed_errors)}", result)
        for leftover in (paths.failed, paths.failed_errors):  # an earlier failure is over
            leftover.unlink(missing_ok=True)
        if deduped is None or not deduped.removed:  # an earlier output's removed samples are not this one's
            paths.removed.unlink(missing_ok=True)
        if rejected is None:  # nor an earlier output's rejected ones
            paths.rejected.unlink(missing_ok=True)
        if pipeline.uses_feedback():  # what this run made becomes examples for the next
            pipeline.feedback_store().record_run(name, paths.samples, paths.errors)
    finally:
        if executor is not None:
            executor.close()
        dispatcher.discard_spools()  # those renamed into place are gone already
        if pipeline._feedback_store is not None:
            pipeline._feedback_store.close()
            pipeline._feedback_store = None
    return result


def write_failure(paths: OutputPaths, failure: str, failed_at: Any, manifest: Manifest | None = None,
                  writer: AtomicWriter | None = None) -> None:
    """Record a failed run in `<name>.failed.json`: why, when, and what it would have recorded."""
    text = json.dumps({"failure": failure, "failed_at": failed_at.isoformat(),
                       "manifest": manifest.model_dump(mode="json") if manifest else None}, indent=2) + "\n"
    if writer is not None:
        writer.write_text(paths.failed, text)
    else:
        with AtomicWriter() as own:
            own.write_text(paths.failed, text)


def _kept(project: Any, paths: OutputPaths) -> str:
    if paths.samples.exists():
        return f"the previous output {project.relative(paths.samples)} was kept"
    return "no output was written"


#: a run fails when more of its records than this failed, unless the pipeline's
#: `quality = {"max_error_rate": ...}` says otherwise
DEFAULT_MAX_ERROR_RATE = 0.5


def run_failure(pipeline: Pipeline, stats: RunStats) -> str | None:
    """Why this run failed, in one line, or None: an auth error, every record failed, or more
    records failed than the pipeline's `max_error_rate` allows."""
    failed, done = stats.error_count, stats.records_done
    if not failed:
        return None
    limit = (getattr(pipeline, "quality", None) or {}).get("max_error_rate", DEFAULT_MAX_ERROR_RATE)
    top = stats.errors.most_common(1)[0][0]
    auth = next((t for t in AUTH_ERRORS if stats.errors.get(t)), None)
    if auth is not None:
        why, top = "authentication failed", auth
    elif failed >= done:
        why = "every record failed"
    elif failed / done > limit:
        why = f"{failed / done:.0%} of records failed, over max_error_rate {limit:.0%}"
    else:
        return None
    by_type = ", ".join(f"{kind} {n}" for kind, n in stats.errors.most_common(4))
    first = " ".join((stats.first_errors.get(top) or "").split())[:300]
    return f"{why} ({failed} of {done} records: {by_type}); first {top}: {first}"


def _lines(samples: list[TrainingSample], annotate: bool) -> Iterable[str]:
    for sample in samples:
        if annotate:
            if not isinstance(sample, AnnotatedTrainingSample):  # made in run(): no provenance
                sample = AnnotatedTrainingSample(**dict(sample))
            yield sample.to_line().decode()
        else:
            yield sample.minimal_json().decode()


def event_loop_options() -> dict[str, Any]:
    """uvloop when it is installed (it is a dependency on Linux and macOS): the event loop and
    its sockets cost about a third less CPU per request than asyncio's own (bench/RESULTS.md)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


@contextmanager
def quiet_collector() -> Iterator[None]:
    """Keep the garbage collector off what existed before the run (modules, classes, config)
    and let it run less often: a run allocates millions of short-lived objects, and each
    collection walks what is alive, again and again. Measured (bench/): 580 -> 420 us of CPU
    per request on the one-step benchmark. No collection first: it took 30 ms of every run
    (far more beside a loaded torch), and whatever garbage is frozen is collectable again
    once the run unfreezes it."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(20_000, 50, 50)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def _check_samples(pipeline: Pipeline, samples: Any) -> list[TrainingSample]:
    if isinstance(samples, TrainingSample):
        samples = [samples]
    if not isinstance(samples, Iterable) or isinstance(samples, (str, bytes, dict)):
        raise TaskContractError(
            f"pipeline '{pipeline.name}': run() returned {describe(samples)}; "
            f"expected a list of TrainingSample (what run_task returns)"
        )
    samples = list(samples)
    for i, sample in enumerate(samples):
        if not isinstance(sample, TrainingSample):
            raise TaskContractError(
                f"pipeline '{pipeline.name}': run() returned a list whose item {i} is "
                f"{describe(sample)}; expected TrainingSample"
            )
    return samples


__all__ = ["AnnotatedTrainingSample", "RunResult", "check_file_deps", "run_pipeline"]
