"""Running `run_task` across a Ray cluster: `isf pipeline run NAME --executor ray [--address ...]`.

Records are split into contiguous shards; each shard runs in a Ray task with the same
dispatcher a local run uses, and returns its result lines, which the driver writes in input
order: the files, manifest, errors and cache semantics are those of a local run.

- The cache is shared through an actor that owns the project's SQLite file (on the driver's
  node): a shard starts by fetching the answers its records already have, and each new answer
  is committed by the actor before the task that asked sees it (grouped: one call at a time per
  shard, with what arrived meanwhile). A shard whose worker dies is run again by Ray, and what
  was answered before the death comes from the cache: nothing is paid twice.
- Rate limits are shared through one actor per run that hands out request and token permits,
  so many workers on one API key stay under its limits together.
- The pipeline object is shipped to the workers (with what `run()` set on it before calling
  `run_task`); on a cluster, the project folder must be at the same path on every node.
- Providers added with `shaping.providers.register` on the driver (in a pipeline file, say) go
  with each shard and are registered in its worker; entry-point providers are found in the
  packages installed where the worker runs.

`pip install 'shaping[ray]'`. Tests and docs use local mode (`ray.init()` on this machine).
"""

from __future__ import annotations

import logging
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

from shaping.config import ModelConfig, Project
from shaping.dispatch.cache import GroupCommitter, RequestCache, answer_row
from shaping.dispatch.dispatcher import Dispatcher, RecordIds, record_id_of
from shaping.dispatch.limits import RateLimits, estimate_tokens
from shaping.dispatch.stats import RunStats
from shaping.errors import ShapingError
from shaping.requests import ModelResponse
from shaping.spool import SampleSpool


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ShapingError("--executor ray needs Ray: pip install 'shaping[ray]'") from exc
    return ray


class _RemoteCache:
    """The dispatcher's cache interface, on a worker: prefetched answers, new ones committed by
    the cache actor before `store` returns."""

    def __init__(self, actor: Any, known: dict[str, str]) -> None:
        self._actor, self._known = actor, known
        self._group = GroupCommitter(self._commit)

    def holds(self, pipeline: str) -> bool:
        return True  # lookups here are dictionary reads of the prefetched answers

    def get(self, key: str) -> Any:
        stored = self._known.get(key)
        if stored is None:
            return None
        response = ModelResponse.model_validate_json(stored)
        response.cached = True
        return response

    async def store(self, key, pipeline, model, record_id, step, messages, params, response) -> None:
        row = answer_row(key, pipeline, model, record_id, step, messages, params, response)
        self._known[key] = row[6]
        await self._group.store(key, row)

    async def _commit(self, rows: list[tuple]) -> None:
        await self._actor.put_rows.remote(rows)

    def close(self) -> None:
        import ray

        rows = self._group.take_open()  # stored by senders cancelled before their commit
        if rows:
            ray.get(self._actor.put_rows.remote(rows))


class _RemoteLimits:
    """The channel's rate-limit interface, backed by the run's shared permits actor."""

    def __init__(self, actor: Any, model: str, config: ModelConfig) -> None:
        self._actor, self._model = actor, model
        self.active = bool(config.requests_per_minute or config.tokens_per_minute)
        self._tokens = bool(config.tokens_per_minute)

    async def before(self, requests: list) -> int:
        tokens = sum(estimate_tokens(r) for r in requests) if self._tokens else 0
        return await self._actor.acquire.remote(self._model, len(requests), tokens)

    async def after(self, reserved: int, used: int) -> None:
        await self._actor.after.remote(self._model, reserved, used)


def _actors(ray: Any) -> tuple[type, type]:
    class CacheActor:
        def __init__(self, folder: str) -> None:
            self.cache = RequestCache(Path(folder))

        def rows_for(self, record_ids: list[str]) -> dict[str, str]:
            return self.cache.rows_for(record_ids)

        def put_rows(self, rows: list[tuple]) -> None:
            self.cache.put_rows(rows)

        def close(self) -> None:
            self.cache.close()

    class PermitActor:
        def __init__(self, configs: dict[str, ModelConfig]) -> None:
            self.limits = {name: RateLimits(config) for name, config in configs.items()}

        async def acquire(self, model: str, count: int, tokens: int) -> int:
            return await self.limits[model].acquire(count, tokens)

        async def after(self, model: str, reserved: int, used: int) -> None:
            await self.limits[model].after(reserved, used)

    return ray.remote(CacheActor), ray.remote(PermitActor)


