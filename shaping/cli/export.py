"""`isf pipeline export NAME --format ...`: a pipeline's output in the shape a trainer takes,
optionally pushed to the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path

import click
from rich.text import Text

from shaping.cli.app import err, out, pipeline, project_of, user_errors
from shaping.errors import ShapingError
from shaping.export import FORMATS, REASONING_MODES


def _target(project, name: str, fmt: str, output: Path | None) -> Path:
    from shaping.export import default_path, is_saved_dataset

    if output is None:
        target = default_path(project.root, name, fmt)
        target.parent.mkdir(parents=True, exist_ok=True)
    else:
        target = Path(output).expanduser().resolve()
        if not target.parent.is_dir():
            raise ShapingError(f"output folder {target.parent} does not exist (from -o {output})")
    if fmt == "hf":
        if target.is_file():
            raise ShapingError(f"{target} is a file; --format hf writes a folder")
        if target.is_dir() and not is_saved_dataset(target):
            raise ShapingError(f"{target} is a folder that is not an earlier hf export; give a new path")
    elif target.is_dir():
        raise ShapingError(f"output path {target} is a folder; give a file name")
    return target


def _check_status(project, name: str) -> object:
    """The output's manifest (None if unreadable); refuses FAILED and MISSING outputs, warns on
    any other state but CURRENT."""
    from shaping.discovery import discover, find_pipeline
    from shaping.manifest import read_manifest
    from shaping.staleness import CURRENT, FAILED, MISSING, project_status

    entries = discover(project)
    find_pipeline(project, name, entries)
    status = project_status(project, entries)[name]
    paths = project.outputs(name)
    if status.state == FAILED:
        raise ShapingError(f"{name} is FAILED ({status.reasons[0].message}); not exporting it: "
                           f"see isf pipeline errors {name}, then run it again")
    if status.state == MISSING or not paths.samples.exists():
        raise ShapingError(f"pipeline '{name}' has no output yet ({project.relative(paths.samples)}); "
                           f"run it first: isf pipeline run {name}")
    if status.state != CURRENT:
        why = "; ".join(r.message for r in status.reasons)
        err.print(Text(f"warning: {name} is {status.state} ({why}); exporting the output as it is",
                       style="yellow"), soft_wrap=True)
    try:
        return read_manifest(paths.manifest)
    except (ValueError, OSError):
        return None


@pipeline.command("export")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(FORMATS), required=True, help="What to write.")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="Where (default training/export/NAME.FORMAT.jsonl, NAME.parquet, NAME.hf/).")
@click.option("--reasoning", type=click.Choice(REASONING_MODES),
              help="Reasoning as a reasoning_content field, inline as <think>...</think> before the answer, "
                   "or dropped (default: drop for openai, whose fine-tuning API has no reasoning field; field for parquet, hf; inline for sharegpt, alpaca).")
@click.option("--push-to-hub", "repo", metavar="REPO", help="Also push it and a dataset card to this Hub dataset repo.")
@click.option("--private", is_flag=True, help="With --push-to-hub: create the repo private (an existing repo keeps its visibility).")
@click.pass_context
@user_errors
def export_cmd(ctx: click.Context, name: str, fmt: str, output: Path | None, reasoning: str | None,
               repo: str | None, private: bool) -> None:
    """Export the output of pipeline NAME for a trainer (errors are never exported)."""
    from shaping.export import NEEDS_HF, check_reasoning, export, require_hf

    if private and not repo:
        raise ShapingError("--private goes with --push-to-hub REPO")
    check_reasoning(fmt, reasoning)
    if fmt in NEEDS_HF:  # before anything is read
        require_hf(f"--format {fmt}", NEEDS_HF[fmt])
    if repo:
        from shaping.hub import check_push

        check_push(repo)
    project = project_of(ctx)
    manifest = _check_status(project, name)
    target = _target(project, name, fmt, output)
    result = export(project.outputs(name).samples, fmt, target, reasoning)

    out.print(Text(f"wrote {project.relative(result.path)}: {result.exported} samples as {fmt}"), soft_wrap=True)
    if result.reasoning_turns:
        where = {"field": "kept as reasoning_content", "inline": "inline as <think>...</think>",
                 "drop": "dropped"}[result.reasoning]
        why = (" (OpenAI's fine-tuning format has none; --reasoning field or inline keeps it)"
               if fmt == "openai" and reasoning is None else " (--reasoning)")
        out.print(f"reasoning of {result.reasoning_turns} assistant turns: {where}{why}", markup=False)
    for reason, count in sorted(result.skipped.items()):
        out.print(Text(f"skipped {count}: {reason}", style="yellow"), soft_wrap=True)
    failed = sum(manifest.counts.errors.values()) if manifest is not None else 0
    if failed:
        out.print(Text(f"not exported: {failed} failed record{'s' if failed > 1 else ''} "
                       f"({project.relative(project.outputs(name).errors)})", style="dim"), soft_wrap=True)
    if repo:
        from shaping.hub import card_text, push

        url = push(result, card_text(name, manifest, result), repo, private, name)
        out.print(f"pushed to {url}", markup=False)
