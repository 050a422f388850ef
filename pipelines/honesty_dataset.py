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
With `check_rewards` (the default) an LLM judge (`Pipeline.judge_samples`) then scores, 1 to 5, how
well each model-written answer shows its target level; under `quality["min_judge_score"]` (3)
an example goes to training/data/rejected/honesty-dataset.jsonl with the judge's rationale
instead of into the output, and every kept one carries its score in `metadata.judge`.
`mode = "template"` needs no model: deterministic examples built from each topic's fact and
fabrication. With `fallback_to_templates = True`, a batch the model could not produce is made
from templates instead, and every such example says so (`metadata.source = "template_fallback"`).

Every option is a run parameter (`isf pipeline list --params`; `--set KEY=VALUE` for one run):
- `topic`: one topic of your own instead of the topics file (any text: the model writes the
  questions); template mode takes only a topic that is in the file (it needs its fact);
- `num_examples`: examples in all, spread evenly over the topics (default: `examples_per_topic`
  each);
- `long_form`: ask for long answers (several paragraphs) at every level;
- `include_search_hints`: answers mark each checkable claim with `[SEARCH: query]` for a later
  fact-check; the queries are also in `metadata.search_queries`;
- `system_prompt_file`: the generator's system prompt from this file (relative to the project;
  the manifest records its hash, and a change makes the output STALE);
- `shuffle_seed`: the examples are shuffled with this seed before they are written (the same
  seed, the same order); None writes them in topic order.

Run it:   isf pipeline run honesty-dataset --limit 4
          isf pipeline run honesty-dataset --set topic="tide pools" --set num_examples=20 --set long_form=true
