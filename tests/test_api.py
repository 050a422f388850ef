"""The public surface: what users import, and the CLI's commands."""

import subprocess
import sys
from pathlib import Path

import shaping
from tests.test_cli import isf

REPO = Path(__file__).resolve().parents[1]


def test_every_export_exists():
    for name in shaping.__all__:
        assert hasattr(shaping, name), name
    from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request  # noqa: F401 - DESIGN.md's import


def test_every_command_has_help():
    for command in (["pipeline", "list"], ["pipeline", "run"], ["pipeline", "status"], ["pipeline", "sample"],
                    ["pipeline", "validate"], ["pipeline", "errors"], ["pipeline", "report"], ["prompts", "preview"],
                    ["cache", "stats"], ["cache", "clear"]):
        result = isf(REPO, *command, "--help")
        assert result.returncode == 0 and "Usage:" in result.stdout, command


def test_every_shipped_pipeline_runs_as_a_script_with_help():
    for path in sorted((REPO / "pipelines").glob("*.py")):
        result = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, cwd=REPO)
        assert result.returncode == 0 and "--limit" in result.stdout, path.name
