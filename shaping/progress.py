"""What a person sees while a run goes and when it ends: a live line and a one-screen summary.

The display reads the run's counters a few times a second; the dispatcher never waits on it.
"""

from __future__ import annotations

from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from shaping.dispatch.stats import RunStats


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class RunDisplay:
    """`with RunDisplay(console, stats, name): ...` shows progress on a terminal, nothing elsewhere."""

    def __init__(self, console: Console, stats: RunStats, name: str) -> None:
        self.console = console
        self.stats = stats
        self.name = name
        self._live: Live | None = None

    def render(self) -> Table | Group:
        grid = self._records_line()
        if self.stats.batches:
            return Group(grid, batch_line(self.stats))
        return grid

    def _records_line(self) -> Table:
        s = self.stats
        grid = Table.grid(padding=(0, 1))
        total = s.records_total
        bar = ProgressBar(total=total, completed=s.records_done, width=30)
        counts = f"{s.records_done}/{total}" if total else f"{s.records_done}"
        errors = Text(f"{s.error_count} errors", style="red" if s.error_count else "dim")
        cells = [Text(self.name, style="bold"), bar, Text(f"{counts} records"), errors,
                 Text(f"{s.rate(s.requests):.1f} req/s")]
        costs = [u.cost_usd for u in s.models.values() if u.cost_usd is not None]
        if costs:
            cells.append(Text(_usd(sum(costs))))
        grid.add_row(*cells, Text(_duration(s.elapsed_s), style="dim"))
        return grid

    def __enter__(self) -> "RunDisplay":
        if self.console.is_terminal:
            self._live = Live(get_renderable=self.render, console=self.console,
                              refresh_per_second=4, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)


def batch_line(s: RunStats) -> Text:
    """Batch mode: the round, the batches open and their status, requests, time waiting."""
    open_ = [b for b in s.batches.values() if not b.done]
    statuses = Counter(b.status for b in open_)
    parts = [f"round {s.batch_rounds}" if s.batch_rounds else "no round yet"]
    if open_:
        parts.append(f"{len(open_)} batch{'es' if len(open_) > 1 else ''} open ("
                     + ", ".join(f"{n} {status}" for status, n in statuses.most_common()) + ")")
        parts.append(f"{sum(b.succeeded + b.failed for b in open_):,}/{sum(b.requests for b in open_):,} requests done")
    parts.append(f"{len(s.batches)} in all")
    parts.append(f"waiting {_duration(s.waiting_s)}")
    return Text("  batches: " + " · ".join(parts), style="cyan")


