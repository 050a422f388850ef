"""`isf`: a thin command line over shaping's Python API."""

from __future__ import annotations

import functools
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
from shaping.dispatch import RunStats
from shaping.errors import PipelineError, ShapingError
from shaping.pipeline import Pipeline
from shaping.progress import RunDisplay, summary
from shaping.runner import run_pipeline

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
            fail("interrupted; no output was written", code=130)

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
        click.option("-q", "--quiet", is_flag=True, help="No progress display or summary."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_and_report(pipeline_obj: Pipeline, limit: int | None, workers: int | None,
                   output: Path | None, annotate: bool | None, quiet: bool) -> None:
    for flag, value in (("--limit", limit), ("--workers", workers)):
        if value is not None and value < 1:
            raise ShapingError(f"{flag} must be at least 1, got {value}")
    stats = RunStats()
    with RunDisplay(err, stats, pipeline_obj.name) if not quiet else _nothing():
        result = run_pipeline(pipeline_obj, limit=limit, workers=workers, output=output,
                              annotate=annotate, stats=stats)
    if not quiet:
        summary(result, out)


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@pipeline.command("run")
@click.argument("name")
@run_options
@click.pass_context
@user_errors
def run_cmd(ctx: click.Context, name: str, **options: Any) -> None:
    """Run the pipeline NAME and write training/data/NAME.jsonl, its errors and manifest."""
    project = project_of(ctx)
    entry = find_pipeline(project, name)
    run_and_report(entry.cls(project), **options)


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
