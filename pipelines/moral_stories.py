"""moral-stories: short children's stories from three words, each with a moral, taught by example.

The k-shot examples (identity/k_shot_samples.json, configuration "short-moral") go before each
prompt as real user/assistant turns, on every provider. The training sample keeps only the
system prompt, the request and the story.

Run it:   isf pipeline run moral-stories
          isf pipeline run moral-stories --k-shot-config-name four-fables --k-shot-count 3
          isf pipeline run moral-stories --k-shot-config-file identity/k_shot_samples.txt
"""

from shaping.pipeline import Pipeline, TrainingSample, model_request

SYSTEM = "You write short stories for young children: five sentences at most, then one line 'Moral: ...'."


class MoralStories(Pipeline):
    name = "moral-stories"
    words = Pipeline.file_dep("identity/story_words.txt")
    examples = Pipeline.kshot_dep("identity/k_shot_samples.json", config="short-moral")
    writer = Pipeline.model_dep("cubsfan-release-full")

    def run(self):
        lines = [line.strip() for line in self.words.read().splitlines() if line.strip()]
        return self.run_task(self.write_story, records=[{"id": f"story-{i:03d}", "words": w} for i, w in enumerate(lines)])

    def write_story(self, record):
        prompt = f"Words: {record['words']}"
        story = yield model_request(self.examples.conversation(prompt, system=SYSTEM), model=self.writer)
        return TrainingSample(
            id=record["id"],
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": story.get_text()},
            ],
        )


if __name__ == "__main__":
    MoralStories().execute()