def summary(result, console: Console) -> None:
    """Print the end-of-run summary of a `RunResult`."""
    m = result.manifest
    errors = sum(m.counts.errors.values())
    head = Text.assemble(
        (m.pipeline, "bold"), ": ", (f"{m.counts.samples} samples", "green"), ", ",
        (f"{errors} errors", "red" if errors else "dim"),
        f" from {m.counts.records} records in {m.duration_s:.1f}s "
        f"({m.counts.records / m.duration_s if m.duration_s else 0:.1f} records/s)",
    )
    if m.limit:
        head.append(f"  [--limit {m.limit}: partial]", style="yellow")
    lines: list = [head]
    if m.stopped:
        lines.append(Text(f"  PARTIAL: {m.stopped}", style="bold yellow"))
    if errors:
        by_type = ", ".join(f"{k} {v}" for k, v in sorted(m.counts.errors.items(), key=lambda kv: -kv[1]))
        lines.append(Text(f"  failed records by type: {by_type}", style="red"))
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="dim")
    priced = any(u.cost_usd is not None for u in m.usage.values())
    columns = ["model", "requests", "cached", "failed", "tokens in", "tokens out"] + (["cost"] if priced else [])
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for model, u in m.usage.items():
        tokens_in = f"{u.prompt_tokens:,}" + (f" ({u.cached_tokens:,} cached)" if u.cached_tokens else "")
        tokens_out = f"{u.completion_tokens:,}" + (f" ({u.reasoning_tokens:,} reasoning)" if u.reasoning_tokens else "")
        row = [model, f"{u.requests:,}", f"{u.cached:,}", f"{u.failed:,}", tokens_in, tokens_out]
        if priced:
            row.append("-" if u.cost_usd is None else f"${u.cost_usd:,.4f}")
        table.add_row(*row)
    if m.usage:
        lines.append(table)
    if priced:
        total = sum(u.cost_usd or 0.0 for u in m.usage.values())
        cap = f" of the ${m.max_cost_usd:,.2f} cap" if m.max_cost_usd is not None else ""
        in_batch = sum(u.batch_requests for u in m.usage.values())
        batch = f"; {in_batch:,} answers from batches, at batch prices" if in_batch else ""
        lines.append(Text(f"  cost: {_usd(total)}{cap} (answers from the cache cost nothing{batch})", style="dim"))
    if m.batches:
        rounds = max((b.round or 0 for b in m.batches), default=0)
        shown = ", ".join(f"{b.id or '?'} ({b.model}, {b.requests:,}, {b.status})" for b in m.batches[:4])
        more = f", ... ({len(m.batches) - 4} more in the manifest)" if len(m.batches) > 4 else ""
        waited = f", waited {_duration(result.stats.waiting_s)}" if result.stats is not None else ""
        lines.append(Text(f"  batches: {len(m.batches)} in {rounds} round{'s' if rounds != 1 else ''}{waited}: "
                          f"{shown}{more}", style="dim"))
    paths = Table.grid(padding=(0, 2))
    if result.failure is not None:
        paths.add_row(Text("  FAILED", style="bold red"), "outputs not replaced")
        paths.add_row(Text("  failed records", style="dim"), str(result.paths.failed_errors))
        paths.add_row(Text("  failure", style="dim"), str(result.paths.failed))
    else:
        paths.add_row(Text("  samples", style="dim"), str(result.paths.samples))
        paths.add_row(Text("  errors", style="dim"),
                      str(result.paths.errors) if result.paths.errors.exists() else "none (no record failed)")
        if m.counts.rejected:
            paths.add_row(Text("  rejected", style="dim"),
                          f"{result.paths.rejected} ({m.counts.rejected} under min_judge_score)")
        paths.add_row(Text("  manifest", style="dim"), str(result.paths.manifest))
        dedupe = m.dedupe[-1] if m.dedupe else None
        if dedupe is not None:  # the pipeline's `dedupe` option
            removed = dedupe.before - dedupe.kept
            paths.add_row(Text("  dedupe", style="dim"), f"removed {removed} ({dedupe.removed_exact} exact, "
                          f"{dedupe.removed_near} near)" + (f": {result.paths.removed}" if removed else ""))
    lines.append(paths)
    console.print(Group(*lines))


def _usd(value: float | None) -> str:
    if value is None:
        return "-"
    return f"${value:,.2f}" if value >= 1 else f"${value:,.4f}"


def dry_run_report(result, console: Console) -> None:
    """Print a `DryRunResult`: per model, what a run would send and what it would cost."""
    head = Text.assemble((result.pipeline, "bold"), f": dry run over {result.records:,} records; nothing was sent")
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    columns = ["model", "requests", "cached", "tokens in", "tokens out", "online", "batch"]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    for m in result.models:
        new = m.requests - m.cached
        online = "local" if m.local else _usd(m.cost())
        batch = "local" if m.local else _usd(m.cost(batch=True))
        table.add_row(m.model, f"{new:,}", f"{m.cached:,}", f"{m.prompt_tokens:,}", f"{m.completion_tokens:,}",
                      online, batch)
    online, batch = result.total(), result.total(batch=True)
    if len(result.models) > 1 or not result.models:
        table.add_row(Text("total", style="bold"), "", "", "", "", Text(_usd(online), style="bold"),
                      Text(_usd(batch), style="bold"))
    lines: list = [head, table]
    for m in result.models:
        price = "local model: no charge" if m.local else (f"prices: {m.prices.source}" if m.prices else "no price known")
        if m.requests == m.cached:
            how = "every answer is in the cache"
        else:
            how = f"answers of {m.answer_tokens}; {m.prompt_counted_by}"
        lines.append(Text(f"  {m.model}: {how}; {price}", style="dim"))
    if result.unpriced:
        lines.append(Text(f"  no price for {', '.join(result.unpriced)}: their cost is not in the total; set "
                          f"price_per_million_input/_output in their [models.NAME] tables", style="yellow"))
    if result.stopped:
        by_type = ", ".join(f"{k} {v}" for k, v in sorted(result.stopped.items(), key=lambda kv: -kv[1]))
        lines.append(Text(f"  {sum(result.stopped.values())} records stopped on a stand-in answer ({by_type}): "
                          f"their later steps are not counted", style="yellow"))
    for warning in result.warnings:
        lines.append(Text(f"  {warning}", style="yellow"))
    console.print(Group(*lines))
