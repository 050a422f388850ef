"""What a run writes: training samples, their annotated form, the steps, and error records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import pydantic_core
from pydantic import BaseModel, ConfigDict, Field

from shaping.requests import LLMMessage, ResponseError, ToolCall, Usage


class TrainingSample(BaseModel):
    """One training conversation. Minimal output is exactly `{"id", "messages"}`, plus `tools`
    (the JSON schemas of the tools offered, as TRL and OpenAI fine-tuning take them) when
    given; `metadata` appears only in annotated output."""

    model_config = ConfigDict(extra="forbid")

    id: str
    messages: list[LLMMessage]
    tools: list[dict[str, Any]] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    def minimal_json(self) -> bytes:
        """The line minimal output writes."""
        line: dict[str, Any] = {"id": self.id, "messages": wire_turns(self.messages)}
        if self.tools is not None:
            line["tools"] = self.tools
        return pydantic_core.to_json(line, inf_nan_mode="null")


def wire_turns(messages: list[Any]) -> list[Any]:
    """Turns as they are written (`LLMMessage.wire()`); anything else in the list (a dict a task
    appended after the sample was made, which pydantic does not check) as it is."""
    return [m.wire() if isinstance(m, LLMMessage) else m for m in messages]


class Step(BaseModel):
    """One request and its response, as sent and as received."""

    model_config = ConfigDict(extra="forbid")

    index: int
    model: str
    messages: list[LLMMessage]
    params: dict[str, Any]
    text: str | None
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    error: ResponseError | None
    usage: Usage
    finish_reason: str | None
    latency_s: float
    attempts: int
    cached: bool
    cost_usd: float | None = None
    #: 0 for a request as the task made it; 1, 2... for structured-output repairs of it
    repair: int = 0
    #: `model_request(..., metadata=...)`: recorded here, never sent
    metadata: dict[str, Any] = Field(default_factory=dict)


#: the free-form parts of an annotated line, written as JSON text: their shapes differ between
#: pipelines and between records, and a string column keeps every output loadable by
#: `datasets.load_dataset("json", ...)` alone or several at once, at any size
ENCODED_FIELDS = ("metadata", "input_data", "steps")


def encode_json(value: Any) -> str:
    return pydantic_core.to_json(value, fallback=str, inf_nan_mode="null").decode()


def annotated_line(id: str, messages: Any, tools: Any, metadata: Any, input_data: Any, steps: Any,
                   pipeline_commit: str | None, started_at: Any, completed_at: Any) -> bytes:
    """One annotated line: the training fields as they are, the free-form parts as JSON text."""
    head: dict[str, Any] = {"id": id, "messages": messages}
    if tools is not None:
        head["tools"] = tools
    return pydantic_core.to_json({
        **head, "metadata": encode_json(metadata), "input_data": encode_json(input_data),
        "steps": encode_json(steps), "pipeline_commit": pipeline_commit,
        "started_at": started_at, "completed_at": completed_at,
    }, fallback=str, inf_nan_mode="null")


def datasets_features(annotated: bool = False) -> Any:
    """`datasets.Features` for loading outputs whose messages differ in shape (plain turns in
    one pipeline, tool calls or reasoning in another) through one glob:
    `load_dataset("json", data_files="training/data/*.jsonl", features=datasets_features())`.
    Each message and tool keeps exactly its own keys (datasets' `Json` type, datasets >= 4.7)."""
    from datasets import Features, Json, List, Value

    columns = {"id": Value("string"), "messages": List(Json()), "tools": List(Json())}
    if annotated:
        columns.update({key: Value("string") for key in ENCODED_FIELDS})
        columns.update({"pipeline_commit": Value("string"), "started_at": Value("string"),
                        "completed_at": Value("string")})
    return Features(columns)


class AnnotatedTrainingSample(TrainingSample):
    """A sample with its provenance. In the file, `metadata`, `input_data` and `steps` are JSON
    text (see `ENCODED_FIELDS`); `from_line` / `to_line` convert."""

    input_data: Any = None
    steps: list[Step] = Field(default_factory=list)
    pipeline_commit: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None

    def to_line(self) -> bytes:
        return annotated_line(self.id, self.messages, self.tools, self.metadata, self.input_data, self.steps,
                              self.pipeline_commit, self.started_at, self.completed_at)

    @classmethod
    def from_line(cls, line: bytes | str) -> "AnnotatedTrainingSample":
        return cls.model_validate(decode_annotated(orjson.loads(line)))


def decode_annotated(data: dict[str, Any]) -> dict[str, Any]:
    """An annotated line as read from the file, its JSON-text parts decoded."""
    for key in ENCODED_FIELDS:
        if isinstance(data.get(key), str):
            data[key] = orjson.loads(data[key])
    return data


class ErrorDetails(BaseModel):
    """Why one record did not become a sample, with everything needed to see why."""

    model_config = ConfigDict(extra="forbid")

    id: str
    error: str
    message: str
    input_data: Any = None
    steps: list[Step] = Field(default_factory=list)
    pipeline_commit: str | None = None
    failed_at: datetime
    traceback: str | None = None


class ErrorRecord(BaseModel):
    """One line of `errors/<name>.jsonl`: `{"__ERROR__": {"id", "error", "message", "input_data",
    "steps", "pipeline_commit", "failed_at", "traceback"}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    details: ErrorDetails = Field(alias="__ERROR__")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, fallback=str).encode()
