"""identity-augmentation: facts from identity/NARRATIVE.md, then a question and an answer each.

One blocking `query()` asks the judge to extract the facts (as JSON); then, per fact, the judge
writes a question a user might ask and the identity model answers it in character.

Run it:   isf pipeline run identity-augmentation
"""

from pydantic import BaseModel, Field, ValidationError

from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

SYSTEM = "You are Wren, an assistant made by the Cubsfan Lab."


class Facts(BaseModel):
    facts: list[str] = Field(min_length=5, max_length=40)


FACTS_FORMAT = {"type": "json_schema", "json_schema": {"name": "facts", "schema": Facts.model_json_schema()}}


class IdentityAugmentation(Pipeline):
    name = "identity-augmentation"
    narrative_doc = Pipeline.file_dep("identity/NARRATIVE.md")
    identity_model = Pipeline.model_dep("cubsfan-release-full")
    judge_model = Pipeline.model_dep("judge")

    def run(self):
        response = self.query(model=self.judge_model, response_format=FACTS_FORMAT, messages=[
            {"role": "system", "content": "Extract every distinct fact about the assistant from the document. "
                                          'Answer with JSON: {"facts": ["...", ...]}, one sentence per fact.'},
            {"role": "user", "content": self.narrative_doc.read()},
        ])
        try:
            facts = Facts.model_validate_json(response.get_text()).facts
        except ValidationError as exc:
            raise PipelineError(f"the judge's facts are not the JSON asked for: {exc.errors()[0]['msg']}",
                                error_type="parse_error") from None
        records = [{"id": f"fact-{i:03d}", "fact": fact} for i, fact in enumerate(dict.fromkeys(facts))]
        return self.run_task(self.generate_qa, records=records)

    def generate_qa(self, record):
        question = yield model_request(
            [{"role": "user", "content": f"Write one question a curious user might ask an assistant, "
                                         f"whose answer is this fact about it: {record['fact']}"}],
            model=self.judge_model, max_tokens=100,
        )
        answer = yield model_request(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question.get_text()}],
            model=self.identity_model,
        )
        return TrainingSample(
            id=record["id"],
            messages=[{"role": "user", "content": question.get_text()},
                      {"role": "assistant", "content": answer.get_text()}],
            metadata={"fact": record["fact"]},
        )


if __name__ == "__main__":
    IdentityAugmentation().execute()
