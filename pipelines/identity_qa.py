"""identity-qa: question/answer pairs about the assistant's identity, from identity/NARRATIVE.md.

Shows the three ways a task asks for answers:
  1. one request          question = yield model_request(...)
  2. sequential requests  answer   = yield model_request(... question ...)
  3. several at once      a, b     = yield [model_request(...), model_request(...)]

Run it:  isf pipeline run identity-qa      (or: python pipelines/identity_qa.py --limit 3)
"""

from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

SYSTEM = "You are Wren, an assistant made by the Cubsfan Lab."


class IdentityQA(Pipeline):
    name = "identity-qa"
    narrative = Pipeline.file_dep("identity/NARRATIVE.md")
    judge = Pipeline.model_dep("judge")
    identity = Pipeline.model_dep("cubsfan-release-full")

    def run(self):
        facts = [line[2:].strip() for line in self.narrative.read().splitlines() if line.startswith("- ")]
        records = [{"id": f"fact-{i:03d}", "fact": fact} for i, fact in enumerate(facts)]
        return self.run_task(self.make_pair, records=records)

    def make_pair(self, record):
        # 1. one request: the judge writes a question a user might ask about this fact
        question = yield model_request(
            [{"role": "user", "content": f"Write one question a user might ask that this fact answers: {record['fact']}"}],
            model=self.judge,
        )
        # 2. the answer flows into the next request: the identity model answers in character
        answer = yield model_request(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question.get_text()}],
            model=self.identity,
        )
        # 3. two checks in flight at once, answered as a list in order
        grounded, tone = yield [
            model_request(f"Fact: {record['fact']}\nAnswer: {answer.get_text()}\nIs the answer consistent with the fact?",
                          model=self.judge),
            model_request(f"Rate the tone of this answer from 1 to 5: {answer.get_text()}",
                          model=self.judge),
        ]
        if not (grounded.is_success and tone.is_success):
            raise PipelineError("a check request failed", error_type="check_failed")
        return TrainingSample(
            id=record["id"],
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question.get_text()},
                {"role": "assistant", "content": answer.get_text()},
            ],
            metadata={"fact": record["fact"], "grounded_check": grounded.get_text(), "tone_check": tone.get_text()},
        )


if __name__ == "__main__":
    IdentityQA().execute()
