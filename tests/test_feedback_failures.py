"""Execution feedback: earlier failures as "previous errors to avoid" in the prompt, and the
progressive retry of a record that failed validation, with all the few-shot examples."""

import json

import pytest

from shaping.deps import FeedbackDep
from shaping.feedback import AVOID_HEADER, FeedbackStore, failure_prompt
from shaping.pipeline import Pipeline
from tests.conftest import MOCK_TOML, read_errors, read_jsonl, write_project
from tests.test_cli import isf

TOML = MOCK_TOML + """
[models.picky]
provider = "mock"
model = "mock-picky"
[models.picky.options]
refuse_when_contains = "forbidden"
"""


def test_the_most_similar_failures_come_back_once_each(tmp_path):
    store = FeedbackStore(tmp_path / "f.sqlite")
    store.record("p", "parse the CSV file of sales figures", None, ok=False, error="column 3 is not a number",
                 error_type="validation_error")
    store.record("p", "parse the CSV file of weather readings", None, ok=False, error="column 3 is not a number",
                 error_type="validation_error")
    store.record("p", "write a poem about autumn", None, ok=False, error="too short", error_type="validation_error")
    store.record("p", "parse the CSV file of sales by region", None, ok=False, error="timed out", error_type="timeout")
    store.record("p", "parse the CSV file of sales figures", "fine", ok=True)
    found = store.similar_failures("p", "parse a CSV file of sales figures", k=3)
    assert [(f.error_type, f.message) for f in found] == [
        ("validation_error", "column 3 is not a number"), ("timeout", "timed out")]  # the same error once; no poem
    assert found[0].prompt == "parse the CSV file of sales figures"
    assert store.similar_failures("p", "parse a CSV file of sales figures", k=1)[0].error_type == "validation_error"
    assert store.similar_failures("p", "unrelated words entirely", k=3) == []
    assert store.similar_failures("other", "parse a CSV file", k=3) == []
    assert store.similar_failures("p", "parse a CSV file", k=0) == []
    assert [e.output for e in store.similar("p", "parse a CSV file of sales")] == ["fine"]  # successes only


def test_a_failures_prompt_is_what_it_asked_without_the_failures_section():
    asked = {"id": "1", "input_data": {"id": "1", "topic": "x"}, "steps": [
        {"repair": 0, "messages": [{"role": "system", "content": "s"},
                                   {"role": "user", "content": f"Explain x\n\n{AVOID_HEADER}\n- a: b"}]},
        {"repair": 1, "messages": [{"role": "user", "content": "fix your JSON"}]}]}
    assert failure_prompt(asked) == "Explain x"
    assert failure_prompt({"id": "2", "input_data": {"id": "2", "topic": "y"}, "steps": []}) == '{"id": "2", "topic": "y"}'


@pytest.mark.parametrize("kwargs, fragment", [
    ({"failures": -1}, "failures must be a non-negative integer"),
    ({"examples": 2, "start": 2, "progressive": True}, "start (2) must be fewer than examples (2)"),
    ({"progressive": "yes"}, "progressive must be True or False"),
    ({"retry_on": ()}, "retry_on must be error types"),
    ({"retry_on": [3]}, "retry_on must be error types"),
])
def test_bad_feedback_options_say_which(kwargs, fragment):
    with pytest.raises(TypeError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        FeedbackDep(**kwargs)


LEARNER = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

class Learner(Pipeline):
    name = "learner"
    picky = Pipeline.model_dep("picky")
    feedback = Pipeline.feedback(examples=1, failures=2)
    quality = {"max_error_rate": 0.9}
    topics = TOPICS

    def run(self):
        return self.run_task(self.task, records=[{"id": t.split()[0], "topic": t} for t in self.topics])

    def task(self, record):
        prompt = f"Explain {record['topic']}"
        answer = yield model_request(self.feedback.conversation(prompt, system="Be brief."), model=self.picky)
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": prompt},
                                                         {"role": "assistant", "content": answer.get_text()}])
