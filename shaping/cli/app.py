"""The `isf` command group and what every command shares: consoles, one-line errors, the project."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from shaping._version import __version__
from shaping.errors import PipelineError, ShapingError

#: the width when the output is not a terminal (a pipe, a file, CI's log) and COLUMNS is unset:
#: rich's 80 would split URLs and paths across lines of a table
PIPED_WIDTH = 200


def _console(stream: Any, **options: Any) -> Console:
    piped = not (getattr(stream, "isatty", None) and stream.isatty()) and not os.environ.get("COLUMNS")
    return Console(highlight=False, width=PIPED_WIDTH if piped else None, **options)


out = _console(sys.stdout)
err = _console(sys.stderr, stderr=True)


def fail(message: str, code: int = 1) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    sys.exit(code)


def debugging() -> bool:
    """`isf --debug ...` (or SHAPING_DEBUG=1, for `python pipelines/x.py`): errors come with
    their whole chain of causes, not only their one line."""
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx is not None else None
    return bool((root.obj or {}).get("debug") if root is not None and isinstance(root.obj, dict) else False) \
        or os.environ.get("SHAPING_DEBUG", "") not in ("", "0")


def show_chain(exc: BaseException) -> None:
    err.print("".join(traceback.format_exception(exc)).rstrip(), markup=False, highlight=False, soft_wrap=True)


def user_errors(fn: Any) -> Any:
    """Turn the errors users cause into one line and a non-zero exit (with --debug, after the
    traceback and the causes that led to it)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShapingError as exc:
            if debugging():
                show_chain(exc)
            fail(str(exc))
        except PipelineError as exc:
            if debugging():
                show_chain(exc)
            fail(f"run() failed: {exc.error_type}: {exc.message}")
        except KeyboardInterrupt:
            fail("interrupted: no output file was changed; answered requests are cached, "
                 "so running the same command again resumes where this run stopped", code=130)

    return wrapper


def project_of(ctx: click.Context) -> Any:
    from shaping.config import Project

    return Project.find(ctx.obj.get("project"))


class LazyGroup(click.Group):
    """A group whose commands live in modules imported only when a command is needed (or
    listed), so `isf --version` and `isf --help` stay quick. `lazy` maps a command name to
    "module:attribute"; `modules` are imported to register the commands they attach."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, modules: tuple[str, ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}
        self.modules = modules

    def _load_modules(self) -> None:
        import importlib

        for module in self.modules:
            importlib.import_module(module)
        self.modules = ()

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_modules()
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy and name not in self.commands:
            import importlib

            module, _, attr = self.lazy[name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), name)
        if name not in self.commands:
            self._load_modules()
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy={"cache": "shaping.cli.cache:cache", "prompts": "shaping.cli.prompts:prompts",
                                  "models": "shaping.cli.models:models", "batch": "shaping.cli.batch:batch"},
             context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--project", type=click.Path(file_okay=False, path_type=Path),
              help="Project folder (default: the nearest folder upward holding shaping.toml).")
@click.option("--debug", is_flag=True,
              help="On an error, show its traceback and every cause before its one line (also SHAPING_DEBUG=1).")
@click.version_option(__version__, prog_name="isf")
@click.pass_context
def main(ctx: click.Context, project: Path | None, debug: bool) -> None:
    """Generate LLM training data with shaping pipelines."""
    ctx.ensure_object(dict).update(project=project, debug=debug)


@main.group(cls=LazyGroup, modules=("shaping.cli.run", "shaping.cli.quality", "shaping.cli.export",
                                     "shaping.cli.dedupe", "shaping.cli.history"))
def pipeline() -> None:
    """List and run the pipelines in pipelines/*.py."""
