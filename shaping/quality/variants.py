"""Prompt variants side by side (see shaping.variants): for each, its samples, its error rate
by type, its response lengths and its judge scores where there are any.

A sample's variant is `metadata["variant"]` (what the run wrote); where that is missing (minimal
output has no metadata) it is worked out again from the record's id, as an error record's is.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shaping.quality.dataset import Dataset
from shaping.variants import variant_of


@dataclass
class VariantFigures:
    name: str
    samples: int = 0
    errors: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def error_rate(self) -> float:
        total = self.samples + self.error_count
        return self.error_count / total if total else 0.0

    def row(self) -> dict[str, str]:
        """The figures as text, one column each (validate's table and the report's)."""
        lengths = self.lengths
        by_type = ", ".join(f"{kind} {n}" for kind, n in sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0])))
        return {
            "variant": self.name,
            "samples": str(self.samples),
            "errors": f"{self.error_count} ({self.error_rate:.1%})",
            "by_type": by_type or "-",
            "length": (f"mean {statistics.fmean(lengths):.0f}, median {statistics.median(lengths):.0f}"
                       if lengths else "-"),
            "judge": (f"mean {statistics.fmean(self.scores):.2f} ({len(self.scores)} judged)"
                      if self.scores else "-"),
        }


COLUMNS = (("variant", "variant"), ("samples", "samples"), ("errors", "errors (rate)"),
           ("by_type", "errors by type"), ("length", "response chars"), ("judge", "judge score"))


def _record_id(sample: dict[str, Any]) -> Any:
    input_data = sample.get("input_data")
    if isinstance(input_data, dict) and input_data.get("id") is not None:
        return input_data["id"]
    return sample.get("id")


def compare_variants(data: Dataset, declared: Sequence[str] = ()) -> list[VariantFigures]:
    """The figures of each variant: those the pipeline declares (in its order), then any other
    the samples name. No variants anywhere: an empty list."""
    seen = [v for s in data.samples if isinstance(v := (s.get("metadata") or {}).get("variant"), str)]
    names = list(declared) + sorted(set(seen) - set(declared))
    if not names:
        return []
    known = list(declared) or names  # what the run chose among, as far as can be told
    figures = {name: VariantFigures(name) for name in names}
    for sample, response in zip(data.samples, data.responses):
        metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
        name = metadata.get("variant")
        if not isinstance(name, str):
            name = variant_of(_record_id(sample), known)
        row = figures[name]
        row.samples += 1
        row.lengths.append(len(response))
        verdict = metadata.get("judge")
        if isinstance(verdict, dict) and isinstance(verdict.get("score"), (int, float)) \
                and not isinstance(verdict.get("score"), bool):
            row.scores.append(float(verdict["score"]))
    for error in data.errors:
        name = variant_of(error.get("id"), known)
        figures[name].errors[str(error.get("error") or "unknown")] += 1
    return list(figures.values())
