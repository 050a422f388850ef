"""`isf batch list | cancel`: the provider batches a project's runs submitted (batch mode)."""

from __future__ import annotations

import time
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from shaping.cli.app import err, out, project_of, user_errors
from shaping.errors import ShapingError


@click.group()
def batch() -> None:
    """The provider batches of batch-mode runs (batch = true, or --batch): list, cancel."""


def _store(project: Any) -> Any:
    from shaping.dispatch.batch_store import FILE_NAME, BatchStore

    if not (project.cache_dir / FILE_NAME).exists():
        return None
    return BatchStore(project.cache_dir)


async def _with_provider(project: Any, model: str, action: Any) -> Any:
    """`action(provider)` with model `model`'s provider open (its key read as for a run)."""
    from shaping.providers.batch import BatchAPI

    provider = project.resolved(model).create_provider()
    if not isinstance(provider, BatchAPI):
        raise ShapingError(f"model '{model}': its provider has no batch API")
    await provider.open()
    try:
        return await action(provider)
    finally:
        await provider.aclose()


def _ago(at: float) -> str:
    seconds = max(0, int(time.time() - at))
    if seconds < 120:
        return f"{seconds}s ago"
    if seconds < 7200:
        return f"{seconds // 60}m ago"
    return f"{seconds // 3600}h ago"


@batch.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also show the batches whose results were read (closed).")
@click.option("--offline", is_flag=True, help="Show the status as last seen; ask no provider.")
@click.pass_context
@user_errors
def list_cmd(ctx: click.Context, show_all: bool, offline: bool) -> None:
    """The project's open batches: id, model, pipeline, requests, status now (asked of the provider)."""
    import anyio

    from shaping.providers.batch import BatchCallError

    project = project_of(ctx)
    store = _store(project)
    if store is None:
        out.print("no batches (no run of this project has used batch mode)")
        return
    try:
        rows = store.batches(include_closed=show_all)
        notes: dict[str, str] = {}
        if not offline:
            for row in rows:
                if row.batch_id is None or row.state == "closed":
                    continue
                try:
                    state = anyio.run(_with_provider, project, row.model,
                                      lambda provider, batch_id=row.batch_id: provider.get_batch(batch_id))
                except (ShapingError, BatchCallError) as exc:
                    notes[row.tag] = f"as last seen ({' '.join(str(exc).split())[:120]})"
                    continue
                store.update(row.tag, state.status, state.succeeded, state.failed)
            rows = store.batches(include_closed=show_all)
    finally:
        store.close_db()
    if not rows:
        out.print("no open batches" + ("" if show_all else " (--all shows those already read)"))
        return
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("batch", "model", "pipeline", "requests", "status", "done", "submitted", "state"):
        table.add_column(column, overflow="fold", justify="right" if column in ("requests", "done") else "left")
    for row in rows:
        status = Text(row.status)
        if row.tag in notes:
            status.append(f" {notes[row.tag]}", style="dim")
        done = f"{row.succeeded:,} ok, {row.failed:,} failed" if row.succeeded or row.failed else "-"
        table.add_row(row.batch_id or f"(unconfirmed {row.tag})", row.model, row.pipeline, f"{row.requests:,}",
                      status, done, _ago(row.created_at), row.state)
    out.print(table)
    if any(row.state != "closed" for row in rows):
        err.print(Text("open batches are re-attached (and their results read into the request cache) by the next "
                       "run of their pipeline; `isf batch cancel ID` stops one", style="dim"), soft_wrap=True)


@batch.command("cancel")
@click.argument("batch_id")
@click.pass_context
@user_errors
def cancel_cmd(ctx: click.Context, batch_id: str) -> None:
    """Cancel batch BATCH_ID (as `isf batch list` shows it)."""
    import anyio

    from shaping.providers.batch import BatchCallError

    project = project_of(ctx)
    store = _store(project)
    row = store.find(batch_id) if store is not None else None
    try:
        if row is None or row.batch_id is None:
            raise ShapingError(f"no batch {batch_id} in this project (isf batch list shows them)")
        if row.state == "closed":
            raise ShapingError(f"batch {batch_id} has ended and its results were read: nothing to cancel")
        try:
            state = anyio.run(_with_provider, project, row.model,
                              lambda provider: provider.cancel_batch(row.batch_id))
        except BatchCallError as exc:
            raise ShapingError(f"batch {batch_id}: {exc}") from exc
        store.update(row.tag, state.status, state.succeeded, state.failed)
    finally:
        if store is not None:
            store.close_db()
    out.print(f"batch {row.batch_id} ({row.model}, {row.requests:,} requests): {state.status}")
    err.print(Text(f"what it finished is read into the request cache by the next run of '{row.pipeline}', which "
                   f"asks the rest again; a run that submitted it and waits on it now fails the requests it did not "
                   f"answer (batch_cancelled)", style="dim"), soft_wrap=True)
