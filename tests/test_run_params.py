"""Run parameters: `isf pipeline run NAME --set KEY=VALUE`, `python pipelines/x.py --set ...`,
`isf pipeline list --params`, the manifest's record and `changed_params` staleness (shaping.params)."""

import json
import subprocess
import sys
from typing import Any, ClassVar

import pytest

from shaping.errors import PipelineDefinitionError, ShapingError
from shaping.params import ParamError
from shaping.pipeline import Pipeline
from tests.conftest import read_jsonl, write_project
from tests.test_cli import data_files, isf, one_line_error

PIPELINE = '''
from typing import ClassVar, Literal

from shaping.pipeline import Pipeline, TrainingSample, model_request

LIMIT = 99


class Params(Pipeline):
    name = "params"
    judge = Pipeline.model_dep("judge")
    count = 3
    word = "hello"
    ratio = 0.5
    loud = False
    style: Literal["short", "long"] = "short"
    weights = {"a": 0.5}
    tags = ["x"]
    extra = None
    CONSTANT = "not a parameter"
    cache: ClassVar[str] = "not a parameter either"
    _private = 1

    def run(self):
        return self.run_task(self.task, records=[{"id": f"r{i}"} for i in range(self.count)])

    def task(self, record):
        reply = yield model_request(f"say {self.word} in a {self.style} way", model=self.judge)
        values = {k: getattr(self, k) for k in ("count", "word", "ratio", "loud", "style", "weights", "tags", "extra")}
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": self.word}, reply.as_message()],
                              metadata={"values": values, "types": {k: type(v).__name__ for k, v in values.items()}})


if __name__ == "__main__":
    Params().execute()
'''

OTHER = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Other(Pipeline):
    name = "other"
    judge = Pipeline.model_dep("judge")
    size = 1

    def run(self):
        return self.run_task(self.task, records=[{"id": "o"}])

    def task(self, record):
        reply = yield model_request("hi", model=self.judge)
        return TrainingSample(id="o", messages=[{"role": "user", "content": "hi"}, reply.as_message()])
