"""One self-contained HTML file about a data set: summary, checklist, length histograms, errors
by type, and samples that open to show their conversation, metadata, input and every step
behind it. No script or style is fetched at view time; it opens from disk, offline.

The page is rendered by Jinja2 from `templates/report.html.j2` with autoescaping on: this module
only gathers plain values (text and numbers) from the output, and the template writes each of
them as text. An output file may come from anyone; nothing in it becomes markup or script."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from shaping.quality.checks import Check, counts, errors_by_type, judge_scores
from shaping.quality.dataset import Dataset, last_turn
from shaping.quality.turns import Turn, calls_text, content_text, tool_calls_of

#: problem lines per check in the checklist
SHOWN_PROBLEMS = 50
#: removed samples shown beside the sample they duplicate
SHOWN_DUPLICATES = 5
TEMPLATE = "report.html.j2"

_STATUS_CLASS = {"PASS": "pass", "FAIL": "fail", "INFO": "info", "N/A": "unknown"}


@lru_cache(maxsize=1)
def environment() -> Environment:
    # autoescape=True, not select_autoescape(): the template's name ends in .j2, and every
    # template here is HTML
    return Environment(loader=PackageLoader("shaping.quality", "templates"), autoescape=True,
                       undefined=StrictUndefined, keep_trailing_newline=True)


def _json(value: Any) -> str:
    """A value from the output as JSON text (for display only: the template escapes it)."""
    return json.dumps(value, ensure_ascii=False, default=str)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _histogram(values: list[int], title: str, bins: int = 20, unit: str = "chars") -> dict[str, Any]:
    if not values:
        return {"title": title, "bars": [], "unit": unit}
    low, high = min(values), max(values)
    width = max(1, (high - low + bins) // bins)
    tally = [0] * bins
    for v in values:
        tally[min((v - low) // width, bins - 1)] += 1
    top = max(tally)
    bars = [{"x": 30 + i * 25, "y": f"{130 - 120 * c / top:.1f}", "height": f"{120 * c / top:.1f}",
             "first": low + i * width, "last": low + (i + 1) * width - 1, "count": c} for i, c in enumerate(tally)]
    return {"title": title, "bars": bars, "low": low, "high": high, "top": top, "unit": unit,
            "width": 40 + bins * 25, "high_x": bins * 25}


#: runs the history plot shows (the latest)
PLOTTED_RUNS = 60


def _history_plot(runs: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    """Success rate over runs (records that became samples, of those taken) as an SVG line:
    one point per run (shaping.history), the failed ones marked."""
    if not runs:
        return None
    first = max(0, len(runs) - PLOTTED_RUNS)  # runs before the plotted ones
    runs = runs[first:]
    step = 560 / (len(runs) - 1) if len(runs) > 1 else 0
    points = []
    for i, run in enumerate(runs):
        records = run.get("records") if isinstance(run.get("records"), int) else 0
        errors = run.get("error_count") if isinstance(run.get("error_count"), int) else 0
        rate = (records - errors) / records if records else 0.0
        status = str(run.get("status") or "?")
        x, y = (40 + i * step) if len(runs) > 1 else 320, 130 - 120 * max(0.0, min(1.0, rate))
        points.append({"x": f"{x:.1f}", "y": f"{y:.1f}", "bad": status in ("failed", "interrupted"),
                       "title": f"run {first + i + 1}, {str(run.get('started_at') or '')[:16].replace('T', ' ')}: "
                                f"{rate:.1%} ({records - errors} of {records} records), {status}"})
    latest = runs[-1]
    return {"points": points, "line": " ".join(f"{p['x']},{p['y']}" for p in points), "count": len(runs),
            "ok": sum(1 for r in runs if r.get("status") in ("ok", "partial")),
            "latest": points[-1]["title"], "latest_status": str(latest.get("status") or "?")}


def _messages(messages: list[Any]) -> list[dict[str, Any]]:
    shown = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        images = (sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
                  if isinstance(content, list) else 0)
        reasoning = m.get("reasoning_content")
        shown.append({
            "role": str(m.get("role")),
            "answers": str(m["tool_call_id"]) if m.get("tool_call_id") else "",
            "reasoning": reasoning if isinstance(reasoning, str) and reasoning.strip() else "",
            "text": content_text(content),
            "images": images,
            "calls": calls_text(tool_calls_of(m)),
        })
    return shown


def _steps(steps: list[Any]) -> list[dict[str, Any]]:
    shown = []
    for s in steps:
        if not isinstance(s, dict):
            continue
        usage = s.get("usage") if isinstance(s.get("usage"), dict) else {}
        latency = s.get("latency_s") if isinstance(s.get("latency_s"), (int, float)) else 0
        error = s.get("error")
        if error and not isinstance(error, dict):
            error = {"type": "error", "message": error}
        reasoning = s.get("reasoning")
        cost = s.get("cost_usd")
        shown.append({
            "index": s.get("index"),
            "repair": s.get("repair") or "",
            "model": s.get("model"),
            "latency": f"{latency:.3f}",
            "attempts": s.get("attempts"),
            "prompt_tokens": usage.get("prompt_tokens", 0),
            "completion_tokens": usage.get("completion_tokens", 0),
            "reasoning_tokens": usage.get("reasoning_tokens") or "",
            "finish_reason": s.get("finish_reason"),
            "cached": bool(s.get("cached")),
            "cost": None if cost is None else str(cost),
            "params": _json(s.get("params") or {}),
            "metadata": _json(s["metadata"]) if s.get("metadata") else "",
            "messages": _messages(_list(s.get("messages"))),
            "error": {"type": error.get("type"), "message": error.get("message")} if error else None,
            "reasoning": reasoning if isinstance(reasoning, str) and reasoning.strip() else "",
            "text": str(s.get("text") or ""),
            "calls": calls_text(tool_calls_of(s)),
            "refusal": None if s.get("refusal") is None else str(s.get("refusal")),
        })
    return shown


def _flags(turns: list[Turn]) -> list[dict[str, Any]]:
    """Marks on a sample's line: what its assistant turns are."""
    flags = [("empty", any(t.empty for t in turns), True), ("truncated", any(t.truncated for t in turns), True),
             ("refused", any(t.refused for t in turns), True), ("reasoning", any(t.reasoning for t in turns), False),
             ("tool calls", any(t.tool_calls for t in turns), False)]
    return [{"name": name, "bad": bad} for name, on, bad in flags if on]


