"""Prompt variants side by side (see shaping.variants): for each, its records, samples, error
rate by type, response lengths and judge scores where there are any.

- A sample's variant is `metadata["variant"]` (what the run wrote); where that is missing it is
  worked out again from its record's id (`input_data.id`), as an error record's is from its id.
  Minimal output (`--no-annotate`) has neither metadata nor the record: which variant made a
  sample cannot be known there, so the comparison is not made ("not compared", one line), rather
  than guessed from the sample's own id (`topic00-batch0-3` is not its record's id).
- The error rate is per record: error records over the variant's records (those that made
  samples, kept or rejected, and the error records), however many samples a record makes.
  A record is known by its id; records without one by their content (`input_data`).
- Samples `min_judge_score` kept out of the output (training/data/rejected/NAME.jsonl, each
  with its `variant`) count in their variant's judge figures and records: leaving them out
  would show the variant the judge rejected most as the best judged.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shaping.quality.dataset import Dataset, _read_jsonl
from shaping.variants import variant_of

#: the line validate and the report show for minimal output
MINIMAL = ("variants: not compared: minimal output (--no-annotate) does not say which variant made each sample; "
           "run with --annotate to compare them")


@dataclass
class VariantFigures:
    name: str
    samples: int = 0
    errors: Counter = field(default_factory=Counter)
    lengths: list[int] = field(default_factory=list)
    #: judge scores of the kept samples and of those min_judge_score rejected
    scores: list[float] = field(default_factory=list)
    rejected: int = 0
    #: the records that made samples (kept or rejected), by key (see `_record_key`)
    made: set = field(default_factory=set)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def records(self) -> int:
        """Records of this variant: those that made samples and the error records."""
        return len(self.made) + self.error_count

    @property
    def error_rate(self) -> float:
        """Error records over records (never over samples: a record may make many)."""
        return self.error_count / self.records if self.records else 0.0

    def row(self) -> dict[str, str]:
        """The figures as text, one column each (validate's table and the report's)."""
        lengths = self.lengths
        by_type = ", ".join(f"{kind} {n}" for kind, n in sorted(self.errors.items(), key=lambda kv: (-kv[1], kv[0])))
        rejected = f", {self.rejected} rejected" if self.rejected else ""
        return {
            "variant": self.name,
            "records": str(self.records),
            "samples": str(self.samples),
            "errors": f"{self.error_count} ({self.error_rate:.1%})",
            "by_type": by_type or "-",
            "length": (f"mean {statistics.fmean(lengths):.0f}, median {statistics.median(lengths):.0f}"
                       if lengths else "-"),
            "judge": (f"mean {statistics.fmean(self.scores):.2f} ({len(self.scores)} judged{rejected})"
                      if self.scores else "-"),
        }


COLUMNS = (("variant", "variant"), ("records", "records"), ("samples", "samples"), ("errors", "errors (rate)"),
           ("by_type", "errors by type"), ("length", "response chars"), ("judge", "judge score"))


@dataclass
class Comparison:
    figures: list[VariantFigures]
    #: one line: why there are no figures (minimal output), or what they leave out; else None
    note: str | None = None


def _record_id(input_data: Any) -> str | None:
    if isinstance(input_data, dict) and input_data.get("id") is not None:
        return str(input_data["id"])
    return None


def _content(input_data: Any) -> str:
    return json.dumps(input_data, sort_keys=True, ensure_ascii=False, default=str)


def _score(verdict: Any) -> float | None:
    if isinstance(verdict, dict):
        score = verdict.get("score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            return float(score)
    return None


def _minimal(data: Dataset) -> bool:
    """Whether the output is minimal: no metadata and no record beside each sample."""
    if data.manifest is not None:
        return not data.manifest.annotated
    return bool(data.samples) and not any("input_data" in s or "metadata" in s for s in data.samples)


def _rejected(data: Dataset) -> list[dict[str, Any]]:
    path = data.paths.rejected
    return _read_jsonl(path) if path.exists() else []


def variant_comparison(data: Dataset, declared: Sequence[str] = ()) -> Comparison:
    """The figures of each variant: those the pipeline declares (in its order), then any other
    the samples name; with the line to show instead or beside them. No variants anywhere: no
    figures and no line."""
    rejected = _rejected(data)
    seen = [v for s in data.samples if isinstance(v := (s.get("metadata") or {}).get("variant"), str)]
    seen += [v for r in rejected if isinstance(v := r.get("variant"), str)]
    names = list(declared) + sorted(set(seen) - set(declared))
    if not names:
        return Comparison([])
    if _minimal(data):
        return Comparison([], MINIMAL)
    known = list(declared) or names  # what the run chose among, as far as can be told
    figures = {name: VariantFigures(name) for name in names}
    contents: dict[str, set[str]] = {name: set() for name in names}  # records without an id that made samples
    unknown = 0
    for sample, response in zip(data.samples, data.responses):
        metadata = sample.get("metadata") if isinstance(sample.get("metadata"), dict) else {}
        input_data = sample.get("input_data")
        record_id = _record_id(input_data)
        name = metadata.get("variant")
        if not isinstance(name, str):
            if record_id is None:  # neither the run's label nor the record's id: cannot be known
                unknown += 1
                continue
            name = variant_of(record_id, known)
        row = figures[name]
        row.samples += 1
        row.lengths.append(len(response))
        if record_id is not None:
            row.made.add(("id", record_id))
        else:  # samples of one record share its content and its start
            contents[name].add(_content(input_data))
            row.made.add(("content", _content(input_data), str(sample.get("started_at"))))
        if (score := _score(metadata.get("judge"))) is not None:
            row.scores.append(score)
    for line in rejected:
        record_id = None if line.get("record_id") is None else str(line["record_id"])
        name = line.get("variant")
        if not isinstance(name, str):
            if record_id is None:
                unknown += 1
                continue
            name = variant_of(record_id, known)
        row = figures[name]
        row.rejected += 1
        if "input_data" in line:  # a record without an id: known by its content
            if _content(line["input_data"]) not in contents[name]:  # all its samples were rejected
                row.made.add(("content", _content(line["input_data"])))
        elif record_id is not None:
            row.made.add(("id", record_id))
        if (score := _score(line.get("judge"))) is not None:
            row.scores.append(score)
    for error in data.errors:
        name = variant_of(error.get("id"), known)
        figures[name].errors[str(error.get("error") or "unknown")] += 1
    note = None
    if unknown:
        note = (f"variants: {unknown} sample{'s' if unknown != 1 else ''} not compared: no metadata.variant, and "
                f"no record id to work it out from")
    return Comparison(list(figures.values()), note)


def compare_variants(data: Dataset, declared: Sequence[str] = ()) -> list[VariantFigures]:
    """The figures of `variant_comparison`, without its line (none for minimal output)."""
    return variant_comparison(data, declared).figures