def _run_shard(pipeline: Any, method: str, records: list, first_index: int, settings: dict,
               cache_actor: Any, permit_actor: Any, providers: dict | None = None) -> dict[str, Any]:
    """In a Ray worker: one shard through a local dispatcher; returns its lines and counters.
    `providers`: what `shaping.providers.register` added on the driver (a pipeline file's own
    provider, say), registered here too before anything runs."""
    import ray

    from shaping.providers.registry import restore_registrations
    from shaping.record_hooks import record_driver

    restore_registrations(providers or {})
    task = getattr(pipeline, method)
    cache = None
    if cache_actor is not None:
        ids = [record_id_of(r, first_index + i) for i, r in enumerate(records)]
        cache = _RemoteCache(cache_actor, ray.get(cache_actor.rows_for.remote(ids)))
    stats = RunStats()
    with tempfile.TemporaryDirectory() as tmp:
        dispatcher = Dispatcher(
            pipeline.project, pipeline.name, workers=settings["workers"], annotate=settings["annotate"],
            commit=settings["commit"], stats=stats, cache=cache, metadata=settings["metadata"],
            spool_dir=Path(tmp),
            limits=(lambda name, config: _RemoteLimits(permit_actor, name, config)) if permit_actor else None,
        )
        dispatcher.drive_record = record_driver(pipeline)  # variants, the progressive retry, as locally

        async def main() -> SampleSpool:
            async with dispatcher.session():
                return await dispatcher.run_task(task, records, None, first_index=first_index)

        spool = anyio.run(main)
        spool.finish()
        errors = dispatcher.errors
        errors.finish()
        result = {"samples": spool.path.read_bytes(), "errors": errors.path.read_bytes(),
                  "counters": stats.counters()}
        dispatcher.discard_spools()
    if cache is not None:
        cache.close()
    return result


def _registered_providers(project: Project) -> dict:
    """The `register`ed providers this project's models use (entry points the workers find
    themselves, in the packages installed there)."""
    from shaping.providers.registry import registrations, resolve_provider_name

    used = set()
    for name in project.config.models:
        try:
            used.add(resolve_provider_name(name, project.model(name)))
        except ShapingError:
            continue  # a model no task uses may name none; a used one was checked before the run
    return registrations(used)


class RayExecutor:
    """Stands in for the dispatcher's `run_task` on the driver of a Ray run."""

    def __init__(self, pipeline: Any, dispatcher: Dispatcher, address: str | None, shards: int | None,
                 use_cache: bool) -> None:
        self.ray = ray = import_ray()
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     runtime_env={"env_vars": {"PYTHONPATH": ":".join(p for p in sys.path if p)}})
        self.pipeline, self.dispatcher = pipeline, dispatcher
        self.shards = shards or max(1, int(ray.cluster_resources().get("CPU", 1)))
        cache_cls, permit_cls = _actors(ray)
        project: Project = pipeline.project
        here = ray.get_runtime_context().get_node_id()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        on_driver = NodeAffinitySchedulingStrategy(node_id=here, soft=False)
        self.cache_actor = cache_cls.options(scheduling_strategy=on_driver).remote(str(project.cache_dir)) \
            if use_cache else None
        configs = {name: project.model(name) for name in project.config.models}
        self.permit_actor = permit_cls.remote(configs) if any(
            c.requests_per_minute or c.tokens_per_minute for c in configs.values()) else None
        self._run_shard = ray.remote(max_retries=3, retry_exceptions=False)(_run_shard)
        cloudpickle = ray.cloudpickle
        module = sys.modules.get(type(pipeline).__module__)
        if module is not None and module.__name__ != "__main__":
            cloudpickle.register_pickle_by_value(module)

    async def run_task(self, task: Any, records: Any, limit: int | None = None) -> SampleSpool:
        items = list(records if limit is None else (r for i, r in zip(range(limit), records)))
        d = self.dispatcher
        RecordIds.check(items, 0, f"pipeline '{d.pipeline_name}': run_task({task.__name__})")
        d.stats.records_total = (d.stats.records_total or 0) + len(items)
        size = max(1, math.ceil(len(items) / self.shards))
        settings = {"workers": d.workers, "annotate": d.annotate, "commit": d.commit, "metadata": d.metadata}
        providers = self.ray.put(_registered_providers(self.pipeline.project))
        refs = [self._run_shard.remote(self.pipeline, task.__name__, items[i:i + size], i, settings,
                                       self.cache_actor, self.permit_actor, providers)
                for i in range(0, len(items), size)]
        samples = SampleSpool(d.spool_dir, d.pipeline_name, d.annotate)
        d.spools.append(samples)
        for ref in refs:  # in input order, whatever order they finish in
            result = await ref
            for line in result["samples"].splitlines():
                samples.write(line)
            for line in result["errors"].splitlines():
                d.errors.write(line)
            d.stats.add(result["counters"])
        d.stats.samples += len(samples)
        samples.flush()
        return samples

    def close(self) -> None:
        if self.cache_actor is not None:
            self.ray.get(self.cache_actor.close.remote())

