"""Dedupe on crafted data: exact and near duplicates, what is kept, the CLI rewriting an output
(status stays CURRENT), the removed file, the pipeline's `dedupe` option in a run, bad input."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from shaping.errors import PipelineDefinitionError, ShapingError
from shaping.pipeline import Pipeline
from shaping.quality.dedupe import DedupeSettings, dedupe, prompt_text, response_text
from tests.conftest import read_jsonl, write_project
from tests.test_cli import ISF, isf, one_line_error

#: a 40-word answer; NEAR has its 21st word changed (word 3-grams: Jaccard 35/41, about 0.85)
LONG = ("the keeper climbs the spiral stairs each evening to light the great lamp while gulls circle "
        "over dark water and fishing boats turn toward harbour guided by its slow sweeping beam across "
        "cold waves near jagged rocks far below").split() + ["tonight"]
assert len(LONG) == 40
NEAR = LONG[:20] + ["purple"] + LONG[21:]
LONG, NEAR = " ".join(LONG), " ".join(NEAR)


def sample(sid, prompt, response, **extra):
    return {"id": sid, "messages": [{"role": "user", "content": prompt},
                                    {"role": "assistant", "content": response, **extra}]}


EXACT = [
    sample("a", "What is the capital of France?", "Paris is the capital."),
    sample("b", "  what IS the capital   of\tfrance? ", "PARIS is the   capital."),  # both: a pair
    sample("c", "Tell me about Rome.", "paris is the capital."),                  # response only
    sample("d", "WHAT is the capital of France?", "It is Paris, of course."),     # prompt only
    sample("e", "What is the capital of Spain?", "Madrid is the capital."),       # distinct
]


def ids(samples):
    return [s["id"] for s in samples]


def removed(items):
    return [(r.duplicate.id, r.duplicate.duplicate_of, r.duplicate.reason, r.duplicate.similarity) for r in items]


def test_by_default_only_the_same_conversation_is_a_duplicate():
    kept, gone = dedupe(EXACT)  # on="pair": prompt and response both, case and whitespace aside
    assert ids(kept) == ["a", "c", "d", "e"] and removed(gone) == [("b", "a", "exact_pair", 1.0)]


def test_exact_duplicates_case_and_whitespace_aside():
    kept, gone = dedupe(EXACT, on="both")
    assert ids(kept) == ["a", "e"]
    assert removed(gone) == [("b", "a", "exact_pair", 1.0), ("c", "a", "exact_response", 1.0),
                             ("d", "a", "exact_prompt", 1.0)]
    assert gone[0].sample is EXACT[1]


def test_on_prompt_or_response_only():
    kept, gone = dedupe(EXACT, on="response")
    assert ids(kept) == ["a", "d", "e"]
    assert removed(gone) == [("b", "a", "exact_response", 1.0), ("c", "a", "exact_response", 1.0)]
    kept, gone = dedupe(EXACT, on="prompt")
    assert ids(kept) == ["a", "c", "e"]
    assert removed(gone) == [("b", "a", "exact_prompt", 1.0), ("d", "a", "exact_prompt", 1.0)]


def test_the_first_occurrence_is_kept_and_only_kept_ones_are_matched():
    kept, gone = dedupe(list(reversed(EXACT)), on="both")
    assert ids(kept) == ["e", "d", "c"]
    # b's prompt matches d (kept), its response c (kept): the prompt is looked at first
    assert removed(gone) == [("b", "d", "exact_prompt", 1.0), ("a", "d", "exact_prompt", 1.0)]


def test_distinct_samples_are_all_kept():
    samples = [sample(str(i), f"question {i} about item {i * 7}", f"answer {i}: item {i * 3} in detail")
               for i in range(30)]
    assert dedupe(samples) == (samples, [])
    assert dedupe(samples, near=0.5) == (samples, [])


def test_near_duplicates_one_word_changed_in_40():
    samples = [sample("long", "Describe the lighthouse.", LONG), sample("other", "Describe a harbour.", "Boats."),
               sample("near", "Tell me of the keeper.", NEAR)]
    kept, gone = dedupe(samples, near=0.8, on="both")
    assert ids(kept) == ["long", "other"]
    [(sid, of, reason, similarity)] = removed(gone)
    assert (sid, of, reason) == ("near", "long", "near_response")
    assert 0.8 <= similarity < 0.95
    kept, gone = dedupe(samples, near=0.99, on="both")
    assert ids(kept) == ["long", "other", "near"] and gone == []
    assert dedupe(samples, near=0.8) == (samples, [])  # the prompts differ: no pair
    assert dedupe(samples) == (samples, [])  # exact alone: not the same text
    assert ids(dedupe(samples, near=0.8, on="prompt")[0]) == ["long", "other", "near"]


def test_near_pair_and_punctuation():
    samples = [sample("x", LONG, LONG + " Yes."), sample("y", NEAR, NEAR + " yes!")]
    [(sid, of, reason, similarity)] = removed(dedupe(samples, near=0.8)[1])
    assert (sid, of, reason) == ("y", "x", "near_pair") and 0.8 <= similarity < 1
    # near looks at words only: punctuation and case aside, the same words are similarity 1.0
    same_words = [sample("p", "q1", "Hello, World! " + LONG), sample("q", "q2", "hello world " + LONG + "...")]
    assert removed(dedupe(same_words, near=1.0, on="both")[1]) == [("q", "p", "near_response", 1.0)]
    assert dedupe(same_words)[1] == []


def test_what_prompt_and_response_mean_in_multi_turn_samples():
    call = {"id": "c1", "type": "function", "function": {"name": "tides", "arguments": "{}"}}
    conversation = {"id": "m", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": [{"type": "text", "text": "Tides?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "6:12"},
        {"role": "assistant", "content": "<think>say it</think>High tide at 6:12.", "tool_calls": [call],
         "reasoning_content": "plainly"}]}
    assert prompt_text(conversation) == "Hi.\nTides?[image data:image/png;base64,AAAA]"
    assert response_text(conversation) == "High tide at 6:12.\ntides({})"
    same_last_turn = sample("s", "Tides?", "High tide at 6:12.")  # no tool call: another response
    other_reasoning = sample("r", "When is high tide?", "high tide at 6:12.", tool_calls=[call],
                             reasoning_content="something else entirely")
    other_image = {**conversation, "id": "i", "messages": [
        m if m.get("role") != "user" or isinstance(m["content"], str) else
        {"role": "user", "content": [{"type": "text", "text": "Tides?"},
                                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBBB"}}]}
        for m in conversation["messages"]]}
    kept, gone = dedupe([conversation, same_last_turn, other_reasoning, other_image], on="prompt")
    assert ids(kept) == ["m", "s", "r", "i"]  # the first user turn counts; so does the image
    kept, gone = dedupe([conversation, same_last_turn, other_reasoning], on="response")
    assert removed(gone) == [("r", "m", "exact_response", 1.0)]  # reasoning is not counted


def test_empty_sides_never_count():
    samples = [sample("1", "", "first answer here"), sample("2", "", "second answer here"),
               sample("3", "same question", ""), sample("4", "another question", ""),
               {"id": "5", "messages": []}, {"id": "6"}]
    assert dedupe(samples, near=0.5) == (samples, [])


def test_settings_are_checked():
    assert DedupeSettings.parse("exact") == DedupeSettings()
    assert DedupeSettings.parse({"near": 0.9, "on": "prompt"}) == DedupeSettings(near=0.9, on="prompt")
    for bad, message in (({"near": 0}, "near must be a number in (0, 1], got 0"),
                         ({"near": 1.5}, "near must be a number in (0, 1], got 1.5"),
                         ({"near": True}, "near must be a number"),
                         ({"on": "answers"}, "on must be one of pair, both, prompt, response, got 'answers'"),
                         ({"treshold": 0.9}, "unknown key(s) 'treshold'"),
                         ("fuzzy", 'expected "exact" or a dict')):
        with pytest.raises(ValueError) as info:
            DedupeSettings.parse(bad)
        assert message in str(info.value)


def test_near_without_datasketch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasketch", None)  # import datasketch raises ImportError
    assert ids(dedupe(EXACT, on="both")[0]) == ["a", "e"]  # exact needs nothing more
    with pytest.raises(ShapingError, match=r"pip install 'shaping\[dedupe\]'"):
        dedupe(EXACT, near=0.9)


def test_a_bad_class_option_is_a_definition_error():
    with pytest.raises(PipelineDefinitionError, match=r"pipeline 'bad': dedupe: near must be a number in \(0, 1\]"):
        type("Bad", (Pipeline,), {"name": "bad", "dedupe": {"near": 2}})
    with pytest.raises(PipelineDefinitionError, match=r"pipeline 'worse': dedupe: expected \"exact\""):
        type("Worse", (Pipeline,), {"name": "worse", "dedupe": True})
    assert type("Fine", (Pipeline,), {"name": "fine", "dedupe": "exact"}).dedupe == "exact"


# -- the CLI ------------------------------------------------------------------------------------

CRAFTED = [
    ("s0", "What is the capital of France?", "Paris is the capital."),
    ("s1", "Describe the lighthouse.", LONG),
    ("s2", "what is the capital of FRANCE?", "PARIS is the capital."),  # exact pair of s0
    ("s3", "Tell me of the keeper.", NEAR),                                # near s1 (~0.85)
    ("s4", "Where is Rome?", "Rome is in Italy."),
    ("s5", "Where is Oslo?", "paris is  the capital."),                    # exact response of s0
    ("s6", "What is the capital of Spain?", "Madrid is the capital."),
]

PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample

ROWS = {rows!r}


class Crafted(Pipeline):
    name = "crafted"

    def run(self):
        return [TrainingSample(id=i, messages=[{{"role": "user", "content": p}}, {{"role": "assistant", "content": r}}])
                for i, p, r in ROWS]
'''


@pytest.fixture
def crafted(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "crafted.py").write_text(PIPELINE.format(rows=CRAFTED))
    result = isf(tmp_path, "pipeline", "run", "crafted", "-q")
    assert result.returncode == 0, result.stderr
    return tmp_path


def data(root, *parts):
    return root.joinpath("training", "data", *parts)


def snapshot(root):
    folder = root / "training" / "data"
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def status_line(root):
    result = isf(root, "pipeline", "status", "crafted")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_cli_dedupe_rewrites_the_output_and_status_stays_current(crafted):
    assert status_line(crafted) == "crafted: CURRENT (7 samples)"
    before = snapshot(crafted)
    dry = isf(crafted, "pipeline", "dedupe", "crafted", "--on", "both", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "sample s2: exact pair of sample s0" in dry.stdout and "sample s5: exact response of sample s0" in dry.stdout
    assert "crafted: would keep 5, remove 2: 2 exact, 0 near (exact on prompts or responses); dry run, nothing written" in dry.stdout
    assert snapshot(crafted) == before

    result = isf(crafted, "pipeline", "dedupe", "crafted", "--on", "both")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "crafted: kept 5, removed 2: 2 exact, 0 near (exact on prompts or responses)"
    assert [s["id"] for s in read_jsonl(data(crafted, "crafted.jsonl"))] == ["s0", "s1", "s3", "s4", "s6"]
    original = {s["id"]: s for s in read_jsonl_bytes(before["crafted.jsonl"])}
    gone = read_jsonl(data(crafted, "dedupe", "crafted.removed.jsonl"))
    assert gone == [{**original["s2"], "duplicate_of": "s0", "reason": "exact_pair", "similarity": 1.0},
                    {**original["s5"], "duplicate_of": "s0", "reason": "exact_response", "similarity": 1.0}]
    # the kept lines are the run's, byte for byte
    assert data(crafted, "crafted.jsonl").read_bytes() == b"".join(
        line + b"\n" for line in before["crafted.jsonl"].splitlines() if json.loads(line)["id"] not in ("s2", "s5"))
    manifest = json.loads(data(crafted, "crafted.manifest.json").read_text())
    assert manifest["counts"]["samples"] == 5
    assert manifest["output"]["sha256"] == hashlib.sha256(data(crafted, "crafted.jsonl").read_bytes()).hexdigest()
    [record] = manifest["dedupe"]
    assert {k: record[k] for k in ("by", "on", "near", "before", "kept", "removed_exact", "removed_near")} == {
        "by": "cli", "on": "both", "near": None, "before": 7, "kept": 5, "removed_exact": 2, "removed_near": 0}
    # by default only the same conversation goes: here none is left
    assert manifest["dedupe_removed"] == {
        "path": "training/data/dedupe/crafted.removed.jsonl",
        "sha256": hashlib.sha256(data(crafted, "dedupe", "crafted.removed.jsonl").read_bytes()).hexdigest()}
    assert status_line(crafted) == "crafted: CURRENT (5 samples)"
    assert not list(data(crafted).rglob("*.tmp"))

    # a second pass, near this time: adds to the removed file
    result = isf(crafted, "pipeline", "dedupe", "crafted", "--near", "0.8", "--on", "both")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == ("crafted: kept 4, removed 1: 0 exact, 1 near (exact and near >= 0.8 "
                                             "on prompts or responses)")
    assert [s["id"] for s in read_jsonl(data(crafted, "crafted.jsonl"))] == ["s0", "s1", "s4", "s6"]
    gone = read_jsonl(data(crafted, "dedupe", "crafted.removed.jsonl"))
    assert [(g["id"], g["duplicate_of"], g["reason"]) for g in gone] == [
        ("s2", "s0", "exact_pair"), ("s5", "s0", "exact_response"), ("s3", "s1", "near_response")]
    assert 0.8 <= gone[2]["similarity"] < 0.95
    manifest = json.loads(data(crafted, "crafted.manifest.json").read_text())
    assert [(r["near"], r["before"], r["kept"]) for r in manifest["dedupe"]] == [(None, 7, 5), (0.8, 5, 4)]
    assert status_line(crafted) == "crafted: CURRENT (4 samples)"

    # nothing left to remove: nothing changes
    before = snapshot(crafted)
    result = isf(crafted, "pipeline", "dedupe", "crafted", "--near", "0.8", "--on", "both")
    assert result.returncode == 0 and "crafted: kept 4, removed 0: 0 exact, 0 near" in result.stdout
    assert snapshot(crafted) == before


def read_jsonl_bytes(content):
    from shaping.samples import decode_annotated

    return [decode_annotated(json.loads(line)) for line in content.splitlines() if line.strip()]


def test_the_removed_file_loads_with_datasets(crafted):
    datasets = pytest.importorskip("datasets")
    assert isf(crafted, "pipeline", "dedupe", "crafted", "--near", "0.8", "--on", "both").returncode == 0
    loaded = datasets.load_dataset("json", data_files=str(data(crafted, "dedupe", "crafted.removed.jsonl")),
                                   split="train", cache_dir=str(crafted / "hf-cache"))
    assert loaded["id"] == ["s2", "s3", "s5"] and loaded["reason"] == ["exact_pair", "near_response", "exact_response"]
    assert loaded["duplicate_of"] == ["s0", "s1", "s0"] and loaded["similarity"][0] == 1.0


def test_validate_and_report_show_what_dedupe_would_remove(crafted):
    result = isf(crafted, "pipeline", "validate", "crafted")
    assert "dedupe would remove" in result.stdout
    assert "1 of 7 samples: 1 exact, near not checked (quality dedupe_near sets a threshold)" in result.stdout
    assert "dedupe would remove: sample s2: exact pair of sample s0" in result.stdout
    report = isf(crafted, "pipeline", "report", "crafted")
    assert report.returncode == 0, report.stderr
    html = data(crafted, "crafted.report.html").read_text()
    assert '<div class="figure" id="count-dedupe">1</div>' in html
    assert "dedupe would remove 1 of 7 samples: 1 exact" in html
    assert "<td>exact pair</td>" in html and "isf pipeline dedupe crafted" in html
    stricter = PIPELINE.format(rows=CRAFTED).replace('name = "crafted"', 'name = "crafted"\n    quality = {"dedupe_near": 0.8}')
    (crafted / "pipelines" / "crafted.py").write_text(stricter)
    assert "1 of 7 samples: 1 exact, 0 near (>= 0.8)" in isf(crafted, "pipeline", "validate", "crafted").stdout


@pytest.mark.parametrize("args, fragment", [
    (["--near", "1.5"], "--near must be a number in (0, 1], got 1.5"),
    (["--near", "0"], "--near must be a number in (0, 1], got 0.0"),
    (["--near", "high"], "--near must be a number in (0, 1], got 'high'"),
    (["--on", "answers"], "--on must be one of pair, both, prompt, response, got 'answers'"),
])
def test_bad_input_is_one_line_and_changes_nothing(crafted, args, fragment):
    before = snapshot(crafted)
    one_line_error(isf(crafted, "pipeline", "dedupe", "crafted", *args), fragment)
    assert snapshot(crafted) == before


def test_no_output_yet_and_no_datasketch(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "crafted.py").write_text(PIPELINE.format(rows=CRAFTED))
    one_line_error(isf(tmp_path, "pipeline", "dedupe", "crafted"), "pipeline 'crafted' has no output yet",
                   "isf pipeline run crafted")
    assert not (tmp_path / "training").exists()
    assert isf(tmp_path, "pipeline", "run", "crafted", "-q").returncode == 0
    before = snapshot(tmp_path)
    hide = tmp_path / "hide" / "datasketch"
    hide.mkdir(parents=True)
    (hide / "__init__.py").write_text("raise ImportError('hidden for the test')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(hide.parent), os.environ.get("PYTHONPATH", "")])}
    run = lambda *a: subprocess.run([ISF, *a], cwd=tmp_path, capture_output=True, text=True, timeout=60,  # noqa: E731
                                    env={**env, "COLUMNS": "200"})
    one_line_error(run("pipeline", "dedupe", "crafted", "--near", "0.9"), "pip install 'shaping[dedupe]'")
    assert snapshot(tmp_path) == before
    result = run("pipeline", "dedupe", "crafted")  # exact needs nothing more
    assert result.returncode == 0 and "kept 6, removed 1: 1 exact, 0 near" in result.stdout, result.stderr
    near = PIPELINE.format(rows=CRAFTED).replace('name = "crafted"', 'name = "crafted"\n    quality = {"dedupe_near": 0.9}')
    (tmp_path / "pipelines" / "crafted.py").write_text(near)
    validate = run("pipeline", "validate", "crafted")
    assert "near not checked (pip install 'shaping[dedupe]')" in validate.stdout


def test_an_edited_output_stays_stale(crafted):
    path = data(crafted, "crafted.jsonl")
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")  # s0 once more
    manifest = data(crafted, "crafted.manifest.json").read_bytes()
    result = isf(crafted, "pipeline", "dedupe", "crafted")
    assert result.returncode == 0 and "kept 6, removed 2: 2 exact, 0 near" in result.stdout
    assert "the output was edited since its run; the manifest was left as it was" in result.stderr
    assert data(crafted, "crafted.manifest.json").read_bytes() == manifest
    assert "STALE" in status_line(crafted) and "output edited since the run" in status_line(crafted)


# -- the class option during a run ----------------------------------------------------------------

RUN_PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request

RECORDS = [
    {{"id": "r0", "q": "Tell me about lighthouses."}},
    {{"id": "r1", "q": "  tell me about LIGHTHOUSES. "}},
    {{"id": "r2", "q": "What do keepers do?", "a": {long!r}}},
    {{"id": "r3", "q": "How are lenses made?", "a": {near!r}}},
    {{"id": "r4", "q": "Why are they striped?"}},
]


class Lights(Pipeline):
    name = "lights"
    dedupe = {option}
    judge = Pipeline.model_dep("judge")

    def run(self):
        return self.run_task(self.task, records=RECORDS)

    def task(self, record):
        answer = yield model_request(record["q"], model=self.judge)
        return TrainingSample(id=record["id"], messages=[
            {{"role": "user", "content": record["q"]}},
            {{"role": "assistant", "content": record.get("a") or answer.get_text()}}])
'''


def test_the_class_option_is_applied_during_a_run(tmp_path):
    write_project(tmp_path)
    source = tmp_path / "pipelines" / "lights.py"
    source.write_text(RUN_PIPELINE.format(long=LONG, near=NEAR, option='{"near": 0.8, "on": "both"}'))
    result = isf(tmp_path, "pipeline", "run", "lights")
    assert result.returncode == 0, result.stderr
    assert "removed 2 (1 exact, 1 near)" in result.stdout
    assert [s["id"] for s in read_jsonl(data(tmp_path, "lights.jsonl"))] == ["r0", "r2", "r4"]
    gone = read_jsonl(data(tmp_path, "dedupe", "lights.removed.jsonl"))
    assert [(g["id"], g["duplicate_of"], g["reason"]) for g in gone] == [
        ("r1", "r0", "exact_prompt"), ("r3", "r2", "near_response")]
    assert gone[0]["steps"] and gone[0]["messages"][0]["content"] == "  tell me about LIGHTHOUSES. "  # annotated, whole
    manifest = json.loads(data(tmp_path, "lights.manifest.json").read_text())
    assert manifest["counts"]["samples"] == 3 and manifest["counts"]["records"] == 5
    assert [(r["by"], r["near"], r["before"], r["kept"]) for r in manifest["dedupe"]] == [("run", 0.8, 5, 3)]
    assert isf(tmp_path, "pipeline", "status", "lights").stdout.strip() == "lights: CURRENT (3 samples)"
    assert not list(data(tmp_path).rglob("*.tmp")) and not list(data(tmp_path).rglob("*.spool"))

    # exact only: the near one stays; no option: the removed file of an earlier run goes
    source.write_text(RUN_PIPELINE.format(long=LONG, near=NEAR, option='{"on": "both"}'))
    assert isf(tmp_path, "pipeline", "run", "lights", "-q").returncode == 0
    assert [s["id"] for s in read_jsonl(data(tmp_path, "lights.jsonl"))] == ["r0", "r2", "r3", "r4"]
    assert [g["id"] for g in read_jsonl(data(tmp_path, "dedupe", "lights.removed.jsonl"))] == ["r1"]
    # "exact" (on pairs): r1 is another conversation (the mock answered its own prompt)
    source.write_text(RUN_PIPELINE.format(long=LONG, near=NEAR, option='"exact"'))
    assert isf(tmp_path, "pipeline", "run", "lights", "-q").returncode == 0
    assert len(read_jsonl(data(tmp_path, "lights.jsonl"))) == 5
    source.write_text(RUN_PIPELINE.format(long=LONG, near=NEAR, option="None"))
    assert isf(tmp_path, "pipeline", "run", "lights", "-q").returncode == 0
    assert len(read_jsonl(data(tmp_path, "lights.jsonl"))) == 5
    assert not data(tmp_path, "dedupe", "lights.removed.jsonl").exists()
    assert json.loads(data(tmp_path, "lights.manifest.json").read_text())["dedupe"] == []
