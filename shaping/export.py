"""A pipeline's output in the shape a trainer takes: OpenAI chat JSONL, ShareGPT and Alpaca
(as LLaMA-Factory reads them), Parquet, or a `datasets` folder (`save_to_disk`) for TRL.

    format    file                         reasoning (default)   tool calls       content parts
    openai    {"messages", "tools"?}       drop                  kept             kept as parts
    sharegpt  {"conversations", "tools"?}  inline                function_call /  text joined;
                                                                 observation      images: skipped
    alpaca    {"instruction", "input",     inline                sample skipped   text joined;
               "output", "system"?,                                               images: skipped
               "history"?}
    parquet   id, messages (list of        field                 kept; tools as   text joined;
              structs), tools (JSON text)                        JSON text        images: skipped
    hf        id, messages, tools          field                 kept             kept as parts
              (datasets' Json type)

Reasoning is read from wherever the pipeline put it (`reasoning_content`, or a `<think>` block
inline in the content) and written as `--reasoning` says: `field` (`reasoning_content`),
`inline` (`<think>\\n...\\n</think>\\n\\n` before the answer, as Qwen3 / DeepSeek templates and
LLaMA-Factory's `thought_words` have it) or `drop`. Annotated output exports as minimal output
does (its provenance is left out). Error records are never exported. A sample a format cannot
hold is skipped and counted with its reason, never changed into something else.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shaping.errors import ShapingError
from shaping.output import AtomicWriter
from shaping.quality.turns import THINK, content_text

FORMATS = ("openai", "sharegpt", "alpaca", "parquet", "hf")
REASONING_MODES = ("field", "inline", "drop")
#: openai: OpenAI's fine-tuning API takes no reasoning key in a message, so it is left out
#: unless asked for (`field` for trainers that read `reasoning_content`, such as TRL)
DEFAULT_REASONING = {"openai": "drop", "sharegpt": "inline", "alpaca": "inline", "parquet": "field", "hf": "field"}
#: formats whose rows are strings only: reasoning has no field there
TEXT_ONLY = ("sharegpt", "alpaca")
#: what formats need of the `hf` extra
NEEDS_HF = {"parquet": ("pyarrow",), "hf": ("datasets", "pyarrow")}
INSTALL_HF = "pip install 'shaping[hf]'"
#: LLaMA-Factory joins the results of parallel tool calls into one observation this way
TOOL_RESULTS_JOIN = "\n</tool_response>\n<tool_response>\n"


class Skip(Exception):
    """This sample cannot be written in this format; the message is the reason, counted."""


def require_hf(what: str, modules: tuple[str, ...]) -> None:
    """Raise one line naming the extra when what `what` needs of it is missing."""
    missing = []
    for module in modules:
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ShapingError(f"{what} needs {', '.join(missing)}: {INSTALL_HF}")


def default_path(root: Path, name: str, fmt: str) -> Path:
    folder = root / "training" / "export"
    return folder / {"parquet": f"{name}.parquet", "hf": f"{name}.hf"}.get(fmt, f"{name}.{fmt}.jsonl")


# -- reading -------------------------------------------------------------------------------------

def read_samples(path: Path, skipped: Counter) -> Iterator[dict[str, Any]]:
    """The samples of an output file, one at a time: `id`, `messages` and `tools` only (an
    annotated line's provenance is left out). Error records are counted in `skipped`."""
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ShapingError(f"{path}: line {number}: invalid JSON ({exc.msg})") from exc
            if isinstance(row, dict) and "__ERROR__" in row:
                skipped["error records (never exported)"] += 1
                continue
            if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
                raise ShapingError(f"{path}: line {number}: not a sample (no messages list)")
            sample = {"id": str(row.get("id")), "messages": row["messages"]}
            if row.get("tools") is not None:
                sample["tools"] = row["tools"]
            yield sample


# -- reasoning -----------------------------------------------------------------------------------

def _strip_think(content: Any) -> tuple[Any, list[str]]:
    """The content without inline `<think>` blocks, and the reasoning inside them."""
    if isinstance(content, str):
        found = [m.group(1).strip() for m in THINK.finditer(content)]
        return (THINK.sub("", content).strip(), found) if found else (content, [])
    if isinstance(content, list):
        parts, found = [], []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                text, inner = _strip_think(part["text"])
                found += inner
                part = {**part, "text": text}
            parts.append(part)
        return (parts, found) if found else (content, [])
    return content, []


def _think(reasoning: str) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n"


def with_reasoning(message: dict[str, Any], mode: str) -> tuple[dict[str, Any], bool]:
    """An assistant turn with its reasoning where `mode` puts it; whether it had any."""
    if message.get("role") != "assistant":
        return message, False
    content, inline = _strip_think(message.get("content"))
    field_text = message.get("reasoning_content")
    texts = [t for t in [field_text.strip() if isinstance(field_text, str) else "", *inline] if t]
    if not texts:  # an empty reasoning_content is no reasoning
        return {k: v for k, v in message.items() if k != "reasoning_content"}, False
    reasoning = "\n\n".join(texts)
    out = {k: v for k, v in message.items() if k != "reasoning_content"}
    out["content"] = content
    if mode == "field":
        out["reasoning_content"] = reasoning
    elif mode == "inline":
        if isinstance(content, list):
            out["content"] = [{"type": "text", "text": _think(reasoning)}, *content]
        else:
            out["content"] = _think(reasoning) + (content or "")
    return out, True


# -- converters: one sample in, one row out (or Skip) ---------------------------------------------

def _text(message: dict[str, Any], fmt: str) -> str:
    content = message.get("content")
    if isinstance(content, list) and any(isinstance(p, dict) and p.get("type") != "text" for p in content):
        raise Skip(f"image content ({fmt} holds text only)")
    return content_text(content)


def _calls(message: dict[str, Any]) -> list[dict[str, Any]]:
    calls = message.get("tool_calls")
    return [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else []


def to_openai(sample: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"messages": sample["messages"]}
    if sample.get("tools") is not None:
        row["tools"] = sample["tools"]
    return row


def _function_call(message: dict[str, Any]) -> str:
    """A ShareGPT `function_call` value: `{"name", "arguments": {...}}`, a list of them for
    parallel calls, after the reasoning inline (LLaMA-Factory strips `thought_words` first)."""
    calls = []
    for call in _calls(message):
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError) as exc:
            raise Skip("tool call arguments that are not JSON") from exc
        calls.append({"name": function.get("name"), "arguments": arguments})
    value = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
    text = _text(message, "sharegpt")
    answer, inline = _strip_think(text)
    if answer:
        raise Skip("assistant text beside tool calls (a function_call holds the calls only)")
    return (_think("\n\n".join(inline)) if inline else "") + value


def _tool_schemas(tools: list[Any]) -> list[Any]:
    """OpenAI tool entries as the function schemas LLaMA-Factory's examples give."""
    return [t["function"] if isinstance(t, dict) and t.get("type") == "function" and isinstance(t.get("function"), dict)
            else t for t in tools]


def _order_check(turns: list[dict[str, str]], odd: tuple[str, ...], even: tuple[str, ...], fmt: str) -> None:
    if not turns or len(turns) % 2 or any(t["from"] not in (odd, even)[i % 2] for i, t in enumerate(turns)):
        raise Skip(f"turn order ({fmt} needs user then assistant, alternating, ending with the assistant)")


def to_sharegpt(sample: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's ShareGPT: human / observation turns at odd positions, gpt / function_call
    at even ones, a system prompt first; `tools` as JSON text."""
    messages = sample["messages"]
    head: list[dict[str, str]] = []
    if messages and messages[0].get("role") == "system":
        head.append({"from": "system", "value": _text(messages[0], "sharegpt")})
        messages = messages[1:]
    turns: list[dict[str, str]] = []
    for message in messages:
        role = message.get("role")
        if role == "user":
            turns.append({"from": "human", "value": _text(message, "sharegpt")})
        elif role == "assistant" and _calls(message):
            turns.append({"from": "function_call", "value": _function_call(message)})
        elif role == "assistant":
            turns.append({"from": "gpt", "value": _text(message, "sharegpt")})
        elif role == "tool":
            if turns and turns[-1]["from"] == "observation":  # results of parallel calls: one turn
                turns[-1]["value"] += TOOL_RESULTS_JOIN + _text(message, "sharegpt")
            else:
                turns.append({"from": "observation", "value": _text(message, "sharegpt")})
        else:
            raise Skip("a system message after the first turn")
    _order_check(turns, ("human", "observation"), ("gpt", "function_call"), "sharegpt")
    row: dict[str, Any] = {"conversations": head + turns}
    if sample.get("tools"):
        row["tools"] = json.dumps(_tool_schemas(sample["tools"]), ensure_ascii=False)
    return row


def to_alpaca(sample: dict[str, Any]) -> dict[str, Any]:
    """LLaMA-Factory's Alpaca: the last exchange as instruction / output, the earlier ones as
    `history` pairs, the system prompt as `system`. Tool calls have no place in it."""
    messages = sample["messages"]
    if any(m.get("role") == "tool" or _calls(m) for m in messages):
        raise Skip("tool calls (alpaca has no place for them)")
    row: dict[str, Any] = {}
    if messages and messages[0].get("role") == "system":
        system = _text(messages[0], "alpaca")
        messages = messages[1:]
    else:
        system = None
    if any(m.get("role") == "system" for m in messages):
        raise Skip("a system message after the first turn")
    turns = [{"from": m.get("role"), "value": _text(m, "alpaca")} for m in messages]
    _order_check(turns, ("user",), ("assistant",), "alpaca")
    pairs = [[turns[i]["value"], turns[i + 1]["value"]] for i in range(0, len(turns), 2)]
    row.update(instruction=pairs[-1][0], input="", output=pairs[-1][1])
    if system is not None:
        row["system"] = system
    if len(pairs) > 1:
        row["history"] = pairs[:-1]
    return row


def to_struct(sample: dict[str, Any]) -> dict[str, Any]:
    """A Parquet row: every message with the same fields (content as text), tools as JSON text."""
    messages = []
    for message in sample["messages"]:
        calls = [{"id": c.get("id"), "type": c.get("type", "function"),
                  "function": {"name": (c.get("function") or {}).get("name"),
                               "arguments": (c.get("function") or {}).get("arguments")}} for c in _calls(message)]
        content = message.get("content")
        messages.append({"role": message.get("role"),
                         "content": None if content is None else _text(message, "parquet"),
                         "reasoning_content": message.get("reasoning_content"),
                         "tool_calls": calls or None, "tool_call_id": message.get("tool_call_id"),
                         "name": message.get("name")})
    tools = sample.get("tools")
    return {"id": sample["id"], "messages": messages,
            "tools": None if tools is None else json.dumps(tools, ensure_ascii=False)}


def to_hf(sample: dict[str, Any]) -> dict[str, Any]:
    return {"id": sample["id"], "messages": sample["messages"], "tools": sample.get("tools")}


CONVERTERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "openai": to_openai, "sharegpt": to_sharegpt, "alpaca": to_alpaca, "parquet": to_struct, "hf": to_hf}


# -- one export ---------------------------------------------------------------------------------

@dataclass
class ExportResult:
    path: Path
    fmt: str
    reasoning: str
    exported: int = 0
    #: reason -> samples (or error records) left out
    skipped: Counter = field(default_factory=Counter)
    #: assistant turns that had reasoning
    reasoning_turns: int = 0

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]


def convert(samples: Iterator[dict[str, Any]], fmt: str, reasoning: str, result: ExportResult) -> Iterator[dict]:
    converter = CONVERTERS[fmt]
    for sample in samples:
        messages, had = [], 0
        for message in sample["messages"]:
            if not isinstance(message, dict):
                raise ShapingError(f"sample {sample['id']}: a message that is not an object: {message!r:.80}")
            message, has = with_reasoning(message, reasoning)
            messages.append(message)
            had += has
        try:
            row = converter({**sample, "messages": messages})
        except Skip as why:
            result.skipped[str(why)] += 1
            continue
        result.exported += 1
        result.reasoning_turns += had
        yield row


def check_reasoning(fmt: str, reasoning: str | None) -> str:
    reasoning = reasoning or DEFAULT_REASONING[fmt]
    if reasoning == "field" and fmt in TEXT_ONLY:
        raise ShapingError(f"--reasoning field: {fmt} has no reasoning field; use --reasoning inline or drop")
    return reasoning


def export(source: Path, fmt: str, target: Path, reasoning: str | None = None) -> ExportResult:
    """Write the samples of output file `source` to `target` in format `fmt`; the target appears
    whole or not at all. Raises ShapingError when no sample can be exported (nothing written)."""
    reasoning = check_reasoning(fmt, reasoning)
    if fmt in NEEDS_HF:
        require_hf(f"--format {fmt}", NEEDS_HF[fmt])
    result = ExportResult(target, fmt, reasoning)
    rows = convert(read_samples(source, result.skipped), fmt, reasoning, result)
    writer = {"parquet": _write_parquet, "hf": _write_hf}.get(fmt, _write_jsonl)
    writer(rows, target, result)
    return result


def _nothing(result: ExportResult) -> ShapingError:
    why = "; ".join(f"{n} {reason}" for reason, n in result.skipped.items()) or "the output has no samples"
    return ShapingError(f"nothing to export as {result.fmt}: {why}")


def _write_jsonl(rows: Iterator[dict], target: Path, result: ExportResult) -> None:
    with AtomicWriter() as writer:
        writer.write_lines(target, (json.dumps(row, ensure_ascii=False) for row in rows))
        if not result.exported:
            raise _nothing(result)


def parquet_schema() -> Any:
    import pyarrow as pa

    call = pa.struct([("id", pa.string()), ("type", pa.string()),
                      ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())]))])
    message = pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning_content", pa.string()),
                         ("tool_calls", pa.list_(call)), ("tool_call_id", pa.string()), ("name", pa.string())])
    return pa.schema([("id", pa.string()), ("messages", pa.list_(message)), ("tools", pa.string())])


def _tmp(target: Path) -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _batches(rows: Iterator[dict], size: int = 1000) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _write_parquet(rows: Iterator[dict], target: Path, result: ExportResult) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, tmp = parquet_schema(), _tmp(target)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in _batches(rows):
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
        if not result.exported:
            raise _nothing(result)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def is_saved_dataset(folder: Path) -> bool:
    """Whether `folder` is what `Dataset.save_to_disk` writes (so replacing it loses nothing else)."""
    return (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()


def _write_hf(rows: Iterator[dict], target: Path, result: ExportResult) -> None:
    """A `save_to_disk` folder: the rows go through a JSON Lines file and `datasets`' JSON loader
    (so any size streams), are saved beside the target, then renamed into place."""
    import datasets

    from shaping.samples import datasets_features

    work = target.with_name(f".{target.name}.{os.getpid()}.work")
    staged, old = _tmp(target), target.with_name(f".{target.name}.{os.getpid()}.old")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    progress = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with open(work / "rows.jsonl", "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if not result.exported:
            raise _nothing(result)
        dataset = datasets.load_dataset("json", data_files=str(work / "rows.jsonl"), split="train",
                                        features=datasets_features(), cache_dir=str(work / "cache"))
        dataset.save_to_disk(str(staged))
        del dataset
        if target.exists():
            os.replace(target, old)
        os.replace(staged, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staged, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
        if progress:
            datasets.enable_progress_bars()
