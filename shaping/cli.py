"""`isf`: a thin command line over shaping's Python API."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shaping import __version__
from shaping.config import Project
from shaping.discovery import discover, find_pipeline
from shaping.dispatch.cache import RequestCache
from shaping.dispatch import RunStats
from shaping.errors import PipelineError, ShapingError
from shaping.pipeline import Pipeline
from shaping.progress import RunDisplay, summary
from shaping.runner import run_pipeline
from shaping.staleness import Status, dependency_order, pipeline_status, project_status

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 1) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    sys.exit(code)


def user_errors(fn: Any) -> Any:
    """Turn the errors users cause into one line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShapingError as exc:
            fail(str(exc))
        except PipelineError as exc:
            fail(f"run() failed: {exc.error_type}: {exc.message}")
        except KeyboardInterrupt:
            fail("interrupted: no output file was changed; answered requests are cached, "
                 "so running the same command again resumes where this run stopped", code=130)

    return wrapper


def project_of(ctx: click.Context) -> Project:
    return Project.find(ctx.obj.get("project"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", type=click.Path(file_okay=False, path_type=Path),
              help="Project folder (default: the nearest folder upward holding shaping.toml).")
@click.version_option(__version__, prog_name="isf")
@click.pass_context
def main(ctx: click.Context, project: Path | None) -> None:
    """Generate LLM training data with shaping pipelines."""
    ctx.ensure_object(dict)["project"] = project


@main.group()
def pipeline() -> None:
    """List and run the pipelines in pipelines/*.py."""


@pipeline.command("list")
@click.pass_context
@user_errors
def list_cmd(ctx: click.Context) -> None:
    """Show every pipeline with its file and what it depends on."""
    project = project_of(ctx)
    entries = discover(project)
    if not entries:
        out.print(f"no pipelines in {project.relative(project.pipelines_dir)}/")
        return
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("name", "file", "files", "models"):
        table.add_column(column, overflow="fold", no_wrap=column in ("name", "file"))
    for entry in entries.values():
        cls = entry.cls
        table.add_row(
            entry.name,
            project.relative(entry.file),
            "\n".join(dep.relpath for dep in cls.file_deps.values()) or "-",
            "\n".join(dep.model_name for dep in cls.model_deps.values()) or "-",
        )
    out.print(table)


def run_options(fn: Any) -> Any:
    """The flags shared by `isf pipeline run` and `python pipelines/x.py`."""
    options = [
        click.option("--limit", type=int, help="Take only the first N records (a partial run)."),
        click.option("--workers", type=int,
                     help="Records worked on at once (default: the pipeline's `workers`, else 256)."),
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Samples file (default training/data/NAME.jsonl); errors and manifest go beside it."),
        click.option("--annotate/--no-annotate", default=None,
                     help="Write input data, steps and times with each sample "
                          "(default: the pipeline's `annotated`)."),
        click.option("--k-shot-config-file", "kshot_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="K-shot examples to use instead of the pipeline's kshot_dep file (JSON or PROMPT:/RESPONSE: text)."),
        click.option("--k-shot-config-name", "kshot_name", help="Which configuration of the k-shot file to use."),
        click.option("--k-shot-count", "kshot_count", type=int, help="Use only the first N example pairs."),
        click.option("--require-k-shot/--no-require-k-shot", "kshot_required", default=None,
                     help="Fail when the k-shot file is missing / go without examples then."),
        click.option("--no-cache", "no_cache", is_flag=True,
                     help="Neither read nor write the request cache (training/.cache/)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress display or summary."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_and_report(pipeline_obj: Pipeline, limit: int | None, workers: int | None,
                   output: Path | None, annotate: bool | None, no_cache: bool, quiet: bool,
                   kshot_file: Path | None = None, kshot_name: str | None = None,
                   kshot_count: int | None = None, kshot_required: bool | None = None) -> None:
    for flag, value in (("--limit", limit), ("--workers", workers)):
        if value is not None and value < 1:
            raise ShapingError(f"{flag} must be at least 1, got {value}")
    if (kshot_file, kshot_name, kshot_count, kshot_required) != (None, None, None, None):
        pipeline_obj.configure_kshot(
            file=pipeline_obj.project.relative(kshot_file.resolve()) if kshot_file else None,
            name=kshot_name, count=kshot_count, required=kshot_required)
    stats = RunStats()
    with RunDisplay(err, stats, pipeline_obj.name) if not quiet else _nothing():
        result = run_pipeline(pipeline_obj, limit=limit, workers=workers, output=output,
                              annotate=annotate, stats=stats, use_cache=not no_cache)
    for warning in result.warnings:
        err.print(Text.assemble(("warning: ", "yellow"), warning), soft_wrap=True)
    if not quiet:
        summary(result, out)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@pipeline.command("run")
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--stale", is_flag=True, help="Run every pipeline that is not CURRENT, upstream first.")
@click.option("--force", is_flag=True, help="Run even when the output is CURRENT.")
@run_options
@click.pass_context
@user_errors
def run_cmd(ctx: click.Context, names: tuple[str, ...], stale: bool, force: bool, **options: Any) -> None:
    """Run pipelines and write training/data/NAME.jsonl, its errors and manifest.

    A pipeline whose output is CURRENT is skipped unless --force (or --limit/-o) is given.
    Answers already in the request cache are not sent again.
    """
    project = project_of(ctx)
    entries = discover(project)
    if not names and not stale:
        raise click.UsageError("give a pipeline NAME, or --stale to run every stale pipeline")
    for name in names:
        find_pipeline(project, name, entries)
    order = dependency_order(project, entries)
    wanted = [n for n in order if n in names] if names else order
    explicit = force or any(options[k] is not None for k in ("limit", "output", "kshot_file", "kshot_name",
                                                             "kshot_count", "kshot_required"))
    done: dict[str, Status] = {}
    for name in order:
        status = pipeline_status(entries[name], project, done)
        if name in wanted and (explicit or not status.is_current):
            if len(wanted) > 1 and not options["quiet"]:
                out.print(Text(f"{name}: {status.headline()}, running", style="bold"))
            run_and_report(entries[name].cls(project), **options)
            status = pipeline_status(entries[name], project, done)
        elif name in wanted and not options["quiet"]:
            out.print(f"{name} is {status.headline()}: nothing to do (--force runs it anyway)")
        done[name] = status


@pipeline.command("status")
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the statuses as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when any pipeline shown is not CURRENT (for CI).")
@click.pass_context
@user_errors
def status_cmd(ctx: click.Context, names: tuple[str, ...], as_json: bool, check: bool) -> None:
    """Say which outputs are CURRENT, STALE (and why), PARTIAL or MISSING."""
    project = project_of(ctx)
    entries = discover(project)
    for name in names:
        find_pipeline(project, name, entries)
    statuses = [s for s in project_status(project, entries).values() if not names or s.name in names]
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses], indent=2))
    else:
        styles = {"CURRENT": "green", "STALE": "yellow", "PARTIAL": "yellow", "MISSING": "red"}
        for s in statuses:
            out.print(Text.assemble((f"{s.name}: ", "bold"), (s.headline(), styles[s.state])))
            for reason in s.reasons:
                out.print(f"  {reason.message}", soft_wrap=True)
    if check and any(not s.is_current for s in statuses):
        sys.exit(1)


def load_output(ctx: click.Context, name: str):
    from shaping.quality import Dataset
    from shaping.staleness import default_paths

    project = project_of(ctx)
    entry = find_pipeline(project, name)
    return entry, Dataset.load(name, default_paths(project, name))


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

    _, data = load_output(ctx, name)
    chosen = random.Random(seed).sample(data.samples, min(count, len(data.samples)))
    if full:
        for sample in chosen:
            out.print(Text(f"── {sample.get('id')}", style="bold"))
            for message in sample.get("messages") or []:
                out.print(Text(f"{message.get('role')}: ", style="bold cyan"), end="")
                out.print(str(message.get("content")), markup=False, highlight=False)
        return
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("id", "prompt", "response"):
        table.add_column(column, overflow="fold", no_wrap=column == "id", ratio=None if column == "id" else 1)
    for sample in chosen:
        clip = lambda t: " ".join(t.split())[:200]  # noqa: E731
        table.add_row(str(sample.get("id")), clip(last_turn(sample, "user")), clip(last_turn(sample, "assistant")))
    out.print(table)
    out.print(f"[dim]{len(chosen)} of {len(data.samples)} samples, seed {seed}; --full for whole conversations[/]")


@pipeline.command("validate")
@click.argument("name")
@click.pass_context
@user_errors
def validate_cmd(ctx: click.Context, name: str) -> None:
    """The checklist before training; exit 1 when any check fails.

    Thresholds come from the pipeline's `quality = {...}` (see shaping.quality.Thresholds).
    """
    from shaping.quality import Thresholds, run_checks

    entry, data = load_output(ctx, name)
    checks = run_checks(data, Thresholds.for_pipeline(entry.cls))
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("", "check", "figure", "limit"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(Text("PASS", style="green") if check.passed else Text("FAIL", style="bold red"),
                      check.name, check.figure, Text(check.limit, style="dim"))
    out.print(table)
    failed = [c.name for c in checks if not c.passed]
    if failed:
        out.print(Text(f"{len(failed)} of {len(checks)} checks failed: {', '.join(failed)}", style="bold red"))
        sys.exit(1)
    out.print(Text(f"all {len(checks)} checks passed", style="green"))


@pipeline.command("errors")
@click.argument("name")
@click.pass_context
@user_errors
def errors_cmd(ctx: click.Context, name: str) -> None:
    """Failed records of pipeline NAME by type, with counts and one example each."""
    from shaping.quality import errors_by_type

    _, data = load_output(ctx, name)
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
    """One self-contained HTML report: summary, checklist, lengths, errors, samples with steps."""
    from shaping.quality import Thresholds, run_checks
    from shaping.quality.report import render

    entry, data = load_output(ctx, name)
    html = render(data, run_checks(data, Thresholds.for_pipeline(entry.cls)), max_samples=max_samples)
    target = output or data.paths.samples.with_name(f"{name}.report.html")
    if not target.parent.is_dir():
        raise ShapingError(f"output folder {target.parent} does not exist")
    target.write_text(html, encoding="utf-8")
    out.print(f"wrote {target}")


@main.group()
def prompts() -> None:
    """Look at a prompt mix before paying for it."""


@prompts.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-n", "--count", default=200, show_default=True, help="How many prompts to draw.")
@click.option("--seed", default=0, show_default=True)
@click.option("--existing-weight", type=click.FloatRange(0, 1), help="Share of curated prompts (default: the file's).")
@click.option("--show", default=10, show_default=True, help="How many of the drawn prompts to print.")
@user_errors
def prompts_preview(file: Path, count: int, seed: int, existing_weight: float | None, show: int) -> None:
    """Draw prompts from the generator FILE and show a sample and the mix: category x source x language."""
    from collections import Counter

    from shaping.prompts import PromptGenerator

    if count < 1:
        raise ShapingError(f"--count must be at least 1, got {count}")
    records = PromptGenerator.from_file(file).sample(count, existing_weight=existing_weight, seed=seed)
    out.print(Text(f"{min(show, count)} of {count} prompts (seed {seed})", style="bold"))
    for r in records[:show]:
        text = " ".join(r.prompt.split())
        out.print(Text.assemble((f"{r.id}  {r.category} / {r.language} / {r.source}", "dim")))
        out.print(f"  {text[:157] + '...' if len(text) > 160 else text}", soft_wrap=True, markup=False)
    counts = Counter((r.category, r.source, r.language) for r in records)
    languages = sorted({r.language for r in records})
    mix = Table(title="mix: category x source x language", box=None, padding=(0, 1), pad_edge=False,
                header_style="bold", title_justify="left")
    for column in ("category", "source", *languages, "total", "share"):
        mix.add_column(column, justify="left" if column in ("category", "source") else "right", no_wrap=True)
    for category, source in sorted({(c, s) for c, s, _ in counts}):
        row = [counts[(category, source, lang)] for lang in languages]
        mix.add_row(category, source, *(str(n or "") for n in row), str(sum(row)), f"{sum(row) / count:.1%}")
    totals = [sum(n for (_, _, lang), n in counts.items() if lang == language) for language in languages]
    mix.add_row("total", "", *(str(n) for n in totals), str(count), "100%", style="bold")
    mix.add_row("share", "", *(f"{n / count:.0%}" for n in totals), "", "", style="dim")
    out.print(mix)
    unique = len({r.prompt for r in records})
    if unique < count:
        out.print(f"[yellow]{count - unique} repeats: the pool holds {unique} distinct prompts[/]")


@main.group()
def cache() -> None:
    """Inspect and clear the request cache (training/.cache/)."""


@cache.command("stats")
@click.pass_context
@user_errors
def cache_stats(ctx: click.Context) -> None:
    """Answers kept per pipeline, and the size on disk."""
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
    store = RequestCache(project_of(ctx).cache_dir)
    try:
        deleted = store.clear(name)
    finally:
        store.close()
    out.print(f"cleared {deleted:,} answers" + (f" of {name}" if name else ""))


def execute_pipeline(pipeline_obj: Pipeline, argv: list[str] | None = None) -> None:
    """`Pipeline.execute()`: the `isf pipeline run` flags for a script run as `python x.py`."""

    @click.command(name=pipeline_obj.name, context_settings={"help_option_names": ["-h", "--help"]},
                   help=f"Run the pipeline '{pipeline_obj.name}' (same flags as `isf pipeline run`).")
    @run_options
    @user_errors
    def command(**options: Any) -> None:
        run_and_report(pipeline_obj, **options)

    command.main(args=argv, prog_name=sys.argv[0] if argv is None else pipeline_obj.name)


if __name__ == "__main__":
    main()