'''


def write(root, name, text, **values):
    for key, value in values.items():
        text = text.replace(key.upper(), repr(value))
    (root / "pipelines" / f"{name}.py").write_text(text)


def test_earlier_failures_are_put_in_the_prompt_as_errors_to_avoid(tmp_path):
    write_project(tmp_path, TOML)
    write(tmp_path, "learner", LEARNER, topics=["a1 sorting a list in python", "b1 forbidden sorting tricks in python",
                                                "c1 baking sourdough bread"])
    assert isf(tmp_path, "pipeline", "run", "learner", "-q").returncode == 0
    refused = read_errors(tmp_path / "training/data/errors/learner.jsonl")
    assert [(e["id"], e["error"]) for e in refused] == [("b1", "refusal")]
    first = read_jsonl(tmp_path / "training/data/learner.jsonl")
    assert all(AVOID_HEADER not in json.dumps(s["steps"]) for s in first)  # nothing failed before

    write(tmp_path, "learner", LEARNER, topics=["a2 sorting a list of tuples in python", "c2 baking rye bread"])
    assert isf(tmp_path, "pipeline", "run", "learner", "-q").returncode == 0
    later = {s["id"]: s for s in read_jsonl(tmp_path / "training/data/learner.jsonl")}
    sent = later["a2"]["steps"][0]["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "user"]
    prompt = sent[-1]["content"]
    assert prompt.startswith("Explain a2 sorting a list of tuples in python\n\n" + AVOID_HEADER + "\n- refusal: ")
    assert refused[0]["message"][:40] in prompt  # the earlier failure's type and message
    assert later["a2"]["messages"][0]["content"] == "Explain a2 sorting a list of tuples in python"  # not in the sample
    assert AVOID_HEADER not in json.dumps(later["c2"]["steps"])  # bread is nothing like the failed prompt

    # the failure is recorded by what it asked, so it is found by meaning, not by its input's JSON
    store = FeedbackStore(tmp_path / "training/.feedback.sqlite")
    assert store.failures("learner", "refusal")[0]["prompt"] == "Explain b1 forbidden sorting tricks in python"
    store.close()


PROGRESSIVE = '''
from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

class Prog(Pipeline):
    name = "prog"
    writer = Pipeline.model_dep("writer")
    feedback = Pipeline.feedback(examples=2, failures=0, progressive=PROGRESSIVE)
    quality = {"max_error_rate": 0.9}
    topics = TOPICS

    def run(self):
        return self.run_task(self.task, records=[{"id": t.split()[0], "topic": t} for t in self.topics])

    def task(self, record):
        prompt = f"Explain {record['topic']}"
        request = self.feedback.conversation(prompt, system="Be brief.")
        answer = yield model_request(request, model=self.writer)
        text = answer.get_text()
        if "shaky" in prompt and not self.feedback.retrying:
            raise PipelineError(f"not valid JSON on try {self.feedback.attempt}", error_type="validation_error")
        if "hopeless" in prompt:
            raise PipelineError(f"not valid JSON on try {self.feedback.attempt}", error_type="validation_error")
        if "rude" in prompt:
            raise PipelineError("the answer was rude", error_type="tone")
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": prompt},
                                                         {"role": "assistant", "content": text}])
