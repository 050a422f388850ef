"""One self-contained HTML file about a data set: summary, checklist, length histograms, errors
by type, and samples that open to show their conversation and every step behind it. No script
or style is fetched at view time; it opens from disk, offline."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from html import escape
from typing import Any

from shaping.quality.checks import Check, counts, errors_by_type
from shaping.quality.dataset import Dataset, last_turn
from shaping.quality.turns import Turn, calls_text, content_text, tool_calls_of

#: problem lines per check in the checklist
SHOWN_PROBLEMS = 50

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}td,th{padding:.3rem .5rem;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
.pass{color:#0a7a2f;font-weight:600}.fail{color:#b3261e;font-weight:600}.info{color:#3b6fd8;font-weight:600}
.unknown{color:#a15c00;font-weight:600}ul.problems{margin:.2rem 0;padding-left:1.2rem;font-size:12px;color:#555}
.flag{font-size:11px;border-radius:3px;padding:0 .3rem;margin-left:.3rem;background:#eee}.flag.bad{background:#f6d5d2;color:#b3261e}
.thinking,.calls{color:#666;font-size:12px;white-space:pre-wrap}
.figures{display:flex;gap:2rem;flex-wrap:wrap}.figure{font-size:1.6rem;font-weight:600}.label{color:#666}
details.sample{border:1px solid #ddd;border-radius:6px;margin:.4rem 0;padding:.3rem .6rem}
details.sample>summary{cursor:pointer}.msg{white-space:pre-wrap;margin:.3rem 0;padding:.3rem .5rem;border-left:3px solid #ccc}
.msg.user{border-color:#3b6fd8}.msg.assistant{border-color:#0a7a2f}.msg.system{border-color:#999}
.step{background:#fafafa;border:1px solid #eee;margin:.4rem 0;padding:.4rem}.meta{color:#666;font-size:12px}
svg text{font-size:10px;fill:#555}
"""


