"""reasoning-distillation and tool-use on the mock models, their tools, and TRL taking their output as is."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from shaping import run_pipeline
from shaping.config import Project
from shaping.discovery import discover
from shaping.errors import RunFailedError, ShapingError
from shaping.prompts import PromptGenerator
from tests.conftest import read_errors, read_jsonl
from tests.tiny_model import build_tiny_model

REPO = Path(__file__).resolve().parents[1]


def load_module(filename):
    spec = importlib.util.spec_from_file_location(f"under_test_{Path(filename).stem}", REPO / "pipelines" / filename)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool_use = load_module("tool_use.py")
reasoning = load_module("reasoning_distillation.py")


def scratch_project(root: Path, toml: str | None = None) -> Project:
    """A copy of what the two pipelines need (shaping.toml, their files, the coding mix, the
    tasks), so runs take no lock and write nothing in the repository."""
    (root / "pipelines").mkdir(exist_ok=True)
    (root / "identity").mkdir(exist_ok=True)
    (root / "shaping.toml").write_text((REPO / "shaping.toml").read_text() if toml is None else toml)
    for name in ("reasoning_distillation.py", "tool_use.py"):
        shutil.copy(REPO / "pipelines" / name, root / "pipelines" / name)
    shutil.copytree(REPO / "pipelines" / "prompts", root / "pipelines" / "prompts")
    shutil.copy(REPO / "identity" / "tool_tasks.jsonl", root / "identity")
    return Project.load(root)


def run(name, root, limit=3, annotate=True, toml=None, **attrs):
    project = scratch_project(root, toml)
    pipeline = discover(project)[name].cls(project)
    for key, value in attrs.items():
        setattr(pipeline, key, value)
    result = run_pipeline(pipeline, limit=limit, output=root / f"{name}.jsonl", annotate=annotate, use_cache=False)
    return result, read_jsonl(result.paths.samples), read_errors(result.paths.errors)


def failed_run(name, root, limit=3, toml=None, **attrs):
    with pytest.raises(RunFailedError) as caught:
        run(name, root, limit=limit, toml=toml, **attrs)
    return str(caught.value), read_errors(caught.value.result.paths.failed_errors)


# -- reasoning-distillation --------------------------------------------------------------------

def test_reasoning_distillation_keeps_reasoning_in_the_field(tmp_path):
    result, samples, errors = run("reasoning-distillation", tmp_path, limit=4)
    assert len(samples) == 4 and errors == []
    for sample in samples:
        user, assistant = sample["messages"]
        assert user["role"] == "user" and assistant["role"] == "assistant"
        step = sample["steps"][0]
        assert step["messages"][0]["role"] == "system"  # sent to the teacher, not kept
        assert assistant["reasoning_content"] == step["reasoning"] and "Let me think" in step["reasoning"]
        assert assistant["content"] == step["text"] and "<think>" not in assistant["content"]
        assert sample["metadata"]["reasoning_format"] == "field" and sample["metadata"]["reasoning_tokens"] > 0
        assert {"category", "language", "source"} <= set(sample["metadata"])
    assert result.manifest.model_deps["reasoner"].model == "mock-reasoner"


def test_reasoning_distillation_draws_coding_distillations_prompts(tmp_path):
    _, samples, _ = run("reasoning-distillation", tmp_path, limit=5)
    generator = PromptGenerator.from_file(REPO / "pipelines" / "prompts" / "coding.toml")
    expected = generator.sample(200, existing_weight=0.5, seed=7)  # coding-distillation's defaults
    assert [(s["id"], s["messages"][0]["content"]) for s in samples] == [(r.id, r.prompt) for r in expected[:5]]


def test_reasoning_distillation_inline(tmp_path):
    _, samples, errors = run("reasoning-distillation", tmp_path, reasoning_format="inline")
    assert len(samples) == 3 and errors == []
    for sample in samples:
        assistant = sample["messages"][1]
        step = sample["steps"][0]
        assert set(assistant) == {"role", "content"}
        assert assistant["content"] == f"<think>\n{step['reasoning']}\n</think>\n\n{step['text']}"


def test_an_answer_without_reasoning_is_a_no_reasoning_record(tmp_path):
    # the same table without options.reasoning: the mock answers without thinking
    toml = "".join(line + "\n" for line in (REPO / "shaping.toml").read_text().splitlines()
                   if line.strip() not in ("[models.reasoner.options]", "reasoning = true"))
    message, errors = failed_run("reasoning-distillation", tmp_path, toml=toml)
    assert "every record failed" in message and "no_reasoning 3" in message
    assert [e["error"] for e in errors] == ["no_reasoning"] * 3


def test_a_bad_reasoning_format_stops_the_run(tmp_path):
    with pytest.raises(ShapingError, match="reasoning_format must be one of 'field', 'inline', got 'xml'"):
        run("reasoning-distillation", tmp_path, reasoning_format="xml")


def test_reasoning_left_in_the_text_is_split():
    split = reasoning.split_inline_think
    assert split("<think>\nfirst this\n</think>\n\nthe answer") == ("first this", "the answer")
    assert split("opened by the template</think>\n\nthe answer") == ("opened by the template", "the answer")
    assert split("no reasoning here") is None
    assert reasoning.inline(" r ", " a ") == "<think>\nr\n</think>\n\na"


# -- tool-use ------------------------------------------------------------------------------------

def check_exchange(sample):
    """user, then (assistant with tool_calls, one tool turn per call)+, then a final answer;
    every tool turn answers its call with what the real function returns."""
    messages = sample["messages"]
    assert messages[0]["role"] == "user"
    final = messages[-1]
    assert final["role"] == "assistant" and "tool_calls" not in final and final["content"].strip()
    i, rounds = 1, 0
    while i < len(messages) - 1:
        turn = messages[i]
        assert turn["role"] == "assistant" and turn["tool_calls"], turn
        for call in turn["tool_calls"]:
            i += 1
            answer = messages[i]
            assert answer["role"] == "tool" and answer["tool_call_id"] == call["id"]
            assert answer["name"] == call["function"]["name"]
            assert answer["content"] == tool_use.run_tool(call["function"]["name"], call["function"]["arguments"])
        i += 1
        rounds += 1
    assert rounds >= 1
    assert sample["tools"] == tool_use.TOOLS
    return rounds


def test_tool_use_samples_hold_the_whole_exchange(tmp_path):
    result, samples, errors = run("tool-use", tmp_path, limit=None)
    tasks = read_jsonl(REPO / "identity" / "tool_tasks.jsonl")
    assert errors == [] and [s["id"] for s in samples] == [t["id"] for t in tasks]
    for sample, task in zip(samples, tasks):
        rounds = check_exchange(sample)
        assert sample["messages"][0]["content"] == task["task"]
        assert sample["metadata"]["tool_rounds"] == rounds and sample["metadata"]["expected_tools"] == task["tools"]
        assert [s["params"]["tools"] for s in sample["steps"]] == [tool_use.TOOLS] * (rounds + 1)
        assert sample["steps"][0]["messages"][0]["role"] == "system"
    assert result.manifest.file_deps["tasks"].path == "identity/tool_tasks.jsonl"


def test_tool_results_are_the_real_functions_results(tmp_path):
    _, samples, errors = run("tool-use", tmp_path, limit=3, first_tool_choice="count_text")
    assert errors == [] and len(samples) == 3
    for sample in samples:
        check_exchange(sample)
        _, call_turn, tool_turn, final = sample["messages"]
        args = json.loads(call_turn["tool_calls"][0]["function"]["arguments"])
        counts = json.loads(tool_turn["content"])
        assert counts["words"] == len(args["text"].split()) and counts["characters"] == len(args["text"])
        assert counts == tool_use.count_text(**args)
        assert "Using the tool results count_text -> {" in final["content"]  # the mock quotes what it got
        first, second = sample["steps"]
        assert first["params"]["tool_choice"] == {"type": "function", "function": {"name": "count_text"}}
        assert "tool_choice" not in second["params"]  # later requests leave the choice to the model


def test_still_calling_tools_after_the_last_round_is_an_error(tmp_path):
    message, errors = failed_run("tool-use", tmp_path, limit=2, max_tool_rounds=0)
    assert [e["error"] for e in errors] == ["too_many_tool_rounds"] * 2
    assert "still calling tools after 0 rounds" in errors[0]["message"]


def test_an_answer_without_any_tool_is_a_no_tool_call_record(tmp_path):
    _, errors = failed_run("tool-use", tmp_path, limit=2, first_tool_choice="none")
    assert [e["error"] for e in errors] == ["no_tool_call"] * 2
    (tmp_path / "allowed").mkdir()
    _, samples, errors = run("tool-use", tmp_path / "allowed", limit=2, first_tool_choice="none",
                             require_tool_call=False)
    assert errors == [] and [m["role"] for m in samples[0]["messages"]] == ["user", "assistant"]


# -- the tools themselves ------------------------------------------------------------------------

@pytest.mark.parametrize("expression, value", [
    ("(1234 * 5678) - 91011", 6915641), ("17 * 3.45", 58.65), ("100 - 17 * 3.45", 41.35), ("0.1 + 0.2", 0.3),
    ("2 ** 10", 1024), ("-3 + 4 * 2", 5), ("7 / 2", 3.5), ("8 / 2", 4), ("17 // 5", 3), ("17 % 5", 2),
    ("15000 * 1.045 ** 6", 19533.9018727), (" ((2)) ", 2), ("2 ** -1", 0.5),
])
def test_calculator_does_arithmetic(expression, value):
    assert tool_use.calculate(expression) == pytest.approx(value)


@pytest.mark.parametrize("expression, why", [
    ("__import__('os').system('echo pwned')", "not Call"),
    ("open('/etc/passwd').read()", "not Call"),
    ("abs(-3)", "not Call"),
    ("x + 1", "not Name"),
    ("(1).__class__", "not Attribute"),
    ("'a' * 3", "not Constant"),
    ("True + 1", "not Constant"),
    ("[1, 2][0]", "not Subscript"),
    ("lambda: 1", "not Lambda"),
    ("1 if 2 else 3", "not IfExp"),
    ("2 < 3", "not Compare"),
    ("2 ^ 3", "write **"),
    ("2,340 * 2", "thousands separators"),
    ("import os", "not an arithmetic expression"),
    ("What is 18% of 2,340?", "not an arithmetic expression"),
    ("1 / 0", "division by zero"),
    ("9 ** 9 ** 9", "too large"),
    ("10.0 ** 400", "too large"),
    ("(-8) ** 0.5", "not a real number"),
    ("", "non-empty"),
    ("1 +" + " 1 +" * 200 + " 1", "longer than"),
])
def test_calculator_refuses_everything_but_arithmetic(expression, why):
    with pytest.raises(tool_use.ToolError, match=why.replace("*", r"\*")):
        tool_use.calculate(expression)


def test_convert_units():
    convert = tool_use.convert_units
    assert convert(42.195, "km", "mi") == {"value": pytest.approx(26.2187575), "unit": "mi"}
    assert convert(180, "C", "F") == {"value": 356, "unit": "F"}
    assert convert(72.5, "kg", "lb")["value"] == pytest.approx(159.835140084)
    assert convert(65, "mph", "km/h")["value"] == pytest.approx(104.60736)
    assert convert(3, "cup", "ml")["value"] == pytest.approx(709.7647095)
    assert convert(0, "K", "C")["value"] == pytest.approx(-273.15)
    with pytest.raises(tool_use.ToolError, match=r"cannot convert km \(length\) to kg \(mass\)"):
        convert(1, "km", "kg")
    with pytest.raises(tool_use.ToolError, match="only temperatures convert to temperatures"):
        convert(1, "C", "m")
    with pytest.raises(tool_use.ToolError, match="below absolute zero"):
        convert(-500, "C", "F")
    with pytest.raises(tool_use.ToolError, match="unknown unit 'parsec'"):
        convert(1, "parsec", "m")


def test_count_text():
    assert tool_use.count_text("strawberry", "r")["occurrences"] == 3
    assert tool_use.count_text("Mississippi", "SS")["occurrences"] == 2
    assert tool_use.count_text("The quick brown fox jumps over the lazy dog.") == {
        "characters": 44, "characters_without_spaces": 36, "words": 9, "lines": 1}


def test_run_tool_reports_bad_calls_as_errors_the_model_reads():
    run_tool = tool_use.run_tool
    assert run_tool("calculator", '{"expression": "6 * 7"}') == "42"
    assert json.loads(run_tool("convert_units", '{"value": 1, "from_unit": "mi", "to_unit": "km"}')) == \
        {"value": 1.609344, "unit": "km"}
    assert run_tool("calculator", '{"expression": "open(1)"}').startswith("Error: only numbers")
    assert run_tool("calculator", '{"expression": ').startswith("Error: the arguments are not valid JSON")
    assert run_tool("calculator", '{"expression": "2**20000"}').startswith("Error: the result cannot be written out")
    assert run_tool("calculator", '{"expr": "1"}') == \
        "Error: invalid arguments for calculator: 'expression' is a required property"
    assert run_tool("calculator", '{"expression": 7}') == \
        "Error: invalid arguments for calculator: expression: 7 is not of type 'string'"
    assert run_tool("convert_units", '{"value": 1, "from_unit": "km", "to_unit": "parsec"}').startswith(
        "Error: invalid arguments for convert_units: to_unit: 'parsec' is not one of")
    assert run_tool("calculator", "[1]").startswith("Error: invalid arguments for calculator: [1] is not of type")
    assert run_tool("shell", '{"cmd": "ls"}') == \
        "Error: there is no tool named 'shell'; the tools are: calculator, convert_units, count_text"


def test_the_tool_schemas_are_valid_and_match_the_functions():
    import inspect

    import jsonschema

    assert [t["function"]["name"] for t in tool_use.TOOLS] == list(tool_use.FUNCTIONS)
    for tool in tool_use.TOOLS:
        schema = tool["function"]["parameters"]
        jsonschema.Draft202012Validator.check_schema(schema)
        signature = inspect.signature(tool_use.FUNCTIONS[tool["function"]["name"]])
        assert list(schema["properties"]) == list(signature.parameters)
        assert schema["required"] == [p.name for p in signature.parameters.values() if p.default is p.empty]


# -- TRL takes the output as it is -----------------------------------------------------------------

#: renders every field the two pipelines write (tools, reasoning_content, tool_calls, tool turns),
#: with {% generation %} marks so TRL can train on the assistant turns only. It uses the fields'
#: presence (`is defined`) as real templates do, so a null put in by the loader would show.
TOOL_TEMPLATE = (
    "{%- if tools %}<|system|> tools : {% for t in tools %}{{ t | tojson }} {% endfor %}</s> {% endif -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "<|assistant|> {% generation %}"
    "{%- if m.reasoning_content is defined %}<think> {{ m.reasoning_content }} </think> {% endif -%}"
    "{{ m.content }}"
    "{%- if m.tool_calls is defined %}{% for c in m.tool_calls %} <tool_call> {{ c.function.name }} "
    "{{ c.function.arguments if c.function.arguments is string else c.function.arguments | tojson }}"
    " </tool_call>{% endfor %}{% endif %} </s>{% endgeneration %} "
    "{%- elif m.role == 'tool' -%}"
    "<|tool|> {{ m.tool_call_id }} {{ m.name }} {{ m.content }} </s> "
    "{%- else -%}"
    "<|{{ m.role }}|> {{ m.content }} </s> "
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif -%}"
)


@pytest.fixture(scope="module")
def tiny_tool_model(tmp_path_factory):
    pytest.importorskip("trl")
    from transformers import AutoConfig, AutoTokenizer

    folder = build_tiny_model(tmp_path_factory.mktemp("tiny-tool-llama"), chat_template=False)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = TOOL_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    config.max_position_embeddings = 4096  # the tool schemas alone are ~600 tokens of this word tokenizer
    config.save_pretrained(folder)
    return folder


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")  # TRL's own config
@pytest.mark.parametrize("name, attrs, columns", [
    ("reasoning-distillation", {}, {"id", "messages"}),
    ("reasoning-distillation", {"reasoning_format": "inline"}, {"id", "messages"}),
    ("tool-use", {}, {"id", "messages", "tools"}),
])
def test_trl_sft_trains_on_the_output_as_it_is(tmp_path, monkeypatch, tiny_tool_model, name, attrs, columns):
    for variable in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(variable, "1")
    monkeypatch.setenv("WANDB_DISABLED", "true")
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    result, samples, _ = run(name, tmp_path, limit=4, annotate=False, **attrs)
    assert all(set(s) == columns for s in samples)  # minimal output: nothing else
    dataset = datasets.load_dataset("json", data_files=str(result.paths.samples), split="train",
                                    cache_dir=str(tmp_path / "hf-datasets"))
    assert set(dataset.column_names) == columns and len(dataset) == 4

    tokenizer = AutoTokenizer.from_pretrained(tiny_tool_model)
    for row, sample in zip(dataset, samples):  # loading changed nothing the template sees
        assert row["messages"] == sample["messages"] and row.get("tools") == sample.get("tools")
        assert tokenizer.apply_chat_template(row["messages"], tools=row.get("tools"), tokenize=False) == \
            tokenizer.apply_chat_template(sample["messages"], tools=sample.get("tools"), tokenize=False)

    args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=2, per_device_train_batch_size=2,
                     max_length=4096, assistant_only_loss=True, report_to="none", save_strategy="no",
                     logging_steps=1, use_cpu=True, dataloader_num_workers=0, bf16=False, fp16=False)
    trainer = SFTTrainer(model=str(tiny_tool_model), args=args, train_dataset=dataset, processing_class=tokenizer)
    assert len(trainer.train_dataset) == 4  # none dropped as fully masked or unusable
    for example in trainer.train_dataset:
        labels = example["labels"]
        trained = sum(label != -100 for label in labels)
        assert 0 < trained < len(labels)  # the assistant turns, not the prompt, tools or tool results
    output = trainer.train()
    assert output.global_step == 2 and output.training_loss > 0
