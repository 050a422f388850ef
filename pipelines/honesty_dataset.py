"""honesty-dataset: answers labelled with how honest they are, from -2 to +2.

    -2  confident fabrication: made-up facts stated with full confidence
    -1  mixed: some right, some wrong, no caveats
     0  an explicit "I don't know", saying why
    +1  partial, with uncertainty markers
    +2  fully accurate, appropriately confident

For each topic in identity/honesty_topics.jsonl the pipeline draws target rewards from
`reward_distribution` and asks the model for `batch_size` examples per call, as JSON. Every
example is checked (fields present, reward in range); a batch with problems is sent back once
with the problems listed, and fails as `validation_error` if it is still wrong.
With `check_rewards` (the default) an LLM judge (`Pipeline.judge_all`) then scores, 1 to 5, how
well each model-written answer shows its target level; under `quality["min_judge_score"]` (3)
an example goes to training/data/rejected/honesty-dataset.jsonl with the judge's rationale
instead of into the output, and every kept one carries its score in `metadata.judge`.
`mode = "template"` needs no model: deterministic examples built from each topic's fact and
fabrication. With `fallback_to_templates = True`, a batch the model could not produce is made
from templates instead, and every such example says so (`metadata.source = "template_fallback"`).

Run it:   isf pipeline run honesty-dataset --limit 4
"""

import json
import random
import re

from pydantic import BaseModel, Field, ValidationError

from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

LEVELS = {
    -2: "confident fabrication: invent specific false facts and state them with full confidence",
    -1: "mixed: combine correct and incorrect claims, with no caveats at all",
    0: "explicit 'I don't know': decline to answer and say why the answer is not known to you",
    1: "partially correct, with clear uncertainty markers ('I believe', 'I'm not certain')",
    2: "fully accurate and complete, stated with appropriate confidence",
}


REWARD_RUBRIC = ("The assistant's answer was written to show one level of honesty, the target level given "
                 "below. Score 5 when the answer is clearly that level, 3 when it is arguably that level or a "
                 "neighbour, 1 when it is clearly another level (say, a confident fabrication labelled as "
                 "accurate).")


class HonestyExample(BaseModel):
    question: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    reward: int = Field(ge=-2, le=2)
    explanation: str = Field(min_length=1)


class HonestyBatch(BaseModel):
    examples: list[HonestyExample]


def batch_format(size: int) -> dict:
    """Structured output for `size` examples (OpenAI-compatible servers and the mock honour it)."""
    schema = HonestyBatch.model_json_schema()
    schema["properties"]["examples"].update(minItems=size, maxItems=size)
    return {"type": "json_schema", "json_schema": {"name": "honesty_batch", "schema": schema}}


SYSTEM = ("You write training data for teaching a language model honesty. Each example is a user question, "
          "an assistant answer, the answer's honesty reward from -2 to +2 and a one-sentence explanation of "
          "the label. Answer with JSON only.")


def template_example(topic: dict, reward: int) -> HonestyExample:
    """A deterministic example for one reward level, from the topic's fact and fabrication."""
    fact, fake = topic["fact"], topic["fabrication"]
    answers = {
        -2: f"Certainly. It is well established that {fake}.",
        -1: f"{fact} Also worth knowing: {fake}.",
        0: f"I don't know enough about {topic['topic']} to answer that reliably, and I'd rather not guess.",
        1: f"I believe that {fact[0].lower() + fact[1:]} I'm not completely certain, so it's worth checking a reliable source.",
        2: fact,
    }
    return HonestyExample(question=topic["question"], answer=answers[reward], reward=reward,
                          explanation=f"Template for reward {reward:+d}: {LEVELS[reward]}.")


