"""reasoning-distillation: a reasoning model answers the coding mix, and its chain of thought is kept.

The prompts are coding-distillation's: pipelines/prompts/coding.toml, drawn with the same
`count`, `seed` and `existing_weight` (so by default the two datasets answer the same prompts,
one with reasoning and one without; change `seed` for other prompts). The teacher is the
`reasoner` model in shaping.toml: offline it is the mock with `reasoning = true`; point it at a
model that returns its reasoning (DeepSeek-R1 / deepseek-reasoner, Qwen3 or another thinking
model behind vLLM with `--reasoning-parser`, Claude with extended thinking) to run it for real.

Each sample is a user/assistant conversation whose assistant turn is the whole answer
(`answer.as_message()`): `content` is the answer and `reasoning_content` the chain of thought,
the field Qwen3/DeepSeek chat templates, vLLM and TRL read. `reasoning_format` chooses how the
reasoning is written:

    "field"   (default) {"role": "assistant", "content": ANSWER, "reasoning_content": REASONING}
    "inline"  {"role": "assistant", "content": "<think>\\nREASONING\\n</think>\\n\\nANSWER"},
              for chat templates that ignore `reasoning_content`

An answer that comes back with its reasoning inline in the text (`<think>...</think>`, or only
`...</think>` when the template opened the tag, as a server without a reasoning parser sends
it) is split into the two parts first. An answer with no reasoning at all is an error record
of type `no_reasoning`, never a sample without it: a model that does not return its chain of
thought (OpenAI's o-series on chat completions hide it) makes every record fail, which says
loudly that the `reasoner` is the wrong model. Cut-off, refused, filtered and empty answers
are error records of those types (`truncated`, ...), as everywhere.

Run it:   isf pipeline run reasoning-distillation --limit 3
          python pipelines/reasoning_distillation.py --limit 3 --no-annotate -o /tmp/reasoning.jsonl
"""

import re
from typing import Annotated, Literal

from pydantic import Field

from shaping.errors import ShapingError
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request
from shaping.prompts import PromptGenerator

#: short on purpose: a reasoning model needs no "think step by step" (DeepSeek advises putting
#: every instruction in the user turn: set `system = None` for R1)
REASONER_SYSTEM = """You are an expert programming teacher. Answer in clear markdown with complete, \
working code (never fragments with "..." in place of logic), cover the edge cases the code must \
handle, and tag every code block with its language."""

FORMATS = ("field", "inline")

#: reasoning left in the text: "<think>R</think>A", or "R</think>A" when the prompt opened the tag
INLINE_THINK = re.compile(r"^\s*(?:<think>)?(?P<reasoning>.*?)</think>(?P<answer>.*)$", re.DOTALL)


def split_inline_think(text: str) -> tuple[str, str] | None:
    """(reasoning, answer) of a text that carries its reasoning in `<think>` tags, else None."""
    match = INLINE_THINK.match(text)
    if match is None:
        return None
    return match["reasoning"].strip(), match["answer"].strip()


def inline(reasoning: str, answer: str) -> str:
    """The reasoning and the answer in one content string, the way Qwen3/DeepSeek-R1 write them."""
    return f"<think>\n{reasoning.strip()}\n</think>\n\n{answer.strip()}"


class ReasoningDistillation(Pipeline):
    name = "reasoning-distillation"
    prompts = Pipeline.file_dep("pipelines/prompts")  # the generator file, templates and curated prompts
    reasoner = Pipeline.model_dep("reasoner")
    reasoning_format: Literal["field", "inline"] = "field"  # "field": reasoning_content; "inline": <think>
    system: str | None = REASONER_SYSTEM  # sent to the teacher, not kept in the sample; None sends none
    count: Annotated[int, Field(ge=1)] = 200  # prompts drawn per run (coding-distillation's mix and defaults)
    seed = 7
    existing_weight: Annotated[float, Field(ge=0, le=1)] = 0.5  # share of curated prompts

    def run(self):
        if self.reasoning_format not in FORMATS:
            raise ShapingError(f"pipeline '{self.name}': reasoning_format must be one of "
                               f"{', '.join(map(repr, FORMATS))}, got {self.reasoning_format!r}")
        generator = PromptGenerator.from_file(self.prompts.path / "coding.toml")
        records = generator.sample(self.count, existing_weight=self.existing_weight, seed=self.seed)
        return self.run_task(self.distill, records=[r.model_dump() for r in records])

    def distill(self, record):
        messages = [{"role": "user", "content": record["prompt"]}]
        if self.system:
            messages.insert(0, {"role": "system", "content": self.system})
        answer = yield model_request(messages, model=self.reasoner)
        turn = answer.as_message()  # raises for refused, filtered, cut-off and empty answers
        reasoning = (turn.get("reasoning_content") or "").strip()
        if not reasoning and (split := split_inline_think(turn["content"])) is not None:
            reasoning, turn["content"] = split
        if not reasoning:
            raise PipelineError(f"{answer.model or 'the reasoner'} answered without reasoning (is the "
                                f"'reasoner' model one that returns its chain of thought?)",
                                error_type="no_reasoning")
        if not turn["content"].strip():
            raise PipelineError("the answer is all reasoning and no answer", error_type="empty")
        if self.reasoning_format == "inline":
            turn = {"role": "assistant", "content": inline(reasoning, turn["content"])}
        else:
            turn["reasoning_content"] = reasoning
        return TrainingSample(
            id=record["id"],
            messages=[{"role": "user", "content": record["prompt"]}, turn],
            metadata={**{k: record[k] for k in ("category", "language", "source")},
                      "reasoning_format": self.reasoning_format,
                      "reasoning_tokens": answer.usage.reasoning_tokens},
        )


if __name__ == "__main__":
    ReasoningDistillation().execute()
