"""What a run writes: training samples, their annotated form, the steps, and error records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
        include = {"id", "messages", "tools"} if self.tools is not None else {"id", "messages"}
        return self.model_dump_json(include=include).encode()


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


class AnnotatedTrainingSample(TrainingSample):
    input_data: Any = None
    steps: list[Step] = Field(default_factory=list)
    pipeline_commit: str | None = None
    started_at: datetime
    completed_at: datetime


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
    """One line of `<name>.errors.jsonl`: `{"__ERROR__": {"id", "error", "message", "input_data",
    "steps", "pipeline_commit", "failed_at", "traceback"}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    details: ErrorDetails = Field(alias="__ERROR__")

    def to_json(self) -> bytes:
        return self.model_dump_json(by_alias=True, fallback=str).encode()
