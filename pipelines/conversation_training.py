"""conversation-training: the identity model answers the opening prompts of real conversations.

Prompts come from a local JSONL of conversations in the shapes public chat data sets use
(OpenAI `messages`, LMSYS `conversation`, ShareGPT `conversations`, or a bare `prompt`); the
first user turn of each is the prompt. Nothing is downloaded: point `conversations` at your own
export. A conversation without a user turn becomes an error record, not a silent gap.

Run it:   isf pipeline run conversation-training
"""

from shaping.datasets import load_conversations
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

SYSTEM = "You are Wren, an assistant made by the Cubsfan Lab."


class ConversationTraining(Pipeline):
    name = "conversation-training"
    conversations = Pipeline.file_dep("identity/conversations_sample.jsonl")
    identity_model = Pipeline.model_dep("cubsfan-release-full")

    def run(self):
        records = [r.model_dump() for r in load_conversations(self.conversations.path)]
        return self.run_task(self.answer, records=records)

    def answer(self, record):
        if record["prompt"] is None:
            raise PipelineError(f"line {record['source_line']} has no user turn to take as the prompt",
                                error_type="no_user_turn")
        reply = yield model_request(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": record["prompt"]}],
            model=self.identity_model,
        )
        return TrainingSample(
            id=record["id"],
            messages=[{"role": "user", "content": record["prompt"]},
                      {"role": "assistant", "content": reply.get_text()}],
        )


if __name__ == "__main__":
    ConversationTraining().execute()
