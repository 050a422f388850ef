"""`isf cache stats | clear`: the request cache."""

from __future__ import annotations

import click

from shaping.cli.app import out, project_of, user_errors


@click.group()
def cache() -> None:
    """Inspect and clear the request cache (training/.cache/)."""


@cache.command("stats")
@click.pass_context
@user_errors
def cache_stats(ctx: click.Context) -> None:
    """Answers kept per pipeline, and the size on disk."""
    from shaping.dispatch.cache import RequestCache

    store = RequestCache(project_of(ctx).cache_dir)
    try:
        stats = store.stats()
    finally:
        store.close()
    out.print(f"{stats.path} ({stats.size_bytes / 1e6:.1f} MB)")
    if not stats.by_pipeline:
        out.print("  empty")
    for name, count in stats.by_pipeline.items():
        out.print(f"  {name}: {count:,} answers")


@cache.command("clear")
@click.argument("name", required=False)
@click.pass_context
@user_errors
def cache_clear(ctx: click.Context, name: str | None) -> None:
    """Forget the answers of pipeline NAME, or of every pipeline."""
    from shaping.dispatch.cache import RequestCache

    store = RequestCache(project_of(ctx).cache_dir)
    try:
        deleted = store.clear(name)
    finally:
        store.close()
    out.print(f"cleared {deleted:,} answers" + (f" of {name}" if name else ""))
