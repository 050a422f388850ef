"""`isf pipeline run NAME --dry-run`: what a run would send and cost, without sending anything.

The pipeline runs as it would (its `run()`, its tasks, every record), with the request cache
answering what it holds and a stand-in (shaping.dispatch.stand_in) answering the rest. Nothing
is sent, no key is read, no output, cache entry or feedback is written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from anyio.from_thread import start_blocking_portal

from shaping.dispatch import Dispatcher, RunStats
from shaping.dispatch.cache import FILE_NAME, CacheUnreadable, RequestCache
from shaping.dispatch.stand_in import StandIn
from shaping.errors import PipelineError, ShapingError
from shaping.pipeline import Pipeline
from shaping.prices import Prices


@dataclass
class ModelEstimate:
    """One model's share of a dry run: requests a run would send and what they would cost."""

    model: str
    requests: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    prices: Prices | None
    answer_tokens: str  # the answer length and how it was chosen
    prompt_counted_by: str

    @property
    def local(self) -> bool:
        return self.prices is not None and self.prices.local

    def cost(self, batch: bool = False) -> float | None:
        if self.prices is None:
            return None
        return self.prices.cost(self.prompt_tokens, self.completion_tokens, batch=batch)


@dataclass
class DryRunResult:
    pipeline: str
    records: int
    models: list[ModelEstimate]
    #: records whose task stopped on an error (a stand-in answer it could not use, say): their
    #: later steps are not counted
    stopped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def total(self, batch: bool = False) -> float | None:
        """The priced models' total; None when no model has prices."""
        costs = [c for m in self.models if (c := m.cost(batch)) is not None]
        return sum(costs) if costs else None

    @property
    def unpriced(self) -> list[str]:
        return [m.model for m in self.models if m.prices is None and m.requests > m.cached]


def dry_run_pipeline(pipeline: Pipeline, *, limit: int | None = None, workers: int | None = None,
                     answer_tokens: dict[str | None, int] | None = None, use_cache: bool = True,
                     stats: RunStats | None = None) -> DryRunResult:
    """Drive `pipeline` with stand-in answers and count what a real run would send."""
    from shaping.runner import check_file_deps, check_run_options, event_loop_options, quiet_collector

    check_run_options(limit, workers)
    for tokens in (answer_tokens or {}).values():
        if tokens < 1:
            raise ShapingError(f"--answer-tokens must be at least 1, got {tokens}")
    project = pipeline.project
    check_file_deps(pipeline)
    for dep in pipeline.model_deps.values():
        project.resolved(dep.model_name)  # an unknown model or provider, bad options: one line now
    stats = stats or RunStats()
    cache, unread = None, None
    if use_cache and (project.cache_dir / FILE_NAME).exists():
        try:  # looked up, never written (nor moved aside when it is another version's)
            cache = RequestCache(project.cache_dir, read_only=True)
        except CacheUnreadable as exc:
            unread = f"the request cache was not read ({exc}): every request counts as new"
    stand_in = StandIn(answer_tokens, cache)
    stopped = None
    try:
        with tempfile.TemporaryDirectory(prefix="isf-dry-run-") as spool_dir:
            dispatcher = Dispatcher(project, pipeline.name, workers=workers or pipeline.workers, annotate=False,
                                    stats=stats, cache=cache, spool_dir=Path(spool_dir), stand_in=stand_in)
            from shaping.record_hooks import record_driver

            dispatcher.drive_record = record_driver(pipeline)  # as a run drives records (variants, retries)
            pipeline.limit = limit
            try:
                with quiet_collector(), start_blocking_portal(backend_options=event_loop_options()) as portal:
                    with portal.wrap_async_context_manager(dispatcher.session()):
                        from shaping.runner import Runtime

                        pipeline._runtime = Runtime(portal, dispatcher)
                        try:
                            pipeline.run()
                        except PipelineError as exc:
                            stopped = f"run() stopped on a stand-in answer: {exc.error_type}: {exc.message}"
                        except ShapingError:
                            raise
                        except Exception as exc:  # run() read a stand-in answer (parsed a query's text, say)
                            stopped = (f"run() stopped on a stand-in answer: {type(exc).__name__}: {exc}; "
                                       f"what it sent before is counted, what it would have sent after is not")
                        finally:
                            pipeline._runtime = None
            finally:
                dispatcher.discard_spools()
    finally:
        if cache is not None:
            cache.close()
        if pipeline._feedback_store is not None:
            pipeline._feedback_store.close()
            pipeline._feedback_store = None
    models = []
    for name, usage in stats.models.items():
        prices = project.resolved(name).prices
        models.append(ModelEstimate(
            model=name, requests=usage.requests, cached=usage.cached, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, prices=prices,
            answer_tokens=stand_in.lengths[name].source if name in stand_in.lengths else "-",
            prompt_counted_by=stand_in.counted_by.get(name, "-")))
    result = DryRunResult(pipeline.name, stats.records_done, models, dict(stats.errors))
    if unread:
        result.warnings.append(unread)
    if stopped:
        result.warnings.append(stopped)
    return result