def _check(check: Check) -> dict[str, Any]:
    return {"status": check.status, "status_class": _STATUS_CLASS[check.status], "name": check.name,
            "figure": check.figure, "limit": check.limit, "problems": list(check.problems[:SHOWN_PROBLEMS]),
            "more_problems": max(0, len(check.problems) - SHOWN_PROBLEMS)}


def _sample(sample: dict[str, Any], turns: list[Turn]) -> dict[str, Any]:
    metadata, input_data = sample.get("metadata"), sample.get("input_data")
    return {
        "id": str(sample.get("id")),
        "prompt": last_turn(sample, "user")[:140],
        "flags": _flags(turns),
        "messages": _messages(_list(sample.get("messages"))),
        "metadata": _json(metadata) if metadata else "",
        "input_data": _json(input_data) if input_data is not None else "",
        "steps": _steps(_list(sample.get("steps"))),
    }


def _compared(sample: dict[str, Any], reason: str) -> str:
    """What dedupe compared of a sample for this reason (clipped)."""
    from shaping.quality.dedupe import prompt_text, response_text

    side = reason.split("_", 1)[-1]
    parts = ([prompt_text(sample)] if side in ("prompt", "pair") else []) + \
            ([response_text(sample)] if side in ("response", "pair") else [])
    text = "\n---\n".join(parts)
    return text if len(text) <= 400 else text[:400] + "..."


