"""wildchat-training: the identity model answers the opening prompts of real WildChat conversations.

Reads allenai/WildChat-1M (about a million ChatGPT conversations, one row each: conversation_hash,
conversation [{role, content, ...}], turn, language, toxic, redacted, ...) through the `datasets`
library (`pip install 'shaping[hf]'`), streamed: memory stays flat, and `--limit N` reads only as
far as the first N prompts that pass the filters. The first user turn of each conversation kept
is the prompt; the sample's id is the conversation's hash.

Filters are class options; change them in a subclass (or on an instance from Python):
    language = "English"        WildChat's `language` column (any case); None keeps every language
    min_turns = 1, max_turns = None   the conversation's `turn` count
    exclude_toxic = True        drop conversations WildChat flags `toxic`
    exclude_redacted = True     drop conversations with personal data redacted
    dedupe_prompts = True       keep only the first conversation with a given (exact) prompt
A conversation whose first user turn is empty is skipped. Repeated conversations (the same hash)
are always skipped: one id is one sample.

The revision read (the hub commit) is in the manifest; a new one makes the output STALE. To read a
local copy instead of the hub, for this pipeline and status alike, add to shaping.toml:
    [datasets]
    "allenai/WildChat-1M" = "data/wildchat"      # a folder of its parquet files, or a save_to_disk folder
Offline (HF_HUB_OFFLINE=1) it reads the local hub cache (`hf download allenai/WildChat-1M --repo-type dataset`).

Run it:   isf pipeline run wildchat-training --limit 1000
"""

import hashlib

from shaping.datasets import first_user_turn
from shaping.pipeline import Pipeline, TrainingSample, model_request

SYSTEM = "You are Wren, an assistant made by the Cubsfan Lab."
COLUMNS = ["conversation_hash", "conversation", "turn", "language", "toxic", "redacted"]


class WildchatTraining(Pipeline):
    name = "wildchat-training"
    conversations = Pipeline.dataset_dep("allenai/WildChat-1M", split="train", columns=COLUMNS)
    identity_model = Pipeline.model_dep("cubsfan-release-full")

    language: str | None = "English"
    min_turns = 1
    max_turns: int | None = None
    exclude_toxic = True
    exclude_redacted = True
    dedupe_prompts = True

    def run(self):
        return self.run_task(self.answer, records=self.prompts())

    def prompts(self):
        """The records kept, as they are read: {id, prompt, language, turns}."""
        seen = set()  # 16-byte digests of ids (and prompts): about 80 bytes each
        language = self.language.casefold() if self.language else None
        for row in self.conversations:
            if language is not None and (row["language"] or "").casefold() != language:
                continue
            turns = row["turn"] or 0
            if turns < self.min_turns or (self.max_turns is not None and turns > self.max_turns):
                continue
            if (self.exclude_toxic and row["toxic"]) or (self.exclude_redacted and row["redacted"]):
                continue
            prompt = first_user_turn({"conversation": row["conversation"]})
            if prompt is None:
                continue
            keys = [f"id\0{row['conversation_hash']}"] + ([f"prompt\0{prompt}"] if self.dedupe_prompts else [])
            digests = [hashlib.blake2b(key.encode(), digest_size=16).digest() for key in keys]
            if any(digest in seen for digest in digests):  # a repeated conversation, or prompt
                continue
            seen.update(digests)
            yield {"id": row["conversation_hash"], "prompt": prompt, "language": row["language"], "turns": turns}

    def answer(self, record):
        reply = yield model_request(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": record["prompt"]}],
            model=self.identity_model,
        )
        return TrainingSample(
            id=record["id"],
            messages=[{"role": "user", "content": record["prompt"]},
                      {"role": "assistant", "content": reply.get_text()}],
            metadata={"language": record["language"], "turns": record["turns"]},
        )


if __name__ == "__main__":
    WildchatTraining().execute()
