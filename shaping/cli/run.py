"""`isf pipeline list | run | status`, and `Pipeline.execute()` for scripts."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from shaping.cli.app import err, out, pipeline, project_of, user_errors
from shaping.discovery import Pipelines, discover, find_pipeline
from shaping.dispatch import RunStats
from shaping.errors import RunFailedError, ShapingError
from shaping.pipeline import Pipeline
from shaping.progress import RunDisplay, summary
from shaping.runner import check_run_options, run_pipeline
from shaping.manifest import read_manifest
from shaping.params import parse_assignments
from shaping.staleness import Status, dependency_order, pipeline_status, project_status


@pipeline.command("list")
@click.option("--params", "show_params", is_flag=True,
              help="Also show each pipeline's parameters (what --set overrides): name, type, default.")
@click.pass_context
@user_errors
def list_cmd(ctx: click.Context, show_params: bool = False) -> None:
    """Show every pipeline with its file and what it depends on."""
    project = project_of(ctx)
    entries = discover(project)
    report_broken(entries)
    if not entries:
        if not entries.broken:
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
            "\n".join([*(dep.relpath for dep in cls.file_deps.values()),
                       *(f"{dep.path} (dataset)" for dep in cls.dataset_deps.values())]) or "-",
            "\n".join(dep.model_name for dep in cls.model_deps.values()) or "-",
        )
    out.print(table)
    if show_params:  # below the table: a column of them would not fit a terminal
        out.print(Text("\nparameters (isf pipeline run NAME --set KEY=VALUE):", style="bold"))
        for entry in entries.values():
            params = entry.cls.parameters().values()
            out.print(Text(f"  {entry.name}" + ("" if params else ": none"), style="bold"))
            for p in params:
                out.print(Text(f"    {p.name}: {p.label()} = {p.shown_default()}"), soft_wrap=True)


def annotation_differs(project: Any, name: str, annotate: bool | None) -> bool:
    """Whether --annotate/--no-annotate asks for another format than the output has (the
    answers come from the request cache: rewriting it pays nothing)."""
    if annotate is None:
        return False
    try:
        return read_manifest(project.outputs(name).manifest).annotated != annotate
    except (ValueError, OSError):
        return False


def report_broken(entries: Pipelines) -> None:
    """One line per pipeline file that fails to import; the others work as usual."""
    for problem in entries.broken.values():
        err.print(Text.assemble(("BROKEN ", "bold red"), str(problem)), soft_wrap=True)


def run_options(fn: Any) -> Any:
    """The flags shared by `isf pipeline run` and `python pipelines/x.py`."""
    options = [
        click.option("--set", "set_params", multiple=True, metavar="KEY=VALUE",
                     help="Override one of the pipeline's parameters for this run, typed by its "
                          "declaration (repeatable; `isf pipeline list --params` shows them). The "
                          "manifest records it; status says STALE until a run with the declared values."),
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
        click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                     help="Where tasks run: this process, or a Ray cluster (pip install 'shaping[ray]')."),
        click.option("--address", help="With --executor ray: the cluster (auto, ray://host:10001); default: local."),
        click.option("--no-cache", "no_cache", is_flag=True,
                     help="Neither read nor write the request cache (training/.cache/)."),
        click.option("--max-cost", "max_cost", type=float, metavar="USD",
                     help="Stop taking records once spent plus in-flight cost would pass USD (default: the "
                          "pipeline's max_cost_usd); what is in flight finishes, the output is PARTIAL, "
                          "the exit code 3, and the next run resumes from the cache. Needs prices."),
        click.option("--batch", is_flag=True,
                     help="Send run_task's requests through the provider's batch API (half price, answered "
                          "within 24 h), round by round, for every model served by its provider's own API (as "
                          "batch = true in a model's table does; one on another host stays online); query() "
                          "stays online. A killed run re-attaches to its "
                          "batches (isf batch list)."),
        click.option("--dry-run", "dry_run", is_flag=True,
                     help="Send nothing: count the requests and tokens a run would send, per model, and "
                          "price them online and in batch mode (what the cache holds is free)."),
        click.option("--answer-tokens", "answer_tokens", multiple=True, metavar="[MODEL=]N",
                     help="With --dry-run: expect answers of N tokens (of MODEL's, or every model's); "
                          "default: the mean of the model's cached answers, else 256."),
        click.option("-q", "--quiet", is_flag=True, help="No progress display or summary."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_and_report(pipeline_obj: Pipeline, limit: int | None, workers: int | None,
                   output: Path | None, annotate: bool | None, no_cache: bool, quiet: bool,
                   kshot_file: Path | None = None, kshot_name: str | None = None,
                   kshot_count: int | None = None, kshot_required: bool | None = None,
                   executor: str = "local", address: str | None = None, dry_run: bool = False,
                   answer_tokens: tuple[str, ...] = (), max_cost: float | None = None,
                   set_params: tuple[str, ...] = (), batch: bool = False) -> Any:
    """Run one pipeline with a progress display and a summary; returns its RunResult (None for a
    dry run). Exits with code 3 when the cost cap stopped the run."""
    check_run_options(limit, workers)
    if set_params:
        pipeline_obj.set_params(**parse_assignments(type(pipeline_obj), set_params))
    if (kshot_file, kshot_name, kshot_count, kshot_required) != (None, None, None, None):
        pipeline_obj.configure_kshot(
            file=pipeline_obj.project.relative(kshot_file.resolve()) if kshot_file else None,
            name=kshot_name, count=kshot_count, required=kshot_required)
    stats = RunStats()
    if dry_run:
        if executor != "local":
            raise ShapingError("--dry-run runs locally: leave out --executor ray")
        given = [flag for flag, value in (("-o", output), ("--annotate/--no-annotate", annotate),
                                          ("--max-cost", max_cost)) if value is not None]
        if given:
            raise ShapingError(f"--dry-run writes and spends nothing: leave out {', '.join(given)}")
        from shaping.dry_run import dry_run_pipeline
        from shaping.progress import dry_run_report

        with RunDisplay(err, stats, f"{pipeline_obj.name} (dry run)") if not quiet else contextlib.nullcontext():
            estimate = dry_run_pipeline(pipeline_obj, limit=limit, workers=workers, stats=stats,
                                        answer_tokens=parse_answer_tokens(answer_tokens), use_cache=not no_cache)
        dry_run_report(estimate, out)
        return
    if answer_tokens:
        raise ShapingError("--answer-tokens goes with --dry-run")
    try:
        with RunDisplay(err, stats, pipeline_obj.name) if not quiet else contextlib.nullcontext():
            result = run_pipeline(pipeline_obj, limit=limit, workers=workers, output=output,
                                  annotate=annotate, stats=stats, use_cache=not no_cache, executor=executor,
                                  address=address, max_cost=max_cost, batch=batch)
    except RunFailedError as exc:
        if not quiet and exc.result is not None:
            summary(exc.result, out)
        raise
    for warning in result.warnings:
        err.print(Text.assemble(("warning: ", "yellow"), warning), soft_wrap=True)
    if not quiet:
        summary(result, out)
    return result


def run_cost(result: Any) -> float:
    """What a run paid (its priced models' answers that did not come from the cache)."""
    return sum(u.cost_usd or 0.0 for u in result.manifest.usage.values())


def stopped_at_cap(result: Any) -> None:
    """The cost cap stopped the run: say so and exit 3 (the output is PARTIAL, not failed)."""
    err.print(Text.assemble(("stopped: ", "bold yellow"), f"pipeline '{result.pipeline}' {result.stopped}; "
                            f"its output is PARTIAL; run it again (with a higher --max-cost) to go on: "
                            f"what was answered comes from the cache"), soft_wrap=True)
    sys.exit(3)


def parse_answer_tokens(values: tuple[str, ...]) -> dict[str | None, int]:
    """`--answer-tokens 300 --answer-tokens judge=50` -> {None: 300, "judge": 50}."""
    parsed: dict[str | None, int] = {}
    for value in values:
        model, _, number = value.rpartition("=")
        try:
            parsed[model or None] = int(number)
        except ValueError as exc:
            raise ShapingError(f"--answer-tokens: expected N or MODEL=N (a whole number of tokens), got {value!r}") from exc
    return parsed


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
    if not names and not stale:
        raise click.UsageError("give a pipeline NAME, or --stale to run every stale pipeline")
    check_run_options(options["limit"], options["workers"])  # before "nothing to do"
    if options["max_cost"] is not None and not options["max_cost"] > 0:
        raise ShapingError(f"--max-cost must be more than 0 (US dollars), got {options['max_cost']}")
    if options["set_params"] and not names:
        raise ShapingError("--set applies to the pipelines named: give NAME(s) instead of --stale")
    project = project_of(ctx)
    entries = discover(project)
    for name in names:
        find_pipeline(project, name, entries)
        parse_assignments(entries[name].cls, options["set_params"])  # every --set checked before any run
    order = dependency_order(project, entries)
    wanted = [n for n in order if n in names] if names else order
    explicit = force or options["dry_run"] or bool(options["set_params"]) or any(
        options[k] is not None for k in ("limit", "output", "kshot_file", "kshot_name", "kshot_count", "kshot_required"))
    done: dict[str, Status] = {}
    failed: list[str] = []
    capped = None  # the run the cost cap stopped; the pipelines after it are not run
    cap, spent = options["max_cost"], 0.0  # one cap for the whole command
    for name in order:
        status = pipeline_status(entries[name], project, done)
        reformat = status.is_current and annotation_differs(project, name, options["annotate"])
        if name in wanted and capped is not None:
            err.print(Text(f"{name}: not run (the cost cap stopped {capped.pipeline})", style="yellow"))
        elif name in wanted and cap is not None and spent >= cap:
            err.print(Text(f"{name}: not run (the ${cap:,.2f} cost cap is spent: ${spent:,.4f})", style="yellow"))
            capped = capped or name
        elif name in wanted and (explicit or reformat or not status.is_current):
            if len(wanted) > 1 and not options["quiet"]:
                out.print(Text(f"{name}: {status.headline()}, running", style="bold"))
            try:
                result = run_and_report(entries[name].cls(project), **{
                    **options, "max_cost": None if cap is None else cap - spent})
                if result is not None:
                    spent += run_cost(result)
                    if result.stopped:
                        capped = result
            except ShapingError as exc:  # a failed run, a missing key, a bad file...
                if isinstance(exc, RunFailedError) and exc.result is not None:
                    spent += run_cost(exc.result)  # a failed run was paid for too
                if len(wanted) == 1:
                    raise
                message = str(exc) if isinstance(exc, RunFailedError) else f"pipeline '{name}': {exc}"
                err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
                failed.append(name)  # the others still run
            status = pipeline_status(entries[name], project, done)
        elif name in wanted and not options["quiet"]:
            out.print(f"{name} is {status.headline()}: nothing to do (--force runs it anyway)")
        done[name] = status
    if stale and entries.broken:
        report_broken(entries)
        failed += [project.relative(path) for path in entries.broken]
    if failed:
        raise ShapingError(f"{len(failed)} pipeline(s) failed: {', '.join(failed)}")
    if isinstance(capped, str):  # the cap ran out between pipelines, none stopped mid-run
        err.print(Text.assemble(("stopped: ", "bold yellow"), f"the ${cap:,.2f} cost cap was spent before every "
                                f"pipeline ran; run again with a higher --max-cost to go on"), soft_wrap=True)
        sys.exit(3)
    if capped is not None:
        stopped_at_cap(capped)


@pipeline.command("status")
@click.argument("names", metavar="[NAME]...", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the statuses as JSON.")
@click.option("--check", is_flag=True, help="Exit 1 when any pipeline shown is not CURRENT (for CI).")
@click.pass_context
@user_errors
def status_cmd(ctx: click.Context, names: tuple[str, ...], as_json: bool, check: bool) -> None:
    """Say which outputs are CURRENT, STALE (and why), PARTIAL, FAILED (and why) or MISSING."""
    project = project_of(ctx)
    entries = discover(project)
    for name in names:
        find_pipeline(project, name, entries)
    statuses = [s for s in project_status(project, entries).values() if not names or s.name in names]
    broken = {} if names else entries.broken
    if as_json:
        click.echo(json.dumps([s.to_dict() for s in statuses] + [
            {"file": project.relative(path), "state": "BROKEN", "error": str(problem)}
            for path, problem in broken.items()], indent=2))
    else:
        for problem in broken.values():
            out.print(Text.assemble(("BROKEN ", "bold red"), str(problem)), soft_wrap=True)
        styles = {"CURRENT": "green", "STALE": "yellow", "PARTIAL": "yellow", "FAILED": "red", "MISSING": "red"}
        for s in statuses:
            out.print(Text.assemble((f"{s.name}: ", "bold"), (s.headline(), styles[s.state])))
            for reason in s.reasons:
                out.print(Text(f"  {reason.message}"), soft_wrap=True)
    if check and (broken or any(not s.is_current for s in statuses)):
        sys.exit(1)


def execute_pipeline(pipeline_obj: Pipeline, argv: list[str] | None = None) -> None:
    """`Pipeline.execute()`: the `isf pipeline run` flags for a script run as `python x.py`."""

    @click.command(name=pipeline_obj.name, context_settings={"help_option_names": ["-h", "--help"]},
                   help=f"Run the pipeline '{pipeline_obj.name}' (same flags as `isf pipeline run`).")
    @run_options
    @user_errors
    def command(**options: Any) -> None:
        result = run_and_report(pipeline_obj, **options)
        if result is not None and result.stopped:
            stopped_at_cap(result)

    command.main(args=argv, prog_name=sys.argv[0] if argv is None else pipeline_obj.name)
