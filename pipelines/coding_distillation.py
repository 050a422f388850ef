"""coding-distillation: a teacher model answers a weighted mix of coding prompts.

The prompts come from pipelines/prompts/coding.toml: 36 template categories in 9 areas (code
generation 25%, debugging 20%, tool usage 15%, testing 10%, multi-step 10%, documentation,
optimisation, real-world and explanation 5% each) over 7 languages, with curated prompts
mixed into their categories. Preview the mix, each share beside its target:
`isf prompts preview pipelines/prompts/coding.toml --count 10000`. Each answer becomes a
user/assistant training conversation; the teacher's system prompt shapes the answers but is
not part of the sample.

Run it:   isf pipeline run coding-distillation --limit 20
"""

from typing import Annotated

from pydantic import Field

from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request
from shaping.prompts import PromptGenerator

TEACHER_SYSTEM = """You are an expert programming teacher. For every question:
- answer in clear markdown, with short sections;
- give complete, working code, never fragments with "..." in place of logic;
- reason step by step before the final solution, and say why it is correct;
- cover edge cases and errors the code must handle;
- tag every code block with its language (```python, ```typescript, ...);
- when the task uses tools (a command, a file, an HTTP API, a function call), show each tool call as JSON
  (```json with "name" and "arguments") with a clear one-line description of what it does and why;
- when debugging, name the root cause first (what is wrong and why it fails), then give the fix and how
  to check that it works;
- for multi-step tasks (a project, a refactoring, a migration), describe the approach and the steps before
  the implementation, then implement them in order."""


class CodingDistillation(Pipeline):
    name = "coding-distillation"
    prompts = Pipeline.file_dep("pipelines/prompts")  # the generator file, templates and curated prompts
    teacher = Pipeline.model_dep("teacher")
    count: Annotated[int, Field(ge=1)] = 200  # prompts drawn per run (any number: repeats get ids of their own)
    seed = 7
    existing_weight: Annotated[float, Field(ge=0, le=1)] = 0.5  # chance of a curated prompt when the drawn
                                                               # category has unused ones

    def run(self):
        generator = PromptGenerator.from_file(self.prompts.path / "coding.toml")
        records = generator.sample(self.count, existing_weight=self.existing_weight, seed=self.seed)
        return self.run_task(self.distill, records=[r.model_dump() for r in records])

    def distill(self, record):
        answer = yield model_request(
            [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": record["prompt"]}],
            model=self.teacher,
        )
        if answer.finish_reason == "length":
            raise PipelineError("the answer was cut off at max_tokens", error_type="truncated")
        return TrainingSample(
            id=record["id"],
            messages=[{"role": "user", "content": record["prompt"]},
                      {"role": "assistant", "content": answer.get_text()}],
            metadata={k: record[k] for k in ("category", "area", "language", "source")},
        )


if __name__ == "__main__":
    CodingDistillation().execute()
