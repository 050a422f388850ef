"""Feedback store and retrieval: what worked comes back as examples; ranking by BM25."""

from pathlib import Path

from shaping import run_pipeline
from shaping.config import Project
from shaping.feedback import FeedbackStore
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request
from shaping.retrieval import DocumentIndex, Ranker
from tests.conftest import read_jsonl, write_project

REPO = Path(__file__).resolve().parents[1]


def test_the_obviously_similar_example_ranks_first(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.record("p", "How do I reverse a linked list in Python?", "Use three pointers...", ok=True)
    store.record("p", "Explain the French revolution briefly", "In 1789...", ok=True)
    store.record("p", "Write a haiku about the sea", "Waves fold...", ok=True)
    store.record("p", "Reverse a linked list recursively in Python", None, ok=False, error="timeout", error_type="timeout")
    best = store.similar("p", "reverse a singly linked list in python", k=2)
    assert best[0].prompt == "How do I reverse a linked list in Python?" and best[0].output == "Use three pointers..."
    assert all(e.prompt != "Reverse a linked list recursively in Python" for e in best)  # failures never come back
    assert store.similar("other", "reverse a linked list") == []


def test_failures_group_by_type(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    for kind in ("timeout", "validation_error", "validation_error"):
        store.record("p", "x", None, ok=False, error=f"{kind} happened", error_type=kind)
    assert store.failures_by_type("p") == {"validation_error": 2, "timeout": 1}
    assert store.failures("p", "timeout") == [{"prompt": "x", "error": "timeout happened"}]


def test_ranker_handles_empty_and_unmatched_queries():
    ranker = Ranker(["alpha beta", "gamma delta", "alpha gamma"])
    assert [i for i, _ in ranker.top("alpha beta", 2)] == [0, 2]
    assert ranker.top("zeta", 3) == [] and ranker.top("", 3) == [] and Ranker([]).top("alpha") == []


def test_document_retrieval_over_the_identity_folder():
    index = DocumentIndex.from_folder(REPO / "identity")
    top = index.search("who made the assistant, which lab, which city", k=2)
    assert top[0].source == "NARRATIVE.md" and "Cubsfan Lab" in top[0].text
    assert "[NARRATIVE.md]" in index.context("Cubsfan Lab Chicago", k=1)


class Learner(Pipeline):
    name = "learner"
    writer = Pipeline.model_dep("writer")
    feedback = Pipeline.feedback(examples=2)
    topics = ["sorting a list in python", "sorting a dictionary by value in python", "baking sourdough bread", "FAIL me"]

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i), "topic": t} for i, t in enumerate(self.topics)])

    def task(self, record):
        if record["topic"].startswith("FAIL"):
            raise PipelineError("no", error_type="refused")
        prompt = f"Explain {record['topic']}"
        answer = yield model_request(self.feedback.conversation(prompt, system="Be brief."), model=self.writer)
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": prompt},
                                                         {"role": "assistant", "content": answer.get_text()}])


def test_a_pipeline_learns_from_its_earlier_runs(tmp_path):
    project = write_project(tmp_path)
    first = read_jsonl(run_pipeline(Learner(project), annotate=True, use_cache=False).paths.samples)
    assert all(len(s["steps"][0]["messages"]) == 2 for s in first)  # nothing known yet: system + prompt
    store = FeedbackStore(Project.load(tmp_path).feedback_path)
    assert len(store.successes("learner")) == 3 and store.failures_by_type("learner") == {"refused": 1}
    store.close()

    class Later(Learner):
        name = "learner"
        topics = ["sorting a list of tuples in python"]

    later = read_jsonl(run_pipeline(Later(project), annotate=True, use_cache=False).paths.samples)[0]
    sent = later["steps"][0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert sent[3]["content"] == "Explain sorting a list in python"  # the most similar sits next to the prompt
    assert "sourdough" not in str(sent)
