"""`isf pipeline dedupe NAME`: take duplicate samples out of a pipeline's output."""

from __future__ import annotations

import click
from rich.text import Text

from shaping.cli.app import err, out, pipeline, project_of, user_errors
from shaping.discovery import find_pipeline
from shaping.errors import ShapingError

#: removed samples listed by --dry-run
SHOWN = 10


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # DedupeSettings says what it must be


@pipeline.command("dedupe")
@click.argument("name")
@click.option("--near", metavar="THRESHOLD",
              help="Also remove near duplicates: estimated Jaccard similarity of word 3-grams at least "
                   "THRESHOLD, in (0, 1] (MinHash; needs pip install 'shaping[dedupe]').")
@click.option("--on", "on", default="pair", show_default=True, metavar="pair|both|prompt|response",
              help="What makes a duplicate: prompt and response both (pair: the same conversation), "
                   "either of them (both), the prompt (every user turn) or the response (the last "
                   "assistant turn).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing.")
@click.pass_context
@user_errors
def dedupe_cmd(ctx: click.Context, name: str, near: str | None, on: str, dry_run: bool) -> None:
    """Remove duplicate samples from the output of pipeline NAME, keeping the first of each.

    Exact duplicates always (case and whitespace aside); near duplicates with --near. The kept
    samples replace training/data/NAME.jsonl; the removed ones, each with `duplicate_of`,
    `reason` and `similarity`, are added to training/data/dedupe/NAME.removed.jsonl; the
    manifest records the pass, so `isf pipeline status` stays CURRENT.
    """
    from shaping.quality.dedupe import DedupeSettings
    from shaping.quality.dedupe_output import dedupe_output

    try:
        settings = DedupeSettings(near=None if near is None else _number(near), on=on)
    except ValueError as exc:  # "near must be ...", "on must be ...": said of the flag
        raise ShapingError(f"--{exc}") from exc
    project = project_of(ctx)
    find_pipeline(project, name)
    if project.outputs(name).failed.exists():
        err.print(Text(f"note: the last run of {name} FAILED; this dedupes the output of an earlier run",
                       style="yellow"), soft_wrap=True)
    done = dedupe_output(project, name, settings, dry_run=dry_run)
    result = done.result
    if dry_run:
        for duplicate in result.removed[:SHOWN]:
            out.print(f"  {duplicate.describe()}", markup=False, soft_wrap=True)
        if len(result.removed) > SHOWN:
            out.print(f"  ... and {len(result.removed) - SHOWN} more", style="dim")
        out.print(f"{name}: would keep {result.kept}, remove {len(result.removed)}: {result.exact} exact, "
                  f"{result.near} near ({settings.describe()}); dry run, nothing written", markup=False)
        return
    out.print(f"{name}: {result.summary()} ({settings.describe()})", markup=False)
    if done.written:
        out.print(f"  removed samples: {project.relative(project.outputs(name).removed)}", markup=False,
                  style="dim")
    if done.manifest_note:
        err.print(Text(f"note: {done.manifest_note}; the manifest was left as it was", style="yellow"),
                  soft_wrap=True)