def _histogram(values: list[int], title: str, bins: int = 20) -> str:
    if not values:
        return f"<p>{escape(title)}: no data</p>"
    low, high = min(values), max(values)
    width = max(1, (high - low + bins) // bins)
    counts = [0] * bins
    for v in values:
        counts[min((v - low) // width, bins - 1)] += 1
    top = max(counts)
    bars = "".join(
        f'<rect x="{30 + i * 25}" y="{130 - 120 * c / top:.1f}" width="22" height="{120 * c / top:.1f}" fill="#3b6fd8">'
        f"<title>{low + i * width}-{low + (i + 1) * width - 1} chars: {c}</title></rect>"
        for i, c in enumerate(counts))
    return (f'<figure><figcaption>{escape(title)} (chars, {low} to {high})</figcaption>'
            f'<svg width="{40 + bins * 25}" height="150" role="img">{bars}'
            f'<text x="30" y="145">{low}</text><text x="{bins * 25}" y="145">{high}</text>'
            f'<text x="0" y="15">{top}</text></svg></figure>')


def _content(content: Any) -> str:
    """A message's content as HTML: its text, and where it is a list of parts, a note per image."""
    text = escape(content_text(content))
    if isinstance(content, list):
        images = sum(1 for p in content if isinstance(p, dict) and p.get("type") == "image_url")
        text += f'<span class="meta">[{images} image{"s" if images != 1 else ""}]</span>' if images else ""
    return text


def _calls(calls: list[dict]) -> str:
    return f'<div class="calls">tool calls:\n{escape(calls_text(calls))}</div>' if calls else ""


def _thinking(reasoning: Any) -> str:
    if not isinstance(reasoning, str) or not reasoning.strip():
        return ""
    return f'<details class="thinking"><summary>reasoning</summary>{escape(reasoning)}</details>'


def _messages(messages: list[Any]) -> str:
    parts = []
    for m in messages:
        if not isinstance(m, dict):
            continue
        role = escape(str(m.get("role")))
        answers = f' → {escape(str(m["tool_call_id"]))}' if m.get("tool_call_id") else ""
        parts.append(f'<div class="msg {role}"><b>{role}</b>{answers}\n{_thinking(m.get("reasoning_content"))}'
                     f'{_content(m.get("content"))}{_calls(tool_calls_of(m))}</div>')
    return "".join(parts)


def _list(value: Any) -> list:
    return value if isinstance(value, list) else []


def _steps(steps: list[dict]) -> str:
    if not steps:
        return '<p class="meta">no steps recorded (minimal output, or a task that made no request)</p>'
    parts = []
    for s in steps:
        if not isinstance(s, dict):
            continue
        usage = s.get("usage") if isinstance(s.get("usage"), dict) else {}
        error = s.get("error")
        latency = s.get("latency_s") if isinstance(s.get("latency_s"), (int, float)) else 0
        meta = (f"step {s.get('index')}{' repair ' + str(s.get('repair')) if s.get('repair') else ''} · "
                f"model {escape(str(s.get('model')))} · {latency:.3f}s · attempts {s.get('attempts')} · "
                f"tokens {usage.get('prompt_tokens', 0)}/{usage.get('completion_tokens', 0)}"
                f"{' (' + str(usage['reasoning_tokens']) + ' reasoning)' if usage.get('reasoning_tokens') else ''}"
                f" · finish {escape(str(s.get('finish_reason')))}{' · cached' if s.get('cached') else ''}")
        refusal = (f'<div class="msg fail">refusal: {escape(str(s.get("refusal")))}</div>'
                   if s.get("refusal") is not None else "")
        if error and not isinstance(error, dict):
            error = {"type": "error", "message": error}
        result = (f'<div class="msg fail">error {escape(str(error.get("type")))}: {escape(str(error.get("message")))}</div>'
                  if error else f'<div class="msg assistant"><b>response</b>\n{_thinking(s.get("reasoning"))}'
                                f'{escape(str(s.get("text") or ""))}{_calls(tool_calls_of(s))}</div>{refusal}')
        params = escape(json.dumps(s.get("params") or {}, ensure_ascii=False))
        parts.append(f'<div class="step"><div class="meta">{meta} · params {params}</div>'
                     f'{_messages(_list(s.get("messages")))}{result}</div>')
    return "".join(parts)


_STATUS_CLASS = {"PASS": "pass", "FAIL": "fail", "INFO": "info", "N/A": "unknown"}


def _problems(check: Check) -> str:
    if not check.problems:
        return ""
    items = "".join(f"<li>{escape(p)}</li>" for p in check.problems[:SHOWN_PROBLEMS])
    more = (f"<li>... and {len(check.problems) - SHOWN_PROBLEMS} more</li>"
            if len(check.problems) > SHOWN_PROBLEMS else "")
    return f'<ul class="problems">{items}{more}</ul>'


def _flags(turns: list[Turn]) -> str:
    """Marks on a sample's line: what its assistant turns are."""
    flags = [("empty", any(t.empty for t in turns), True), ("truncated", any(t.truncated for t in turns), True),
             ("refused", any(t.refused for t in turns), True), ("reasoning", any(t.reasoning for t in turns), False),
             ("tool calls", any(t.tool_calls for t in turns), False)]
    return "".join(f'<span class="flag{" bad" if bad else ""}">{name}</span>' for name, on, bad in flags if on)


def render(data: Dataset, checks: list[Check], max_samples: int = 300) -> str:
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
    head = "".join(f'<div><div class="figure" id="{fid}">{value}</div><div class="label">{label}</div></div>'
                   for label, value, fid in figures)
    run_info = (f"<p class='meta'>run {manifest.started_at:%Y-%m-%d %H:%M} UTC, {manifest.duration_s:.1f}s, "
                f"commit {escape(str(manifest.git.commit or manifest.git.note))}"
                f"{', partial (--limit ' + str(manifest.limit) + ')' if manifest.limit else ''}</p>") if manifest else ""
    checklist = "".join(
        f'<tr><td class="{_STATUS_CLASS[c.status]}">{c.status}</td>'
        f"<td>{escape(c.name)}</td><td>{escape(c.figure)}{_problems(c)}</td><td>{escape(c.limit)}</td></tr>"
        for c in checks)
    groups = errors_by_type(data)
    error_rows = "".join(
        f"<tr><td>{escape(kind)}</td><td>{len(items)}</td><td>{escape(str(items[0].get('id')))}</td>"
        f"<td>{escape(str(items[0].get('message'))[:300])}</td></tr>" for kind, items in groups.items())
    shown = data.samples[:max_samples]
    by_sample: dict[str, list[Turn]] = {}
    for turn in data.turns:
        by_sample.setdefault(turn.sample_id, []).append(turn)
    samples = "".join(
        f'<details class="sample" id="sample-{i}"><summary><b>{escape(str(s.get("id")))}</b> '
        f'{escape(last_turn(s, "user")[:140])}{_flags(by_sample.get(str(s.get("id")), []))}</summary>'
        f'<h4>conversation</h4>{_messages(_list(s.get("messages")))}'
        f'<h4>steps ({len(_list(s.get("steps")))})</h4>{_steps(_list(s.get("steps")))}</details>'
        for i, s in enumerate(shown))
    more = f"<p class='meta'>showing the first {len(shown)} of {n} samples</p>" if n > len(shown) else ""
    histograms = (_histogram([len(r) for r in data.responses], "response length")
                  + _histogram([len(p) for p in data.prompts], "prompt length"))
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(data.name)}: data report</title>
<style>{STYLE}</style></head><body>
<h1>{escape(data.name)}</h1><p class="meta">report generated {generated} from {escape(str(data.paths.samples))}</p>
{run_info}<div class="figures">{head}</div>
<h2>Checklist</h2><table id="checklist"><tr><th></th><th>check</th><th>figure</th><th>limit</th></tr>{checklist}</table>
<h2>Lengths</h2><div class="figures">{histograms}</div>
<h2>Errors by type</h2>{'<table id="errors"><tr><th>type</th><th>count</th><th>example</th><th>message</th></tr>' + error_rows + '</table>' if groups else '<p>none</p>'}
<h2>Samples</h2>{more}<div id="samples">{samples}</div>
</body></html>
"""