def _dedupe(data: Dataset, result: Any) -> dict[str, Any] | None:
    if result is None:
        return None
    near = result.settings.near
    summary = (f"dedupe would remove {len(result.removed)} of {result.total} samples: {result.exact} exact, "
               + (f"{result.near} near (estimated Jaccard similarity >= {near:g})" if near is not None
                  else "near duplicates not checked (pip install 'shaping[dedupe]')"))
    examples = [{"id": d.id, "of": d.duplicate_of, "reason": d.reason.replace("_", " "),
                 "similarity": f"{d.similarity:.2f}", "text": _compared(data.samples[d.index], d.reason),
                 "of_text": _compared(data.samples[d.of_index], d.reason)}
                for d in result.removed[:SHOWN_DUPLICATES]]
    return {"summary": summary, "examples": examples, "more": max(0, len(result.removed) - SHOWN_DUPLICATES),
            "command": f"isf pipeline dedupe {data.name}" + (f" --near {near:g}" if near is not None else "")}


def render(data: Dataset, checks: list[Check], max_samples: int = 300, dedupe: Any = None,
           history: list[dict[str, Any]] | None = None, variants: Any = None) -> str:
    """`dedupe`: what dedupe would remove (checks.dedupe_preview), shown with examples;
    `history`: the pipeline's runs (shaping.history), plotted; `variants`: the prompt variants'
    comparison (shaping.quality.variants.Comparison, or a list of its figures), side by side."""
    n, errors = len(data.samples), len(data.errors)
    failed = [c for c in checks if not c.passed]
    manifest = data.manifest
    figures = [("samples", n, "count-samples"), ("errors", errors, "count-errors"),
               ("checks failed", len(failed), "count-failed")]
    if manifest:
        figures.append(("requests", sum(u.requests for u in manifest.usage.values()), "count-requests"))
    turns = counts(data)
    total = turns["assistant turns"]
    figures += [
        ("empty turns", turns["empty"], "count-empty"),
        ("truncated turns", "?" if turns["truncated"] is None else turns["truncated"], "count-truncated"),
        ("refused turns", "?" if turns["refused"] is None else turns["refused"], "count-refused"),
        (f"turns with reasoning ({turns['with reasoning']} of {total})",
         f"{turns['with reasoning'] / total:.0%}" if total else "-", "count-reasoning"),
        ("tool-call turns", turns["tool-call turns"], "count-tool-calls"),
    ]
    if dedupe is not None:
        figures.append(("dedupe would remove", len(dedupe.removed), "count-dedupe"))
    if manifest and manifest.counts.rejected:
        figures.append(("rejected by the judge", manifest.counts.rejected, "count-rejected"))
    scores, _ = judge_scores(data)
    histograms = [_histogram([len(r) for r in data.responses], "response length"),
                  _histogram([len(p) for p in data.prompts], "prompt length")]
    if scores:  # whole-number scores: one bar each
        values = [int(score) for score, n in scores.items() for _ in range(n)]
        histograms.append(_histogram(values, "judge score", bins=max(values) - min(values) + 1, unit="score"))
    run = {"started": f"{manifest.started_at:%Y-%m-%d %H:%M}", "duration": f"{manifest.duration_s:.1f}",
           "commit": str(manifest.git.commit or manifest.git.note), "limit": manifest.limit or ""} if manifest else None
    by_sample: dict[str, list[Turn]] = {}
    for turn in data.turns:
        by_sample.setdefault(turn.sample_id, []).append(turn)
    shown = data.samples[:max_samples]
    return environment().get_template(TEMPLATE).render(
        name=data.name,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        source=str(data.paths.samples),
        run=run,
        figures=[{"label": label, "value": value, "id": fid} for label, value, fid in figures],
        checks=[_check(c) for c in checks],
        dedupe=_dedupe(data, dedupe),
        history=_history_plot(history),
        variants=[v.row() for v in getattr(variants, "figures", variants) or ()],
        variants_note=getattr(variants, "note", None),
        histograms=histograms,
        errors=[{"kind": kind, "count": len(items), "example": str(items[0].get("id")),
                 "message": str(items[0].get("message"))[:300]} for kind, items in errors_by_type(data).items()],
        samples=[_sample(s, by_sample.get(str(s.get("id")), [])) for s in shown],
        total_samples=n,
        more_samples=n > len(shown),
    )
