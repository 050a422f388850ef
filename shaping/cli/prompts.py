"""`isf prompts preview`: a prompt mix, before paying for it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from shaping.cli.app import out, user_errors
from shaping.errors import ShapingError


@click.group()
def prompts() -> None:
    """Look at a prompt mix before paying for it."""


@prompts.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-n", "--count", default=200, show_default=True, help="How many prompts to draw.")
@click.option("--seed", default=0, show_default=True)
@click.option("--existing-weight", type=click.FloatRange(0, 1), help="Share of curated prompts (default: the file's).")
@click.option("--show", default=10, show_default=True, help="How many of the drawn prompts to print.")
@user_errors
def prompts_preview(file: Path, count: int, seed: int, existing_weight: float | None, show: int) -> None:
    """Draw prompts from the generator FILE and show a sample and the mix: category x source x language."""
    from collections import Counter

    from shaping.prompts import PromptGenerator

    if count < 1:
        raise ShapingError(f"--count must be at least 1, got {count}")
    records = PromptGenerator.from_file(file).sample(count, existing_weight=existing_weight, seed=seed)
    out.print(Text(f"{min(show, count)} of {count} prompts (seed {seed})", style="bold"))
    for r in records[:show]:
        text = " ".join(r.prompt.split())
        out.print(Text.assemble((f"{r.id}  {r.category} / {r.language} / {r.source}", "dim")))
        out.print(f"  {text[:157] + '...' if len(text) > 160 else text}", soft_wrap=True, markup=False)
    counts = Counter((r.category, r.source, r.language) for r in records)
    languages = sorted({r.language for r in records})
    mix = Table(title="mix: category x source x language", box=None, padding=(0, 1), pad_edge=False,
                header_style="bold", title_justify="left")
    for column in ("category", "source", *languages, "total", "share"):
        mix.add_column(column, justify="left" if column in ("category", "source") else "right", no_wrap=True)
    for category, source in sorted({(c, s) for c, s, _ in counts}):
        row = [counts[(category, source, lang)] for lang in languages]
        mix.add_row(category, source, *(str(n or "") for n in row), str(sum(row)), f"{sum(row) / count:.1%}")
    totals = [sum(n for (_, _, lang), n in counts.items() if lang == language) for language in languages]
    mix.add_row("total", "", *(str(n) for n in totals), str(count), "100%", style="bold")
    mix.add_row("share", "", *(f"{n / count:.0%}" for n in totals), "", "", style="dim")
    out.print(mix)
    unique = len({r.prompt for r in records})
    if unique < count:
        out.print(f"[yellow]{count - unique} repeats: the pool holds {unique} distinct prompts[/]")
