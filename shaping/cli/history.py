"""`isf pipeline history NAME`: every run of a pipeline, good or failed (shaping.history)."""

from __future__ import annotations

import json
from datetime import datetime

import click
from rich.table import Table
from rich.text import Text

from shaping.cli.app import out, pipeline, project_of, user_errors
from shaping.discovery import find_pipeline
from shaping.history import history_path, read_history

STATUS_STYLE = {"ok": "green", "partial": "yellow", "failed": "bold red", "interrupted": "red"}


def _date(value: object) -> str:
    try:
        return datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return str(value)[:16]


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _errors(run: dict) -> str:
    records, errors = _number(run.get("records")), _number(run.get("error_count"))
    if not errors:
        return "0"
    by_type = run.get("errors") if isinstance(run.get("errors"), dict) else {}
    kinds = ", ".join(f"{kind} {n}" for kind, n in by_type.items())
    rate = f" ({errors / records:.1%})" if records else ""
    return f"{errors}{rate}: {kinds}" if kinds else f"{errors}{rate}"


def _tokens(run: dict) -> str:
    prompt, completion = _number(run.get("prompt_tokens")), _number(run.get("completion_tokens"))
    cached = _number(run.get("cached_requests"))
    text = f"{prompt:,} / {completion:,}"
    return text + (f" ({cached:,} cached requests)" if cached else "")


def _cost(run: dict) -> str:
    cost = run.get("cost_usd")
    return f"${cost:.4f}" if isinstance(cost, (int, float)) else "-"


def _duration(run: dict) -> str:
    seconds = run.get("duration_s")
    if not isinstance(seconds, (int, float)):
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


@pipeline.command("history")
@click.argument("name")
@click.option("-n", "--last", "last", type=click.IntRange(min=1), default=20, show_default=True,
              help="Show the latest N runs.")
@click.option("--json", "as_json", is_flag=True, help="The history lines as they are, one JSON object a line.")
@click.pass_context
@user_errors
def history_cmd(ctx: click.Context, name: str, last: int, as_json: bool) -> None:
    """Every run of pipeline NAME, good or failed: date, status, samples, error rate by type,
    tokens, cost and duration (kept in training/.history/NAME.jsonl)."""
    project = project_of(ctx)
    runs = read_history(project, name)
    if not runs:
        find_pipeline(project, name)  # a name with no history: say so when it names no pipeline
        out.print(f"{name}: no runs recorded yet ({project.relative(history_path(project, name))})")
        return
    shown = runs[-last:]
    first = len(runs) - len(shown)
    if as_json:
        for run in shown:
            out.print(json.dumps(run, ensure_ascii=False), markup=False, highlight=False, soft_wrap=True)
        return
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold")
    for column in ("run", "date (UTC)", "status", "records", "samples", "errors (rate): by type",
                   "tokens in / out", "cost", "duration"):
        table.add_column(column, overflow="fold", no_wrap=column not in ("errors (rate): by type", "tokens in / out"),
                         ratio=1 if column == "errors (rate): by type" else None)
    for i, run in enumerate(shown, start=first + 1):
        status = str(run.get("status") or "?")
        table.add_row(str(i), _date(run.get("started_at")), Text(status, style=STATUS_STYLE.get(status, "")),
                      str(_number(run.get("records"))), str(_number(run.get("samples"))), Text(_errors(run)),
                      _tokens(run), _cost(run), _duration(run))
    out.print(table)
    for i, run in enumerate(shown, start=first + 1):
        if run.get("failure"):
            out.print(Text.assemble((f"run {i}: ", "bold red"), str(run["failure"])), soft_wrap=True)
    more = f"; the latest {len(shown)} shown (-n for more)" if first else ""
    out.print(Text(f"{len(runs)} run{'' if len(runs) == 1 else 's'} recorded in {project.relative(history_path(project, name))}{more}",
                   style="dim"))
