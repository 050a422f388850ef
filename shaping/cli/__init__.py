"""`isf`: a thin command line over shaping's Python API; one module per group of commands.

The command modules are imported when a command needs them (see `LazyGroup`)."""

from typing import Any

from shaping.cli.app import main

__all__ = ["execute_pipeline", "main"]


def execute_pipeline(pipeline: Any, argv: list[str] | None = None) -> None:
    from shaping.cli.run import execute_pipeline as execute

    execute(pipeline, argv)
