"""The `isf` command group and what every command shares: consoles, one-line errors, the project."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from shaping import __version__
from shaping.config import Project
from shaping.errors import PipelineError, ShapingError

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