'''


@pytest.fixture
def proj(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "params.py").write_text(PIPELINE)
    return tmp_path


def manifest(root, name="params"):
    return json.loads((root / "training" / "data" / f"{name}.manifest.json").read_text())


def status(root, name="params"):
    result = isf(root, "pipeline", "status", name, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)[0]


def test_set_values_reach_the_pipeline_typed(proj):
    result = isf(proj, "pipeline", "run", "params", "-q", "--set", "count=2", "--set", "word=bye",
                 "--set", "ratio=0.25", "--set", "loud=true", "--set", "style=long", "--set", 'weights={"b": 1}',
                 "--set", "tags=a, b", "--set", "extra=[1, 2]")
    assert result.returncode == 0, result.stderr
    samples = read_jsonl(proj / "training/data/params.jsonl")
    assert [s["id"] for s in samples] == ["r0", "r1"]
    assert samples[0]["metadata"]["values"] == {"count": 2, "word": "bye", "ratio": 0.25, "loud": True,
                                                "style": "long", "weights": {"b": 1.0}, "tags": ["a", "b"],
                                                "extra": [1, 2]}
    assert samples[0]["metadata"]["types"] == {"count": "int", "word": "str", "ratio": "float", "loud": "bool",
                                               "style": "str", "weights": "dict", "tags": "list", "extra": "list"}
    assert samples[0]["steps"][0]["messages"][0]["content"] == "say bye in a long way"


@pytest.mark.parametrize("assignment, fragments", [
    ("count=abc", ["--set count=abc: expected an integer"]),
    ("count=2.5", ["--set count=2.5: expected an integer"]),
    ("ratio=half", ["--set ratio=half: expected a number"]),
    ("loud=maybe", ["--set loud=maybe: expected true or false"]),
    ("style=medium", ["--set style=medium: expected one of 'short', 'long'"]),
    ("weights=[1]", ["--set weights=[1]: expected a JSON object (dict[str, float])"]),
    ('weights={"a": "lots"}', ["expected a JSON object", "a: Input should be a valid number"]),
    ("count=true", ["--set count=true: expected an integer"]),
    ("count=false", ["--set count=false: expected an integer"]),
    ("ratio=true", ["--set ratio=true: expected a number"]),
    ("weights={\"a\": true}", ["expected a JSON object (dict[str, float])"]),
    ("ratio=nan", ["--set ratio=nan: should be a finite number"]),
    ("ratio=inf", ["--set ratio=inf: should be a finite number"]),
    ("ratio=-Infinity", ["--set ratio=-Infinity: should be a finite number"]),
    ("weights={\"a\": NaN}", ["should be a finite number"]),
    ("extra=NaN", ["--set extra=NaN: should be a finite number"]),
    ("count", ["--set count: expected KEY=VALUE", "its parameters: count (int, 3)"]),
    ("cnt=1", ["--set: pipeline 'params' has no parameter 'cnt' (did you mean 'count'?)",
               "its parameters: count (int, 3), extra (any, None), loud (bool, False), ratio (float, 0.5), "
               "style ('short' | 'long', 'short'), tags (list[str], ['x']), weights (dict[str, float], {'a': 0.5}), "
               "word (str, 'hello')"]),
    ("judge=writer", ["has no parameter 'judge' (judge is its model_dep 'judge', not a parameter)"]),
    ("workers=3", ["has no parameter 'workers' (workers is a run setting: use --workers)"]),
    ("CONSTANT=x", ["has no parameter 'CONSTANT'"]),
    ("cache=x", ["has no parameter 'cache'"]),
    ("_private=2", ["has no parameter '_private'"]),
])
def test_unknown_key_or_bad_value_is_one_line_and_writes_nothing(proj, assignment, fragments):
    one_line_error(isf(proj, "pipeline", "run", "params", "--set", assignment), *fragments)
    assert data_files(proj) == []


def test_a_bad_set_leaves_an_earlier_output_as_it_was(proj):
    assert isf(proj, "pipeline", "run", "params", "-q").returncode == 0
    before = {p.name: p.read_bytes() for p in (proj / "training/data").iterdir() if p.is_file()}
    one_line_error(isf(proj, "pipeline", "run", "params", "--set", "count=-"), "expected an integer")
    assert {p.name: p.read_bytes() for p in (proj / "training/data").iterdir() if p.is_file()} == before
    assert status(proj)["state"] == "CURRENT"


def test_manifest_records_every_value_and_which_were_set(proj):
    assert isf(proj, "pipeline", "run", "params", "-q", "--set", "count=1", "--set", "loud=yes").returncode == 0
    recorded = manifest(proj)
    assert recorded["params"] == {"count": 1, "word": "hello", "ratio": 0.5, "loud": True, "style": "short",
                                  "weights": {"a": 0.5}, "tags": ["x"], "extra": None}
    assert recorded["params_set"] == ["count", "loud"]
    assert isf(proj, "pipeline", "run", "params", "-q").returncode == 0
    assert manifest(proj)["params"]["count"] == 3 and manifest(proj)["params_set"] == []


def test_status_is_stale_after_a_run_with_other_values_until_a_plain_run(proj):
    assert isf(proj, "pipeline", "run", "params", "-q", "--set", "count=2", "--set", "style=long").returncode == 0
    stale = status(proj)
    assert stale["state"] == "STALE"
    assert [r["code"] for r in stale["reasons"]] == ["changed_params", "changed_params"]
    messages = [r["message"] for r in stale["reasons"]]
    assert messages == ["parameter count: the output was made with --set count=2; the pipeline declares 3",
                        "parameter style: the output was made with --set style='long'; the pipeline declares 'short'"]
    text = isf(proj, "pipeline", "status").stdout
    assert "params: STALE" in text and "parameter count: the output was made with --set count=2" in text
    again = isf(proj, "pipeline", "run", "params")  # a plain run is not "nothing to do"
    assert again.returncode == 0 and "nothing to do" not in again.stdout
    assert status(proj)["state"] == "CURRENT" and len(read_jsonl(proj / "training/data/params.jsonl")) == 3
    # --set to the declared value makes what the class declares: CURRENT
    assert isf(proj, "pipeline", "run", "params", "-q", "--set", "count=3").returncode == 0
    assert status(proj)["state"] == "CURRENT" and manifest(proj)["params_set"] == ["count"]
    # and a --set run is never skipped as "nothing to do"
    forced = isf(proj, "pipeline", "run", "params", "--set", "count=1")
    assert forced.returncode == 0 and "nothing to do" not in forced.stdout
    assert status(proj)["state"] == "STALE"


def test_a_changed_declaration_is_stale_too(proj):
    """The manifest records every value: a default the class changes is named as well."""
    assert isf(proj, "pipeline", "run", "params", "-q").returncode == 0
    (proj / "pipelines" / "params.py").write_text(PIPELINE.replace("    count = 3\n", "    count = 4\n"))
    reasons = {r["code"]: r["message"] for r in status(proj)["reasons"]}
    assert reasons["changed_params"] == "parameter count: the output was made with count=3; the pipeline declares 4"
    assert "changed_code" in reasons


def test_list_params_shows_names_types_and_defaults(proj):
    result = isf(proj, "pipeline", "list", "--params")
    assert result.returncode == 0, result.stderr
    for line in ("count: int = 3", "word: str = 'hello'", "ratio: float = 0.5", "loud: bool = False",
                 "style: 'short' | 'long' = 'short'", "weights: dict[str, float] = {'a': 0.5}",
                 "tags: list[str] = ['x']", "extra: any = None"):
        assert line in result.stdout, result.stdout
    for hidden in ("CONSTANT", "cache", "_private", "judge:", "name:"):
        assert hidden not in result.stdout
    plain = isf(proj, "pipeline", "list")
    assert "params" in plain.stdout and "count: int" not in plain.stdout  # the column only with --params


def test_script_takes_set_the_same_way(proj):
    def script(*args):
        return subprocess.run([sys.executable, "pipelines/params.py", *args], cwd=proj, capture_output=True,
                              text=True, timeout=60)

    done = script("-q", "--set", "count=1", "--set", "word=script")
    assert done.returncode == 0, done.stderr
    samples = read_jsonl(proj / "training/data/params.jsonl")
    assert len(samples) == 1 and samples[0]["metadata"]["values"]["word"] == "script"
    assert manifest(proj)["params_set"] == ["count", "word"]
    before = (proj / "training/data/params.jsonl").read_bytes()
    bad = script("--set", "style=medium")
    assert bad.returncode != 0 and bad.stderr.strip().splitlines() == [
        "error: --set style=medium: expected one of 'short', 'long'"]
    assert (proj / "training/data/params.jsonl").read_bytes() == before
    assert "--set KEY=VALUE" in script("--help").stdout


def test_set_checks_every_named_pipeline_first_and_not_with_stale(proj):
    (proj / "pipelines" / "other.py").write_text(OTHER)
    one_line_error(isf(proj, "pipeline", "run", "params", "other", "--set", "count=1"),
                   "pipeline 'other' has no parameter 'count'", "its parameters: size (int, 1)")
    assert data_files(proj) == []  # params, first in order, did not run either
    one_line_error(isf(proj, "pipeline", "run", "--stale", "--set", "count=1"), "--set applies to the pipelines named")
    assert data_files(proj) == []


def test_a_pipeline_without_parameters_says_so(proj):
    (proj / "pipelines" / "other.py").write_text(OTHER.replace("    size = 1\n", ""))
    one_line_error(isf(proj, "pipeline", "run", "other", "--set", "size=2"),
                   "pipeline 'other' has no parameter 'size'; it declares none")


# -- the rule, in process -------------------------------------------------------------------------

def test_what_is_a_parameter_and_its_type():
    from typing import Literal

    class Base(Pipeline):
        name = "base-params"
        mode: Literal["a", "b"] = "a"
        size = 2
        limit_ish = 3

        def run(self):
            return []

    class Child(Base):
        name = "child-params"
        mode = "b"                      # a new default keeps the base's type
        size: float = 2                 # an annotation retypes it
        SHOUT = 1                       # constant
        hidden: ClassVar[int] = 4       # ClassVar
        _x = 5                          # private
        workers = 8                     # Pipeline's own setting
        quality = {"min_judge_score": 3}
        thing: Any = object()           # annotated: any value

        @property
        def prop(self):
            return 1

    params = Child.parameters()
    assert list(params) == ["mode", "size", "limit_ish", "thing"]
    assert params["mode"].default == "b" and params["mode"].label() == "'a' | 'b'"
    assert params["size"].label() == "float" and params["size"].parse("2.5") == 2.5
    assert Base.parameters()["size"].label() == "int"
    with pytest.raises(ParamError, match="expected one of 'a', 'b'"):
        params["mode"].parse("c")


def test_a_default_its_annotation_does_not_allow_is_a_definition_error():
    with pytest.raises(PipelineDefinitionError, match=r"pipeline 'bad-default': parameter size: its default 'big' "
                                                      r"is not an integer"):
        class BadDefault(Pipeline):
            size: int = "big"

    class Base(Pipeline):
        mode: bool = False

    with pytest.raises(PipelineDefinitionError, match="parameter mode: its default 'yes please' is not true or false"):
        class Child(Base):
            mode = "yes please"


def test_set_params_in_python_checks_types(project):
    class Typed(Pipeline):
        name = "typed"
        count = 3
        weights = {1: 0.5}

        def run(self):
            return []

    pipeline = Typed(project)
    pipeline.set_params(count="4", weights={"2": 1})
    assert (pipeline.count, pipeline.weights) == (4, {2: 1.0}) and Typed.count == 3
    assert pipeline.param_values() == {"count": 4, "weights": {2: 1.0}}
    with pytest.raises(ParamError, match="parameter count: expected an integer, got 'many'"):
        pipeline.set_params(count="many")
    with pytest.raises(ShapingError, match="has no parameter 'cuont' \\(did you mean 'count'\\?\\)"):
        pipeline.set_params(cuont=1)


def test_a_parameter_may_not_hide_a_pipeline_method():
    with pytest.raises(PipelineDefinitionError, match="parameters is a method of Pipeline"):
        class Hiding(Pipeline):
            parameters = {"a": 1}


def test_recorded_values_compare_as_json_values():
    from shaping.params import same_value

    assert same_value({-2: 0.2, 1: 1}, {"1": 1.0, "-2": 0.2})  # what the manifest holds after JSON
    assert same_value((1, 2), [1, 2]) and same_value(1, 1.0)
    assert not same_value({"a": 1}, {"a": 2}) and not same_value("1", 1)


SET_PIPELINE = '''
from shaping.pipeline import Pipeline, TrainingSample, model_request


