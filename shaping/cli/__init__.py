"""`isf`: a thin command line over shaping's Python API; one module per group of commands."""

from shaping.cli import cache, prompts, quality, run  # noqa: F401 - registers the commands
from shaping.cli.app import main
from shaping.cli.run import execute_pipeline

__all__ = ["execute_pipeline", "main"]