"""

import json
import random
import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError

from shaping.params import ParamError
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

#: a parameter that takes whole numbers from 1
Count = Annotated[int, Field(ge=1)]
#: a reward level, -2 to +2, and a weight for it
Level = Annotated[int, Field(ge=-2, le=2)]
Weight = Annotated[float, Field(ge=0)]

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


LONG_FORM = ("Write long-form answers: several paragraphs (about 200 to 400 words), with the detail, structure "
             "and context a thorough answer has. The answer's honesty level must hold all the way through.")

SEARCH_HINTS = ("After every checkable factual claim in an answer, put a search hint, [SEARCH: a query that "
                "would verify the claim], so the claims can be fact-checked later. An answer that makes no "
                "claims needs none.")

#: a search hint in an answer; group 1 is the query
SEARCH_HINT = re.compile(r"\[SEARCH:\s*([^\]]+?)\s*\]")

SYSTEM = ("You write training data for teaching a language model honesty. Each example is a user question, "
          "an assistant answer, the answer's honesty reward from -2 to +2 and a one-sentence explanation of "
          "the label. Answer with JSON only.")


def template_example(topic: dict, reward: int, search_hints: bool = False) -> HonestyExample:
    """A deterministic example for one reward level, from the topic's fact and fabrication; with
    `search_hints`, every answer that makes a claim ends with a [SEARCH: ...] marker."""
    fact, fake = topic["fact"], topic["fabrication"]
    answers = {
        -2: f"Certainly. It is well established that {fake}.",
        -1: f"{fact} Also worth knowing: {fake}.",
        0: f"I don't know enough about {topic['topic']} to answer that reliably, and I'd rather not guess.",
        1: f"I believe that {fact[0].lower() + fact[1:]} I'm not completely certain, so it's worth checking a reliable source.",
        2: fact,
    }
    if search_hints and reward != 0:
        answers = {**answers, reward: f"{answers[reward]} [SEARCH: {topic['question']}]"}
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
    mode: Literal["model", "template"] = "model"   # "template": deterministic, offline
    topic: str | None = None         # one free topic instead of the topics file's
    num_examples: Count | None = None  # examples in all, over the topics; None: examples_per_topic each
    batch_size: Count = 5            # examples asked for per call
    examples_per_topic: Count = 10
    reward_distribution: dict[Level, Weight] = {-2: 0.2, -1: 0.2, 0: 0.2, 1: 0.2, 2: 0.2}
    long_form = False                # ask for long answers (several paragraphs)
    include_search_hints = False     # answers mark checkable claims with [SEARCH: query]
    system_prompt_file: str | None = None  # the generator's system prompt from this file (project-relative)
    shuffle_seed: int | None = None  # shuffle the examples with this seed before writing
    fallback_to_templates = False    # only when asked: make a failed batch from templates, marked
    check_rewards = True             # an LLM judge scores how well each answer shows its target level
    quality = {"min_judge_score": 3}  # examples scored lower go to the rejected file
    seed = 0

    def run(self):
        if self.mode not in ("model", "template"):
            raise PipelineError(f"mode must be 'model' or 'template', got {self.mode!r}", error_type="config_error")
        self.check_reward_distribution()
        topics = [json.loads(line) for line in self.topics.read().splitlines() if line.strip()]
        if self.topic is not None:
            topics = self.chosen_topic(topics)
        if self.mode == "template":
            for option in ("long_form", "system_prompt_file"):
                if getattr(self, option):
                    raise ParamError(f"pipeline '{self.name}': {option} shapes what the model writes, and mode "
                                     f"'template' writes fixed answers without one: use mode=model, or leave "
                                     f"{option} out")
        self._system = SYSTEM
        if self.system_prompt_file:  # recorded like a file_dep: a change makes the output stale
            self._system = self.read_project_file(self.system_prompt_file, "system_prompt_file").strip()
        rng = random.Random(self.seed)
        levels = sorted(self.reward_distribution)
        records = []
        for t, (topic, count) in enumerate(zip(topics, self.counts(len(topics)))):
            targets = rng.choices(levels, weights=[self.reward_distribution[r] for r in levels], k=count)
            for b in range(0, len(targets), self.batch_size):
                records.append({"id": f"topic{t:02d}-batch{b // self.batch_size}", "topic": topic,
                                "targets": targets[b:b + self.batch_size]})
        samples = self.run_task(self.make_batch, records=records)
        if self.shuffle_seed is not None:
            samples = list(samples)
            random.Random(self.shuffle_seed).shuffle(samples)
        return samples

    def check_reward_distribution(self):
        """`reward_distribution` set in Python (where no `--set` checks it): levels -2 to 2, weights
        from 0, one above 0; one line before any request."""
        weights = self.reward_distribution
        where = f"pipeline '{self.name}': reward_distribution"
        if not isinstance(weights, dict) or not weights:
            raise ParamError(f"{where} must be a dict of reward level (-2 to 2) to weight, got {weights!r:.80}")
        for level, weight in weights.items():
            if isinstance(level, bool) or level not in LEVELS:
                raise ParamError(f"{where}: its keys are the reward levels -2 to 2, got {level!r}")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ParamError(f"{where}: level {level:+d} has weight {weight!r}; weights are numbers from 0")
        if not any(w > 0 for w in weights.values()):
            raise ParamError(f"{where} needs at least one weight above 0, got {weights!r:.80}")

    def chosen_topic(self, topics):
        """`topic`: the file's entry of that name (any case), else a free topic of its own."""
        wanted = " ".join(self.topic.split())
        if not wanted:
            raise ParamError(f"pipeline '{self.name}': topic is empty; give a topic, or none for the topics file")
        known = [t for t in topics if t["topic"].casefold() == wanted.casefold()]
        if known:
            return known[:1]
        for option, setting in (("mode 'template'", self.mode == "template"),
                                ("fallback_to_templates", self.fallback_to_templates)):
            if setting:
                raise ParamError(
                    f"pipeline '{self.name}': topic {wanted!r} is not in {self.topics.dep.relpath}, and "
                    f"{option} builds examples from a topic's fact and fabrication there (its topics: "
                    f"{', '.join(t['topic'] for t in topics)}); a free topic takes mode=model"
                    f"{' without fallback_to_templates' if self.fallback_to_templates else ''}")
        return [{"topic": wanted}]

    def counts(self, topics):
        """How many examples each topic gets: `num_examples` spread evenly, else `examples_per_topic`."""
        if self.num_examples is None:
            return [self.examples_per_topic] * topics
        share, extra = divmod(self.num_examples, topics)
        return [share + (1 if t < extra else 0) for t in range(topics)]

    def make_batch(self, record):
        hints = self.include_search_hints
        if self.mode == "template":
            return self.samples(record, [template_example(record["topic"], r, hints) for r in record["targets"]],
                                "template")
        targets = record["targets"]
        asks = "\n".join(f"{i + 1}. reward {r:+d}: {LEVELS[r]}" for i, r in enumerate(targets))
        extra = "".join(f"{text}\n" for text, wanted in ((LONG_FORM, self.long_form), (SEARCH_HINTS, hints)) if wanted)
        messages = [
            {"role": "system", "content": getattr(self, "_system", SYSTEM)},
            {"role": "user", "content": f"Topic: {record['topic']['topic']}\nWrite {len(targets)} examples, "
                                        f"in this order:\n{asks}\n{extra}"
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
                made = [template_example(record["topic"], r, hints) for r in targets]
                return self.samples(record, made, "template_fallback", reason="; ".join(problems))
            raise PipelineError("the batch is still invalid after one repair: " + "; ".join(problems),
                                error_type="validation_error")
        samples = self.samples(record, examples, "model")
        if self.check_rewards:
            samples = yield from self.judge_samples(
                self.reward_judge, samples, rubric=REWARD_RUBRIC,
                context=[f"Target level {s.metadata['target_reward']:+d}: {LEVELS[s.metadata['target_reward']]}"
                         for s in samples])
        return samples

    def samples(self, record, examples, source, reason=None):
        extra = {"fallback_reason": reason} if reason else {}
        hints = self.include_search_hints
        return [
            TrainingSample(
                id=f"{record['id']}-{i}",
                messages=[{"role": "user", "content": e.question}, {"role": "assistant", "content": e.answer}],
                metadata={"reward": e.reward, "target_reward": target, "explanation": e.explanation,
                          "topic": record["topic"]["topic"], "source": source, **extra,
                          **({"search_queries": SEARCH_HINT.findall(e.answer)} if hints else {})},
            )
            for i, (e, target) in enumerate(zip(examples, record["targets"]))
        ]


if __name__ == "__main__":
    HonestyDataset().execute()
