"""An LLM judge inside a task: a structured-output step that scores a sample by a rubric.

    def task(self, record):
        answer = yield model_request(record["prompt"], model=self.teacher)
        sample = TrainingSample(id=record["id"], messages=[..., answer.as_message()])
        sample = yield from self.judge_sample(self.judge_model, sample, rubric="Correct and helpful?")
        return sample

The judge sees the sample's conversation (reasoning left out unless `include_reasoning`), the
rubric and the scale, and answers `{"rationale": str, "score": int}` (the rationale first: a
reason given before the score makes a better score). The verdict goes into the sample's
metadata under `name` ("judge"): `{"score", "rationale", "scale": [low, high]}`. A judge that
fails (the request, or no valid JSON after the repairs) fails the record like any step.

`quality = {"min_judge_score": N}` on the pipeline keeps samples whose `judge` score is under N
out of the output: they go to training/data/rejected/NAME.jsonl, each with the reason (and,
in a pipeline with prompt variants, its `variant` and the `record_id` it came from; a record
without an "id" also as `input_data`). Samples
without a verdict (made on a path that does not judge) are kept; `isf pipeline validate` counts
them.
`yield from self.judge_samples(model, samples, ...)` judges several samples with one yield.
"""

from __future__ import annotations

import json

import orjson
from collections.abc import Generator
from typing import Any

from pydantic import BaseModel, Field, create_model

from shaping.errors import PipelineError, TaskContractError
from shaping.requests import ModelRequest, ModelResponse, model_request
from shaping.samples import TrainingSample, encode_json

SYSTEM = ("You evaluate training data for a language model. Judge only what the rubric asks, strictly and "
          "consistently; a perfect score is for an answer with nothing to improve. Answer with JSON only.")

#: the metadata key `min_judge_score` reads
DEFAULT_NAME = "judge"


def verdict_model(low: int, high: int) -> type[BaseModel]:
    return create_model(
        "Verdict",
        rationale=(str, Field(min_length=1, description="why this score, in one or two sentences")),
        score=(int, Field(ge=low, le=high, description=f"from {low} (worst) to {high} (best)")),
    )


def check_scale(scale: Any) -> tuple[int, int]:
    if (not isinstance(scale, (tuple, list)) or len(scale) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in scale) or scale[0] >= scale[1]):
        raise TaskContractError(f"judge: scale must be two whole numbers (low, high) with low < high, got {scale!r}")
    return scale[0], scale[1]


def _turn(message: dict[str, Any], include_reasoning: bool) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") if p.get("type") == "text" else "[image]" for p in content)
    parts = [f"{message.get('role', '?').upper()}: {content or ''}".rstrip()]
    if include_reasoning and message.get("reasoning_content"):
        parts.insert(1, f"(reasoning: {message['reasoning_content']})")
    for call in message.get("tool_calls") or ():
        function = call.get("function", {})
        parts.append(f"[calls {function.get('name')}({function.get('arguments', '')})]")
    return "\n".join(parts)


