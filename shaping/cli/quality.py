"""`isf pipeline sample | validate | errors | report`: looking at a data set before training."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from shaping.cli.app import err, out, pipeline, project_of, user_errors
from shaping.discovery import find_pipeline
from shaping.errors import ShapingError


def load_output(ctx: click.Context, name: str):
    from shaping.quality import Dataset
    project = project_of(ctx)
    entry = find_pipeline(project, name)
    paths = project.outputs(name)
    if paths.failed.exists():  # say so: what is read here is an earlier run's output
        err.print(Text(f"note: the last run of {name} FAILED (isf pipeline errors {name} shows why); "
                       f"this is the output of an earlier run", style="yellow"), soft_wrap=True)
    return entry, Dataset.load(name, paths)


@pipeline.command("sample")
@click.argument("name")
@click.option("-n", "count", default=10, show_default=True, help="How many samples.")
@click.option("--full", is_flag=True, help="Whole conversations instead of a truncated table.")
@click.option("--seed", default=0, show_default=True)
@click.pass_context
@user_errors
def sample_cmd(ctx: click.Context, name: str, count: int, full: bool, seed: int) -> None:
    """Random samples from the output of pipeline NAME."""
    import random

    from shaping.quality.dataset import last_turn
    from shaping.quality.turns import calls_text, message_text, tool_calls_of

    _, data = load_output(ctx, name)
    chosen = random.Random(seed).sample(data.samples, min(count, len(data.samples)))
    if full:
        for sample in chosen:
            out.print(Text(f"── {sample.get('id')}", style="bold"))
            for message in sample.get("messages") or []:
                if not isinstance(message, dict):
                    continue
                out.print(Text(f"{message.get('role')}: ", style="bold cyan"), end="")
                out.print(message_text(message), markup=False, highlight=False)
                if message.get("reasoning_content"):
                    out.print(Text(f"  reasoning: {message['reasoning_content']}", style="dim"), soft_wrap=True)
                if calls := tool_calls_of(message):
                    out.print(Text(f"  tool calls: {calls_text(calls)}", style="magenta"), soft_wrap=True)
        return
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("id", "prompt", "response"):
        table.add_column(column, overflow="fold", no_wrap=column == "id", ratio=None if column == "id" else 1)
    for sample in chosen:
        clip = lambda t: " ".join(t.split())[:200]  # noqa: E731
        table.add_row(Text(str(sample.get("id"))), Text(clip(last_turn(sample, "user"))),
                      Text(clip(last_turn(sample, "assistant"))))
    out.print(table)
    out.print(f"[dim]{len(chosen)} of {len(data.samples)} samples, seed {seed}; --full for whole conversations[/]")


#: problem lines validate prints per failing check (the report lists more)
SHOWN_PROBLEMS = 5
STATUS_STYLE = {"PASS": "green", "FAIL": "bold red", "INFO": "cyan", "N/A": "yellow"}


@pipeline.command("validate")
@click.argument("name")
@click.pass_context
@user_errors
def validate_cmd(ctx: click.Context, name: str) -> None:
    """The checklist before training; exit 1 when any check fails.

    Besides the text checks it counts assistant turns that are empty, cut off at the token limit
    or refused (failures unless `max_empty`, `max_truncated`, `max_refused` allow them), and
    those with reasoning or tool calls (figures only). Thresholds come from the pipeline's
    `quality = {...}` (see shaping.quality.Thresholds). A pipeline with prompt `variants` gets
    them side by side: samples, error rate by type, response length, judge score.
    """
    from shaping.quality import Thresholds, run_checks

    entry, data = load_output(ctx, name)
    checks = run_checks(data, Thresholds.for_pipeline(entry.cls))
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("", "check", "figure", "limit"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(Text(check.status, style=STATUS_STYLE[check.status]), Text(check.name), Text(check.figure),
                      Text(check.limit, style="dim"))  # text, never markup ("shaping[dedupe]")
    out.print(table)
    print_variants(data, entry.cls)
    failed = [c for c in checks if not c.passed]
    for check in failed:
        for problem in check.problems[:SHOWN_PROBLEMS]:
            out.print(Text.assemble((f"{check.name}: ", "red"), problem), soft_wrap=True)
        if len(check.problems) > SHOWN_PROBLEMS:
            out.print(Text(f"{check.name}: ... and {len(check.problems) - SHOWN_PROBLEMS} more "
                           f"(isf pipeline report {name} lists them)", style="dim"), soft_wrap=True)
    for check in checks:  # what dedupe would remove: a figure, with the first few it names
        if check.name == "dedupe would remove" and check.problems:
            for problem in check.problems[:SHOWN_PROBLEMS]:
                out.print(Text.assemble((f"{check.name}: ", "cyan"), problem), soft_wrap=True)
            if len(check.problems) > SHOWN_PROBLEMS:
                out.print(Text(f"{check.name}: ... and {len(check.problems) - SHOWN_PROBLEMS} more "
                               f"(isf pipeline report {name} lists more)", style="dim"), soft_wrap=True)
    judged = [c for c in checks if c.kind == "check"]
    unknown = [c.name for c in checks if c.kind == "unknown"]
    note = f"; not known from this output: {', '.join(unknown)}" if unknown else ""
    if failed:
        out.print(Text(f"{len(failed)} of {len(judged)} checks failed: {', '.join(c.name for c in failed)}{note}",
                       style="bold red"))
        sys.exit(1)
    out.print(Text(f"all {len(judged)} checks passed{note}", style="green"))


def variant_figures(data: Any, cls: type) -> Any:
    """The prompt variants' comparison (shaping.quality.variants): figures and a line; none
    declared or seen: neither."""
    from shaping.quality.variants import variant_comparison
    from shaping.variants import variant_names

    return variant_comparison(data, variant_names(cls))


def print_variants(data: Any, cls: type) -> None:
    """The prompt variants side by side (shaping.variants), when there are any."""
    from shaping.quality.variants import COLUMNS

    comparison = variant_figures(data, cls)
    figures = comparison.figures
    if not figures:
        if comparison.note:
            out.print(Text(comparison.note), soft_wrap=True)
        return
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold", title="variants",
                  title_justify="left", title_style="bold")
    for _, label in COLUMNS:
        table.add_column(label, overflow="fold")
    for figure in figures:
        row = figure.row()
        table.add_row(*(Text(row[key]) for key, _ in COLUMNS))
    out.print(table)
    if comparison.note:
        out.print(Text(comparison.note, style="dim"), soft_wrap=True)


@pipeline.command("errors")
@click.argument("name")
@click.pass_context
@user_errors
def errors_cmd(ctx: click.Context, name: str) -> None:
    """Failed records of pipeline NAME by type, with counts and one example each."""
    from shaping.quality import Dataset, errors_by_type
    from shaping.quality.dataset import read_errors
    from shaping.staleness import FAILED, failed_status

    project = project_of(ctx)
    find_pipeline(project, name)
    paths = project.outputs(name)
    if paths.failed.exists():  # the last run failed: its records are what needs looking at
        status = failed_status(name, paths)
        out.print(Text(f"{name}: {FAILED}: {status.reasons[0].message}", style="bold red"), soft_wrap=True)
        data = Dataset(name, paths, [], read_errors(paths.failed_errors) if paths.failed_errors.exists() else [])
        out.print(Text(f"failed records of that run ({project.relative(paths.failed_errors)}):", style="dim"))
    else:
        data = Dataset.load(name, paths)
    groups = errors_by_type(data)
    if not groups:
        out.print(f"{name}: no errors ({len(data.samples)} samples)")
        return
    out.print(Text(f"{name}: {len(data.errors)} failed records", style="bold"))
    for kind, items in groups.items():
        example = items[0]
        out.print(Text.assemble((f"{kind}", "bold red"), f"  {len(items)}"))
        out.print(f"  e.g. {example.get('id')}: {str(example.get('message'))[:300]}", markup=False, soft_wrap=True)


@pipeline.command("report")
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write it (default training/data/NAME.report.html).")
@click.option("--samples", "max_samples", default=300, show_default=True, help="Samples to include.")
@click.pass_context
@user_errors
def report_cmd(ctx: click.Context, name: str, output: Path | None, max_samples: int) -> None:
    """One self-contained HTML report: summary, checklist, lengths, prompt variants side by side,
    success rate over runs, errors, samples with steps."""
    from shaping.quality import Thresholds, run_checks
    from shaping.quality.checks import dedupe_preview
    from shaping.quality.report import render
    from shaping.history import read_history

    entry, data = load_output(ctx, name)
    limits = Thresholds.for_pipeline(entry.cls)
    html = render(data, run_checks(data, limits), max_samples=max_samples, dedupe=dedupe_preview(data, limits),
                  history=read_history(project_of(ctx), name), variants=variant_figures(data, entry.cls))
    target = output or data.paths.samples.with_name(f"{name}.report.html")
    if not target.parent.is_dir():
        raise ShapingError(f"output folder {target.parent} does not exist")
    target.write_text(html, encoding="utf-8")
    out.print(f"wrote {target}")