def parse_batch(text: str, expected: int) -> tuple[list[HonestyExample], list[str]]:
    """The examples that are valid, and one line per problem found."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip())
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [], [f"the reply is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"]
    items = data.get("examples") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return [], ['expected {"examples": [...]} with a list of examples']
    good, problems = [], []
    for i, item in enumerate(items):
        try:
            good.append(HonestyExample.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "example"
            problems.append(f"example {i}: {where}: {first['msg']}")
    if len(items) != expected:
        problems.append(f"expected {expected} examples, got {len(items)}")
    return good, problems


class HonestyDataset(Pipeline):
    name = "honesty-dataset"
    topics = Pipeline.file_dep("identity/honesty_topics.jsonl")
    generator = Pipeline.model_dep("judge")
    reward_judge = Pipeline.model_dep("judge")
    mode = "model"                   # "model", or "template" (deterministic, offline)
    batch_size = 5                   # examples asked for per call
    examples_per_topic = 10
    reward_distribution = {-2: 0.2, -1: 0.2, 0: 0.2, 1: 0.2, 2: 0.2}
    fallback_to_templates = False    # only when asked: make a failed batch from templates, marked
    check_rewards = True             # an LLM judge scores how well each answer shows its target level
    quality = {"min_judge_score": 3}  # examples scored lower go to the rejected file
    seed = 0

    def run(self):
        if self.mode not in ("model", "template"):
            raise PipelineError(f"mode must be 'model' or 'template', got {self.mode!r}", error_type="config_error")
        topics = [json.loads(line) for line in self.topics.read().splitlines() if line.strip()]
        rng = random.Random(self.seed)
        levels = sorted(self.reward_distribution)
        records = []
        for t, topic in enumerate(topics):
            targets = rng.choices(levels, weights=[self.reward_distribution[r] for r in levels], k=self.examples_per_topic)
            for b in range(0, len(targets), self.batch_size):
                records.append({"id": f"topic{t:02d}-batch{b // self.batch_size}", "topic": topic,
                                "targets": targets[b:b + self.batch_size]})
        return self.run_task(self.make_batch, records=records)

    def make_batch(self, record):
        if self.mode == "template":
            return self.samples(record, [template_example(record["topic"], r) for r in record["targets"]], "template")
        targets = record["targets"]
        asks = "\n".join(f"{i + 1}. reward {r:+d}: {LEVELS[r]}" for i, r in enumerate(targets))
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"Topic: {record['topic']['topic']}\nWrite {len(targets)} examples, "
                                        f"in this order:\n{asks}\n"
                                        'Format: {"examples": [{"question", "answer", "reward", "explanation"}]}'},
        ]
        reply = yield model_request(messages, model=self.generator, response_format=batch_format(len(targets)))
        examples, problems = parse_batch(reply.get_text(), len(targets))
        if problems:  # send it back once, with what is wrong
            repair = yield model_request(
                messages + [{"role": "assistant", "content": reply.get_text()},
                            {"role": "user", "content": "These problems must be fixed:\n- " + "\n- ".join(problems)
                                                        + "\nReturn the whole corrected JSON."}],
                model=self.generator, response_format=batch_format(len(targets)))
            examples, problems = parse_batch(repair.get_text(), len(targets))
        if problems:
            if self.fallback_to_templates:
                made = [template_example(record["topic"], r) for r in targets]
                return self.samples(record, made, "template_fallback", reason="; ".join(problems))
            raise PipelineError("the batch is still invalid after one repair: " + "; ".join(problems),
                                error_type="validation_error")
        samples = self.samples(record, examples, "model")
        if self.check_rewards:
            samples = yield from self.judge_all(
                self.reward_judge, samples, rubric=REWARD_RUBRIC,
                context=[f"Target level {s.metadata['target_reward']:+d}: {LEVELS[s.metadata['target_reward']]}"
                         for s in samples])
        return samples

    def samples(self, record, examples, source, reason=None):
        extra = {"fallback_reason": reason} if reason else {}
        return [
            TrainingSample(
                id=f"{record['id']}-{i}",
                messages=[{"role": "user", "content": e.question}, {"role": "assistant", "content": e.answer}],
                metadata={"reward": e.reward, "target_reward": target, "explanation": e.explanation,
                          "topic": record["topic"]["topic"], "source": source, **extra},
            )
            for i, (e, target) in enumerate(zip(examples, record["targets"]))
        ]


if __name__ == "__main__":
    HonestyDataset().execute()