class Sets(Pipeline):
    name = "sets"
    judge = Pipeline.model_dep("judge")
    tags: set[str] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"}
    frozen: frozenset[int] = frozenset({30, 1, 200, 4})
    nested: dict[str, set[str]] = {"k": {"x", "y", "z", "w"}}

    def run(self):
        return self.run_task(self.task, records=[{"id": "a"}])

    def task(self, record):
        reply = yield model_request("hi", model=self.judge)
        return TrainingSample(id="a", messages=[{"role": "user", "content": "hi"}, reply.as_message()])
'''


def test_a_set_parameter_is_recorded_sorted_and_current_whatever_the_hash_seed(tmp_path):
    import os

    write_project(tmp_path)
    (tmp_path / "pipelines" / "sets.py").write_text(SET_PIPELINE)

    def isf_seeded(seed, *args):
        return subprocess.run([sys.executable, "-m", "shaping.cli", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": seed, "COLUMNS": "200"})

    assert isf_seeded("1", "pipeline", "run", "sets", "-q").returncode == 0
    recorded = manifest(tmp_path, "sets")["params"]
    assert recorded["tags"] == sorted(recorded["tags"]) and len(recorded["tags"]) == 8
    assert recorded["frozen"] == [1, 4, 30, 200] and recorded["nested"] == {"k": ["w", "x", "y", "z"]}
    for seed in ("2", "3", "4", "5", "6"):
        result = isf_seeded(seed, "pipeline", "status", "sets", "--json")
        assert result.returncode == 0, result.stderr
        state = json.loads(result.stdout)[0]
        assert state["state"] == "CURRENT", (seed, state["reasons"])


def test_same_value_takes_sets_in_any_order():
    from shaping.params import jsonable, same_value

    assert jsonable({"c", "a", "b"}) == ["a", "b", "c"] and jsonable(frozenset({3, 1, 2})) == [1, 2, 3]
    assert same_value(["b", "a", "c"], {"a", "b", "c"})  # a manifest written in another hash order
    assert not same_value(["a", "b"], {"a", "b", "c"}) and not same_value(["a", "a"], {"a"})
    # a record written in hash order, before sets were sorted, nested too
    assert same_value({"k": ["z", "x", "y"]}, {"k": {"x", "y", "z"}}) and same_value([["b", "a"]], [{"a", "b"}])
    assert not same_value({"k": ["x"]}, {"k": {"x", "y"}})


HELPER_PIPELINE = '''
from __future__ import annotations

