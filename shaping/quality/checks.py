"""The checklist a person runs before training on a data set: each line passes or fails, with
the figure it was judged on. Thresholds are per pipeline: `quality = {"min_samples": 50}` on the
class (the names are the fields of `Thresholds`)."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shaping.errors import ShapingError, describe_validation_error
from shaping.quality.dataset import Dataset

ERROR_LIKE = re.compile(
    r"\b(i('m| am) sorry|i apologi[sz]e|as an ai\b|as a language model|i can(no|')t (help|assist) with"
    r"|internal server error|bad gateway|service unavailable|rate limit(ed)?|too many requests"
    r"|traceback \(most recent call last\)|http (error )?[45]\d\d\b)|<html|\{\s*\"error\"\s*:",
    re.IGNORECASE,
)
NON_WORD = re.compile(r"[^\w\s]+")
SPACES = re.compile(r"\s+")


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_samples: int = Field(default=500, ge=0)
    max_empty_rate: float = Field(default=0.0, ge=0, le=1)
    max_error_like_rate: float = Field(default=0.01, ge=0, le=1)
    max_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    max_near_duplicate_rate: float = Field(default=0.05, ge=0, le=1)
    min_distinct_2: float = Field(default=0.3, ge=0, le=1)
    min_response_chars: int = Field(default=10, ge=0)
    max_short_rate: float = Field(default=0.05, ge=0, le=1)
    max_bad_role_order: int = Field(default=0, ge=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)

    @classmethod
    def for_pipeline(cls, pipeline_cls: type) -> "Thresholds":
        given = getattr(pipeline_cls, "quality", None) or {}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise ShapingError(describe_validation_error(exc, f"pipeline '{pipeline_cls.name}': quality")) from None


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    figure: str
    limit: str


def normalise(text: str) -> str:
    return SPACES.sub(" ", NON_WORD.sub(" ", text.lower())).strip()


def distinct_2(texts: list[str]) -> float:
    bigrams: Counter = Counter()
    for text in texts:
        words = text.split()
        bigrams.update(zip(words, words[1:]))
    total = sum(bigrams.values())
    return len(bigrams) / total if total else 0.0


def role_order_ok(messages: list) -> bool:
    roles = [m.get("role") for m in messages if isinstance(m, dict)]
    if len(roles) != len(messages) or not roles:
        return False
    if roles[0] == "system":
        roles = roles[1:]
    if not roles or roles[-1] != "assistant":
        return False
    return all(role == ("user" if i % 2 == 0 else "assistant") for i, role in enumerate(roles))


def _rate(count: int, total: int) -> float:
    return count / total if total else 0.0


def run_checks(data: Dataset, limits: Thresholds) -> list[Check]:
    samples, responses = data.samples, data.responses
    n = len(samples)
    checks = [Check("volume", n >= limits.min_samples, f"{n} samples", f">= {limits.min_samples}")]

    empty = sum(1 for r in responses if not r.strip())
    checks.append(Check("empty responses", _rate(empty, n) <= limits.max_empty_rate,
                        f"{empty} ({_rate(empty, n):.1%})", f"<= {limits.max_empty_rate:.1%}"))

    error_like = sum(1 for r in responses if ERROR_LIKE.search(r))
    checks.append(Check("error-like responses", _rate(error_like, n) <= limits.max_error_like_rate,
                        f"{error_like} ({_rate(error_like, n):.1%})", f"<= {limits.max_error_like_rate:.1%}"))

    conversations = Counter(repr(s.get("messages")) for s in samples)
    exact = sum(c - 1 for c in conversations.values())
    checks.append(Check("exact duplicates", _rate(exact, n) <= limits.max_duplicate_rate,
                        f"{exact} ({_rate(exact, n):.1%})", f"<= {limits.max_duplicate_rate:.1%}"))

    near = Counter(normalise(r) for r in responses)
    near_copies = sum(c - 1 for c in near.values())
    checks.append(Check("near duplicates", _rate(near_copies, n) <= limits.max_near_duplicate_rate,
                        f"{near_copies} ({_rate(near_copies, n):.1%})", f"<= {limits.max_near_duplicate_rate:.1%}"))

    diversity = distinct_2(responses)
    checks.append(Check("diversity (distinct-2)", diversity >= limits.min_distinct_2, f"{diversity:.3f}",
                        f">= {limits.min_distinct_2}"))

    lengths = sorted(len(r) for r in responses)
    short = sum(1 for x in lengths if x < limits.min_response_chars)
    figure = (f"min {lengths[0]}, median {statistics.median(lengths):.0f}, p95 {lengths[int(0.95 * (n - 1))]}, "
              f"max {lengths[-1]} chars; {short} under {limits.min_response_chars}") if lengths else "no responses"
    checks.append(Check("length distribution", bool(lengths) and _rate(short, n) <= limits.max_short_rate,
                        figure, f"<= {limits.max_short_rate:.1%} under {limits.min_response_chars} chars"))

    bad_order = sum(1 for s in samples if not role_order_ok(s.get("messages") or []))
    checks.append(Check("role order", bad_order <= limits.max_bad_role_order, f"{bad_order} invalid",
                        f"<= {limits.max_bad_role_order} (user/assistant alternating, ends on assistant)"))

    errors = len(data.errors)
    rate = _rate(errors, errors + n)
    checks.append(Check("error rate", rate <= limits.max_error_rate, f"{errors} errors ({rate:.1%})",
                        f"<= {limits.max_error_rate:.1%}"))
    return checks


def errors_by_type(data: Dataset) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for error in data.errors:
        groups.setdefault(str(error.get("error", "unknown")), []).append(error)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))