def judge_request(model: Any, sample: TrainingSample, rubric: str, scale: tuple[int, int] = (1, 5), *,
                  context: str | None = None, include_reasoning: bool = False, **params: Any) -> ModelRequest:
    """The request that asks `model` to score `sample` (see the module docstring)."""
    if not isinstance(sample, TrainingSample):
        raise TaskContractError(f"judge: expected a TrainingSample, got {type(sample).__name__}")
    if not isinstance(rubric, str) or not rubric.strip():
        raise TaskContractError("judge: rubric must be a non-empty string saying what a good sample is")
    low, high = check_scale(scale)
    messages = [m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else m for m in sample.messages]
    conversation = "\n\n".join(_turn(m, include_reasoning) for m in messages)
    if sample.tools:
        conversation = f"TOOLS OFFERED: {json.dumps([t.get('function', t).get('name') for t in sample.tools])}\n\n" + conversation
    prompt = (f"Rubric: {rubric.strip()}\n\n" + (f"{context.strip()}\n\n" if context else "")
              + f"Score the assistant's part of this conversation by the rubric, from {low} (worst) to "
              f"{high} (best):\n\n<conversation>\n{conversation}\n</conversation>\n\n"
              'Answer as {"rationale": "...", "score": N}.')
    return model_request([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
                         model=model, response_model=verdict_model(low, high), **params)


def apply_verdict(sample: TrainingSample, response: ModelResponse, scale: tuple[int, int],
                  name: str = DEFAULT_NAME) -> TrainingSample:
    """Put the judge's score and rationale into `sample.metadata[name]`; a failed judge fails
    the record (PipelineError with the failure's type)."""
    try:
        verdict = response.get_parsed()
    except PipelineError as exc:
        raise PipelineError(f"judge: {exc.message}", error_type=exc.error_type) from exc
    sample.metadata[name] = {"score": verdict.score, "rationale": verdict.rationale, "scale": list(scale)}
    return sample


def judge_all(model: Any, samples: list[TrainingSample], rubric: str, scale: tuple[int, int] = (1, 5), *,
              name: str = DEFAULT_NAME, context: str | list[str | None] | None = None,
              include_reasoning: bool = False, **params: Any) -> Generator[Any, Any, list[TrainingSample]]:
    """Judge several samples with one `yield` (their requests go out together); `context` may
    be one text for all or one per sample. Use as `samples = yield from judge_all(...)`."""
    scale = check_scale(scale)
    contexts = context if isinstance(context, list) else [context] * len(samples)
    if len(contexts) != len(samples):
        raise TaskContractError(f"judge: {len(contexts)} contexts for {len(samples)} samples")
    requests = [judge_request(model, s, rubric, scale, context=c, include_reasoning=include_reasoning, **params)
                for s, c in zip(samples, contexts)]
    responses = yield requests
    return [apply_verdict(s, r, scale, name) for s, r in zip(samples, responses)]


def judge(model: Any, sample: TrainingSample, rubric: str, scale: tuple[int, int] = (1, 5), *,
          name: str = DEFAULT_NAME, context: str | None = None, include_reasoning: bool = False,
          **params: Any) -> Generator[Any, Any, TrainingSample]:
    """Judge one sample: `sample = yield from judge(model, sample, rubric=...)`."""
    scale = check_scale(scale)
    response = yield judge_request(model, sample, rubric, scale, context=context,
                                   include_reasoning=include_reasoning, **params)
    return apply_verdict(sample, response, scale, name)


def min_score_of(pipeline: Any) -> int | float | None:
    """The pipeline's `quality = {"min_judge_score": N}`, checked; None when not set."""
    value = (getattr(pipeline, "quality", None) or {}).get("min_judge_score")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        from shaping.errors import PipelineDefinitionError

        raise PipelineDefinitionError(f"pipeline '{pipeline.name}': quality: min_judge_score must be a number, "
                                      f"got {value!r}")
    return value


def rejection(sample: TrainingSample, min_score: int | float | None) -> str | None:
    """Why `sample` stays out of the output under `min_judge_score`, or None."""
    if min_score is None:
        return None
    verdict = sample.metadata.get(DEFAULT_NAME)
    if not isinstance(verdict, dict) or not isinstance(verdict.get("score"), (int, float)):
        return None  # not judged: the threshold is for judged samples (validate counts the others)
    if verdict["score"] < min_score:
        return f"judge score {verdict['score']} is under min_judge_score {min_score}"
    return None


def rejected_line(sample: TrainingSample, reason: str, source: tuple[str, Any] | None = None) -> bytes:
    """A line of training/data/rejected/NAME.jsonl: the sample, why it was kept out, its verdict;
    `source`: `(record_id, record)` of the record that made it (run_task's samples)."""
    line = {"id": sample.id, "reason": reason, "judge": sample.metadata.get(DEFAULT_NAME),
            "messages": [m.model_dump(mode="json", exclude_none=True) for m in sample.messages]}
    if sample.tools is not None:
        line["tools"] = sample.tools
    if isinstance(variant := sample.metadata.get("variant"), str):  # prompt variants compare with it
        line["variant"] = variant
    if source is not None:
        record_id, record = source
        line["record_id"] = record_id
        if not (isinstance(record, dict) and record.get("id") is not None):  # known by its position:
            line["input_data"] = orjson.loads(encode_json(record))          # the record itself says which
    return orjson.dumps(line)
