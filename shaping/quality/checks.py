"""The checklist a person runs before training on a data set: each line passes or fails, with
the figure it was judged on (and, where it fails, the turns to blame); some lines are figures
only (reasoning, tool calls). Thresholds are per pipeline: `quality = {"min_samples": 50}` on
the class (the names are the fields of `Thresholds`)."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shaping.errors import ShapingError, describe_validation_error
from shaping.quality.dataset import Dataset
from shaping.quality.turns import Turn, tool_calls_of

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
    #: assistant turns with no text and no tool calls allowed...
    max_empty: int = Field(default=0, ge=0)
    #: ...or the share of samples that may have one
    max_empty_rate: float = Field(default=0.0, ge=0, le=1)
    #: assistant turns whose answer was cut off at the token limit (finish_reason length)
    max_truncated: int = Field(default=0, ge=0)
    #: assistant turns that are a refusal (a refusal, or finish_reason refusal / content_filter)
    max_refused: int = Field(default=0, ge=0)
    max_error_like_rate: float = Field(default=0.01, ge=0, le=1)
    max_duplicate_rate: float = Field(default=0.0, ge=0, le=1)
    max_near_duplicate_rate: float = Field(default=0.05, ge=0, le=1)
    min_distinct_2: float = Field(default=0.3, ge=0, le=1)
    min_response_chars: int = Field(default=10, ge=0)
    max_short_rate: float = Field(default=0.05, ge=0, le=1)
    max_bad_role_order: int = Field(default=0, ge=0)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    #: the near-duplicate threshold of the "dedupe would remove" line (with datasketch installed);
    #: None: exact duplicates only (MinHash over every sample takes about 0.7 ms a sample)
    dedupe_near: float | None = Field(default=None, gt=0, le=1)
    #: samples an LLM judge scored lower are kept out of the output by the run (shaping.judge)
    min_judge_score: float | None = None

    @classmethod
    def for_pipeline(cls, pipeline_cls: type) -> "Thresholds":
        given = getattr(pipeline_cls, "quality", None) or {}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise ShapingError(describe_validation_error(exc, f"pipeline '{pipeline_cls.name}': quality")) from exc


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    figure: str
    limit: str
    #: "check": judged; "info": a figure, never fails; "unknown": this output cannot tell
    kind: Literal["check", "info", "unknown"] = "check"
    #: one line per turn to blame ("sample 7: message 1 (assistant): ..."), every one of them
    problems: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return {"info": "INFO", "unknown": "N/A"}.get(self.kind) or ("PASS" if self.passed else "FAIL")


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
    """Fit for training: an optional system turn, then user and assistant alternating, starting
    on user and ending on assistant; an assistant turn that calls tools is followed by the tool
    turns answering its calls (by `tool_call_id`, where given) and then by an assistant turn."""
    if not messages or not all(isinstance(m, dict) for m in messages):
        return False
    if messages[0].get("role") == "system":
        messages = messages[1:]
    previous = None  # "user", "assistant", "calls" (an assistant turn with tool calls), "tool"
    pending: set = set()  # ids of the calls not yet answered
    for message in messages:
        role = message.get("role")
        if role == "user" and previous in (None, "assistant"):
            previous = "user"
        elif role == "assistant" and previous in ("user", "tool"):
            calls = tool_calls_of(message)
            previous = "calls" if calls else "assistant"
            pending = {c.get("id") for c in calls if c.get("id")}
        elif role == "tool" and previous in ("calls", "tool"):
            call_id = message.get("tool_call_id")
            if pending and call_id not in pending:
                return False
            pending.discard(call_id)
            previous = "tool"
        else:
            return False
    return previous in ("assistant", "calls")


def _roles(sample: dict) -> str:
    messages = sample.get("messages")
    if not isinstance(messages, list) or not messages:
        return "(no messages)"
    return ", ".join(str(m.get("role")) if isinstance(m, dict) else type(m).__name__ for m in messages)[:200]


def _rate(count: int, total: int) -> float:
    return count / total if total else 0.0


def run_checks(data: Dataset, limits: Thresholds) -> list[Check]:
    samples, responses = data.samples, data.responses
    n = len(samples)
    checks = [Check("volume", n >= limits.min_samples, f"{n} samples", f">= {limits.min_samples}")]

    checks.extend(turn_checks(data, limits))

    error_like = [(s, m) for s, r in zip(samples, responses) if (m := ERROR_LIKE.search(r))]
    checks.append(Check("error-like responses", _rate(len(error_like), n) <= limits.max_error_like_rate,
                        f"{len(error_like)} ({_rate(len(error_like), n):.1%})", f"<= {limits.max_error_like_rate:.1%}",
                        problems=tuple(f"sample {s.get('id')}: last assistant turn says {m.group(0)!r}"
                                       for s, m in error_like)))

    conversations = Counter(repr(s.get("messages")) for s in samples)
    exact = sum(c - 1 for c in conversations.values())
    checks.append(Check("exact duplicates", _rate(exact, n) <= limits.max_duplicate_rate,
                        f"{exact} ({_rate(exact, n):.1%})", f"<= {limits.max_duplicate_rate:.1%}"))

    # empty answers are the empty-turn check's to judge (and its thresholds' to allow), not copies
    near = Counter(normalised for r in responses if (normalised := normalise(r)))
    near_copies = sum(c - 1 for c in near.values())
    checks.append(Check("near duplicates", _rate(near_copies, n) <= limits.max_near_duplicate_rate,
                        f"{near_copies} ({_rate(near_copies, n):.1%})", f"<= {limits.max_near_duplicate_rate:.1%}"))

    diversity = distinct_2(responses)
    checks.append(Check("diversity (distinct-2)", diversity >= limits.min_distinct_2, f"{diversity:.3f}",
                        f">= {limits.min_distinct_2}"))

    lengths = sorted(len(r) for r in responses if r.strip())  # the empty ones: see empty assistant turns
    short = sum(1 for x in lengths if x < limits.min_response_chars)
    figure = (f"min {lengths[0]}, median {statistics.median(lengths):.0f}, "
              f"p95 {lengths[int(0.95 * (len(lengths) - 1))]}, max {lengths[-1]} chars; "
              f"{short} under {limits.min_response_chars}") if lengths else "no responses"
    checks.append(Check("length distribution", bool(lengths) and _rate(short, n) <= limits.max_short_rate,
                        figure, f"<= {limits.max_short_rate:.1%} under {limits.min_response_chars} chars"))

    bad_order = [s for s in samples if not role_order_ok(s.get("messages") or [])]
    checks.append(Check("role order", len(bad_order) <= limits.max_bad_role_order, f"{len(bad_order)} invalid",
                        f"<= {limits.max_bad_role_order} (user/assistant alternating, tool turns after "
                        f"tool calls, ends on assistant)",
                        problems=tuple(f"sample {s.get('id')}: roles {_roles(s)}" for s in bad_order)))

    errors = len(data.errors)
    # of the records (a record may make several samples); without a manifest, samples stand in
    records = data.manifest.counts.records if data.manifest is not None and data.manifest.counts.records else errors + n
    rate = _rate(errors, records)
    checks.append(Check("error rate", rate <= limits.max_error_rate, f"{errors} of {records} records ({rate:.1%})",
                        f"<= {limits.max_error_rate:.1%}"))
    checks.append(dedupe_check(data, limits))
    checks.append(judge_check(data, limits))
    checks.extend(turn_figures(data))
    return checks


def judge_scores(data: Dataset) -> tuple[Counter, int]:
    """How many samples got each judge score (metadata["judge"], annotated outputs only), and
    how many have no verdict."""
    scores: Counter = Counter()
    unjudged = 0
    for sample in data.samples:
        metadata = sample.get("metadata")
        verdict = metadata.get("judge") if isinstance(metadata, dict) else None
        if isinstance(verdict, dict) and isinstance(verdict.get("score"), (int, float)):
            scores[verdict["score"]] += 1
        else:
            unjudged += 1
    return scores, unjudged


def judge_check(data: Dataset, limits: Thresholds) -> Check:
    """The judge's score distribution; with min_judge_score, no kept sample may be under it
    (the run moves them to the rejected file: one here was edited in, or judged otherwise)."""
    scores, unjudged = judge_scores(data)
    rejected = data.manifest.counts.rejected if data.manifest is not None else 0
    if not scores:
        return Check("judge scores", True, "no sample has a judge verdict", "-", kind="unknown"
                     if limits.min_judge_score is not None else "info")
    judged = sum(scores.values())
    mean = sum(score * n for score, n in scores.items()) / judged
    figure = (", ".join(f"{score}: {n}" for score, n in sorted(scores.items())) + f" (mean {mean:.2f})"
              + (f"; {unjudged} not judged" if unjudged else "") + (f"; {rejected} rejected by the run" if rejected else ""))
    if limits.min_judge_score is None:
        return Check("judge scores", True, figure, "-", kind="info")
    low = [s for s in data.samples if isinstance((v := (s.get("metadata") or {}).get("judge")), dict)
           and isinstance(v.get("score"), (int, float)) and v["score"] < limits.min_judge_score]
    return Check("judge scores", not low, figure, f"none under {limits.min_judge_score:g}",
                 problems=tuple(f"sample {s.get('id')}: judge score {s['metadata']['judge']['score']}" for s in low))


def dedupe_preview(data: Dataset, limits: Thresholds):
    """What `isf pipeline dedupe` would remove: exact duplicates, and near ones at
    `limits.dedupe_near` when it is set and datasketch is installed."""
    from shaping.quality.dedupe import DedupeSettings, has_datasketch

    near = limits.dedupe_near if limits.dedupe_near is not None and has_datasketch() else None
    return data.dedupe(DedupeSettings(near=near))


def dedupe_check(data: Dataset, limits: Thresholds) -> Check:
    """A figure, never a failure (the duplicate checks above judge): what dedupe would take out."""
    result = dedupe_preview(data, limits)
    near = result.settings.near
    figure = (f"{len(result.removed)} of {result.total} samples: {result.exact} exact, "
              + (f"{result.near} near (>= {near:g})" if near is not None
                 else "near not checked (quality dedupe_near sets a threshold)" if limits.dedupe_near is None
                 else "near not checked (pip install 'shaping[dedupe]')"))
    command = f"isf pipeline dedupe {data.name}" + (f" --near {near:g}" if near is not None else "")
    return Check("dedupe would remove", True, figure, f"information only; {command} removes them", kind="info",
                 problems=tuple(d.describe() for d in result.removed))


def _percent(count: int, total: int) -> str:
    return f"{count} of {total} assistant turns ({_rate(count, total):.1%})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _blamed(turns: list[Turn], what: str) -> str:
    if not turns:
        return "none"
    return f"{_plural(len(turns), 'turn')} {what} in {_plural(len({t.sample_id for t in turns}), 'sample')}"


def turn_checks(data: Dataset, limits: Thresholds) -> list[Check]:
    """Empty, cut-off and refused assistant turns: each a failure unless the thresholds allow it."""
    turns, n = data.turns, len(data.samples)
    empty = [t for t in turns if t.empty]
    rate = _rate(len({t.sample_id for t in empty}), n)
    passed = len(empty) <= limits.max_empty or (limits.max_empty_rate > 0 and rate <= limits.max_empty_rate)
    checks = [Check(
        "empty assistant turns", passed, _blamed(empty, "empty") + (f" ({rate:.1%} of samples)" if empty else ""),
        f"<= {limits.max_empty} (no text and no tool calls)"
        + (f", or <= {limits.max_empty_rate:.1%} of samples" if limits.max_empty_rate > 0 else ""),
        problems=tuple(f"{t.where()}: empty (no text and no tool calls)" for t in empty))]

    judged = [t for t in turns if t.truncated is not None]
    unjudged = len({t.sample_id for t in turns if t.truncated is None})
    for name, attr, limit, what, meaning in (
            ("truncated assistant turns", "truncated", limits.max_truncated, "cut off",
             "the answer's step ended with finish_reason length"),
            ("refused assistant turns", "refused", limits.max_refused, "refused",
             "a refusal, or finish_reason refusal / content_filter")):
        if turns and not judged:
            checks.append(Check(name, True, "cannot be known: minimal output records no steps",
                                "annotated output (the default; not --no-annotate) shows it", kind="unknown"))
            continue
        blamed = [t for t in judged if getattr(t, attr)]
        figure = _blamed(blamed, what)
        if unjudged:
            figure += f"; {_plural(unjudged, 'sample')} without steps not judged"
        checks.append(Check(name, len(blamed) <= limit, figure, f"<= {limit} ({meaning})",
                            problems=tuple(f"{t.where()}: {what} ({t.detail})" for t in blamed)))
    return checks


def turn_figures(data: Dataset) -> list[Check]:
    """Reasoning and tool calls across assistant turns: figures, never failures."""
    turns = data.turns
    total = len(turns)
    field = sum(1 for t in turns if t.reasoning == "field")
    inline = sum(1 for t in turns if t.reasoning == "inline")
    calling = [t for t in turns if t.tool_calls]
    tool_turns = sum(1 for s in data.samples for m in (s.get("messages") if isinstance(s.get("messages"), list) else [])
                     if isinstance(m, dict) and m.get("role") == "tool")
    return [
        Check("reasoning", True,
              f"{_percent(field + inline, total)} with reasoning ({field} reasoning_content, {inline} inline "
              f"<think>); {total - field - inline} without", "information only", kind="info"),
        Check("tool calls", True,
              f"{_percent(len(calling), total)} call tools ({_plural(sum(t.tool_calls for t in calling), 'call')}); "
              f"{_plural(tool_turns, 'tool turn')}", "information only", kind="info"),
    ]


def counts(data: Dataset) -> dict[str, int | None]:
    """The turn counts at a glance (the report's figures): None where output cannot tell."""
    turns = data.turns
    known = [t for t in turns if t.truncated is not None]
    unknown = bool(turns) and not known
    return {
        "assistant turns": len(turns),
        "empty": sum(1 for t in turns if t.empty),
        "truncated": None if unknown else sum(1 for t in known if t.truncated),
        "refused": None if unknown else sum(1 for t in known if t.refused),
        "with reasoning": sum(1 for t in turns if t.reasoning),
        "tool-call turns": sum(1 for t in turns if t.tool_calls),
    }


def errors_by_type(data: Dataset) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for error in data.errors:
        groups.setdefault(str(error.get("error", "unknown")), []).append(error)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))