from typing import TYPE_CHECKING

from shaping.pipeline import Pipeline, TrainingSample, model_request

if TYPE_CHECKING:
    from somewhere import Client


class Helper:
    def greet(self):
        return "hi"


class WithHelper(Pipeline):
    name = "with-helper"
    judge = Pipeline.model_dep("judge")
    helper: Helper = Helper()            # a type with no schema: not a parameter
    helpers: list[Helper] = []           # nor a list of them
    _client: Client | None = None        # private: its annotation is never read
    size: int = 1

    def run(self):
        return self.run_task(self.task, records=[{"id": str(i)} for i in range(self.size)])

    def task(self, record):
        reply = yield model_request(self.helper.greet(), model=self.judge)
        return TrainingSample(id=record["id"], messages=[{"role": "user", "content": "hi"}, reply.as_message()])
'''


def test_an_attribute_of_a_type_without_a_schema_is_not_a_parameter(tmp_path):
    write_project(tmp_path)
    (tmp_path / "pipelines" / "with_helper.py").write_text(HELPER_PIPELINE)
    listed = isf(tmp_path, "pipeline", "list", "--params")
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert "size: int = 1" in listed.stdout and "helper:" not in listed.stdout and "helpers:" not in listed.stdout
    one_line_error(isf(tmp_path, "pipeline", "run", "with-helper", "--set", "helper=x"),
                   "has no parameter 'helper' (helper is a setting of the class, not a parameter)")
    assert isf(tmp_path, "pipeline", "run", "with-helper", "-q", "--set", "size=2").returncode == 0
    assert manifest(tmp_path, "with-helper")["params"] == {"size": 2}


def test_an_unreadable_annotation_of_a_parameter_is_one_line():
    with pytest.raises(PipelineDefinitionError) as caught:
        class Unreadable(Pipeline):
            name = "unreadable"
            size: "NoSuchType" = 3  # noqa: F821

    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert "pipeline 'unreadable': parameter size: cannot read its annotation 'NoSuchType'" in message
    assert "NameError" in message


def test_bools_and_non_finite_numbers_only_where_the_type_takes_them(project):
    class Typed(Pipeline):
        name = "typed-bools"
        count = 3
        ratio = 0.5
        loud = False
        flags: dict[str, bool] = {}
        either: int | bool = 0
        extra = None

        def run(self):
            return []

    params = Typed.parameters()
    assert params["loud"].parse("true") is True and params["flags"].parse('{"a": true}') == {"a": True}
    assert params["either"].parse("true") is True and params["extra"].parse("true") is True
    assert params["count"].parse("1") == 1 and params["ratio"].parse("1e3") == 1000.0
    pipeline = Typed(project)
    with pytest.raises(ParamError, match="parameter count: expected an integer, got True"):
        pipeline.set_params(count=True)
    with pytest.raises(ParamError, match="parameter ratio: should be a finite number"):
        pipeline.set_params(ratio=float("inf"))
    assert pipeline.param_values()["count"] == 3