'''

SEED = ["s1 sorting a list in python", "s2 sorting a dict by value in python", "s3 sorting tuples in python"]
TRICKY = ["t1 shaky sorting of strings in python", "t2 hopeless sorting of sets in python",
          "t3 rude sorting of numbers in python", "t4 plain sorting of floats in python"]


def test_progressive_retries_a_record_that_failed_validation_with_all_the_examples(tmp_path):
    write_project(tmp_path)
    write(tmp_path, "prog", PROGRESSIVE, progressive=True, topics=SEED)
    assert isf(tmp_path, "pipeline", "run", "prog", "-q").returncode == 0  # examples for the next run
    write(tmp_path, "prog", PROGRESSIVE, progressive=True, topics=TRICKY)
    result = isf(tmp_path, "pipeline", "run", "prog", "-q")
    assert result.returncode == 0, result.stderr
    samples = {s["id"]: s for s in read_jsonl(tmp_path / "training/data/prog.jsonl")}
    errors = {e["id"]: e for e in read_errors(tmp_path / "training/data/errors/prog.jsonl")}
    assert sorted(samples) == ["t1", "t4"] and sorted(errors) == ["t2", "t3"]

    # t1 failed validation on its first try (no examples: start=0) and made it on the retry (two)
    shaky = samples["t1"]
    assert [s["index"] for s in shaky["steps"]] == [0, 1]
    first, retry = shaky["steps"]
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert [m["role"] for m in retry["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert first["metadata"] == {} and retry["metadata"] == {"feedback_retry": 1}
    assert not first["cached"] and not retry["cached"]
    assert shaky["metadata"]["feedback"] == {"retried": True, "first_error": "validation_error",
                                             "first_message": "not valid JSON on try 0"}
    assert [s["index"] for s in samples["t4"]["steps"]] == [0]  # a good first try is all there is

    # t2 failed both tries: one error, the retry's, with both tries' steps
    hopeless = errors["t2"]
    assert hopeless["error"] == "validation_error" and hopeless["message"] == "not valid JSON on try 1"
    assert [(s["index"], s["metadata"]) for s in hopeless["steps"]] == [(0, {}), (1, {"feedback_retry": 1})]
    # t3 failed with a type not in retry_on: no second try
    assert errors["t3"]["error"] == "tone" and len(errors["t3"]["steps"]) == 1

    manifest = json.loads((tmp_path / "training/data/prog.manifest.json").read_text())
    assert manifest["usage"]["writer"]["requests"] == 6  # four first tries, two retries
    assert manifest["counts"]["errors"] == {"validation_error": 1, "tone": 1}



def test_a_run_again_replays_both_tries_from_the_cache(tmp_path):
    """A failed run records no feedback, so the next run sees the same examples and sends the
    same requests: each try's answers come from the cache, the retry's its own."""
    write_project(tmp_path)
    write(tmp_path, "prog", PROGRESSIVE, progressive=True, topics=SEED)
    assert isf(tmp_path, "pipeline", "run", "prog", "-q").returncode == 0
    write(tmp_path, "prog", PROGRESSIVE.replace('"max_error_rate": 0.9', '"max_error_rate": 0.1'),
          progressive=True, topics=TRICKY)
    runs = []
    for _ in range(2):
        result = isf(tmp_path, "pipeline", "run", "prog", "-q")
        assert result.returncode == 1 and "50% of records failed" in result.stderr
        failed = json.loads((tmp_path / "training/data/prog.failed.json").read_text())
        errors = {e["id"]: e for e in read_errors(tmp_path / "training/data/errors/prog.failed.jsonl")}
        runs.append((failed["manifest"]["usage"]["writer"], errors))
    (first_usage, first_errors), (usage, errors) = runs
    assert first_usage["requests"] == 6 and first_usage["cached"] == 0
    assert usage["requests"] == usage["cached"] == 6
    hopeless = errors["t2"]["steps"]
    assert [(s["index"], s["cached"]) for s in hopeless] == [(0, True), (1, True)]
    assert [s["messages"] for s in hopeless] == [s["messages"] for s in first_errors["t2"]["steps"]]
    assert len(hopeless[1]["messages"]) > len(hopeless[0]["messages"])  # the retry had the examples


def test_the_retry_sends_again_even_when_its_prompt_is_the_same(tmp_path):
    """No examples known yet: the retry's prompt equals the first try's, and still it is a new
    request (a later step), never the failed answer replayed from the cache."""
    write_project(tmp_path)
    write(tmp_path, "prog", PROGRESSIVE, progressive=True, topics=["t1 shaky sorting of strings in python"])
    assert isf(tmp_path, "pipeline", "run", "prog", "-q").returncode == 0
    shaky = read_jsonl(tmp_path / "training/data/prog.jsonl")[0]
    first, retry = shaky["steps"]
    assert first["messages"] == retry["messages"] and not retry["cached"]
    manifest = json.loads((tmp_path / "training/data/prog.manifest.json").read_text())
    assert manifest["usage"]["writer"] == {**manifest["usage"]["writer"], "requests": 2, "cached": 0}


def test_without_progressive_a_failed_record_is_recorded_at_once(tmp_path):
    write_project(tmp_path)
    write(tmp_path, "prog", PROGRESSIVE, progressive=False, topics=SEED)
    assert isf(tmp_path, "pipeline", "run", "prog", "-q").returncode == 0
    write(tmp_path, "prog", PROGRESSIVE, progressive=False, topics=TRICKY)
    assert isf(tmp_path, "pipeline", "run", "prog", "-q").returncode == 0
    errors = {e["id"]: e for e in read_errors(tmp_path / "training/data/errors/prog.jsonl")}
    assert errors["t1"]["message"] == "not valid JSON on try 0" and len(errors["t1"]["steps"]) == 1
    samples = read_jsonl(tmp_path / "training/data/prog.jsonl")
    # not progressive: the first (only) try has all the examples
    assert [len(s["steps"][0]["messages"]) for s in samples] == [6]


def test_retrying_is_false_outside_a_task(tmp_path):
    project = write_project(tmp_path)

    class Quiet(Pipeline):
        name = "quiet"
        feedback = Pipeline.feedback(examples=3, progressive=True, start=1)

    bound = Quiet(project).feedback
    assert (bound.attempt, bound.retrying, bound.k) == (0, False, 1)
    assert bound.conversation("hello", system="s") == [{"role": "system", "content": "s"},
                                                       {"role": "user", "content": "hello"}]
