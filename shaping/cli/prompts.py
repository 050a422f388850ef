"""`isf prompts preview`: a prompt mix, before paying for it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from shaping.cli.app import out, user_errors
from shaping.errors import ShapingError


@click.group()
def prompts() -> None:
    """Look at a prompt mix before paying for it."""


def _table(title: str, columns: list[str], left: int) -> Table:
    table = Table(title=title, box=None, padding=(0, 1), pad_edge=False, header_style="bold", title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < left else "right", no_wrap=True)
    return table


def _share(n: float, total: int) -> str:
    return f"{n / total:.1%}" if total else "-"


@prompts.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-n", "--count", default=200, show_default=True, help="How many prompts to draw.")
@click.option("--seed", default=0, show_default=True)
@click.option("--existing-weight", type=click.FloatRange(0, 1),
              help="Chance of a curated prompt (default: the file's).")
@click.option("--show", default=10, show_default=True, help="How many of the drawn prompts to print.")
@user_errors
def prompts_preview(file: Path, count: int, seed: int, existing_weight: float | None, show: int) -> None:
    """Draw prompts from the generator FILE and show a sample and the mix: the realised share of
    every area and category beside its target, by source and language."""
    from shaping.prompts import PromptGenerator

    if count < 1:
        raise ShapingError(f"--count must be at least 1, got {count}")
    generator = PromptGenerator.from_file(file)
    records = generator.sample(count, existing_weight=existing_weight, seed=seed)
    targets = generator.targets(existing_weight)
    out.print(Text(f"{min(show, count)} of {count} prompts (seed {seed})", style="bold"))
    for r in records[:show]:
        text = " ".join(r.prompt.split())
        label = " / ".join(x for x in (r.area, r.category, r.language, r.source) if x)
        out.print(Text(f"{r.id}  {label}", style="dim"))
        out.print(f"  {text[:157] + '...' if len(text) > 160 else text}", soft_wrap=True, markup=False)

    by_category = Counter(r.category for r in records)
    if generator.areas:
        categories = [c for area in generator.areas.values() for c in area.categories]
        areas = _table(f"areas: share of {count} prompts and target", ["area", "categories", "prompts", "share",
                                                                        "target"], left=1)
        for name, area in generator.areas.items():
            drawn = sum(by_category[c] for c in area.categories)
            target = sum(targets.get(c, 0.0) for c in area.categories)
            areas.add_row(name, str(len(area.categories)), str(drawn), _share(drawn, count), f"{target:.1%}")
        areas.add_row("total", str(len(categories)), str(count), "100.0%", "100.0%", style="bold")
        out.print()
        out.print(areas)
    else:
        categories = sorted(set(targets) | set(by_category))

    counts = Counter((r.category, r.source, r.language) for r in records)
    drawn = {r.language for r in records}  # the weighed languages in their order, then the others
    languages = [x for x in generator.languages if x in drawn] + sorted(drawn - set(generator.languages))
    head = ["area"] * bool(generator.areas) + ["category", "curated", "template", *languages,
                                               "total", "share", "target"]
    mix = _table("mix: category x source x language", head, left=1 + bool(generator.areas))
    for category in categories:
        row = [str(sum(n for (c, s, _), n in counts.items() if c == category and s == source) or "")
               for source in ("curated", "template")]
        row += [str(sum(n for (c, _, lang), n in counts.items() if c == category and lang == language) or "")
                for language in languages]
        area = [generator.area_of(category) or ""] * bool(generator.areas)
        mix.add_row(*area, category, *row, str(by_category[category]), _share(by_category[category], count),
                    f"{targets.get(category, 0.0):.1%}")
    sources = Counter(r.source for r in records)
    totals = [sum(n for (_, _, lang), n in counts.items() if lang == language) for language in languages]
    lead = [""] * bool(generator.areas)
    mix.add_row(*lead, "total", str(sources["curated"]), str(sources["template"]), *(str(n) for n in totals),
                str(count), "100.0%", "100.0%", style="bold")
    mix.add_row(*lead, "share", _share(sources["curated"], count), _share(sources["template"], count),
                *(_share(n, count) for n in totals), "", "", "", style="dim")
    out.print()
    out.print(mix)

    unique = len({r.prompt for r in records})
    if unique < count:
        distinct = Counter(c for c, _ in {(r.category, r.prompt) for r in records})
        short = sorted((c for c in by_category if distinct[c] < by_category[c]),
                       key=lambda c: by_category[c] - distinct[c], reverse=True)
        listed = ", ".join(f"{c} ({distinct[c]} distinct)" for c in short[:6]) + (", ..." if len(short) > 6 else "")
        out.print(f"[yellow]{count - unique} repeats: the pool holds {unique} distinct prompts; "
                  f"categories that ran out: {listed}[/]", soft_wrap=True)
