"""tool-use: a teacher model solves tasks with real tools, and the whole exchange is the sample.

The teacher is offered three local Python functions, described to it as JSON schemas (`TOOLS`,
OpenAI's function-tool shape):

    calculator      arithmetic only (+ - * / // % **, parentheses), evaluated by walking the
                    `ast` of the expression; never `eval`, names, calls or attributes
    convert_units   length, mass, volume, speed and temperature units
    count_text      characters, words and lines of a text, and how often a substring occurs

For each task in identity/tool_tasks.jsonl (`{id, task, tools}`, `tools` naming the ones the
task needs) the task loop is what a real agent does: send the conversation with `tools=TOOLS`;
for every tool call in the answer run the real function on the parsed arguments and append the
assistant turn (`as_message()`, with its `tool_calls`) and one `tool` turn per call
(`tool_call_id`, `name`, the result as JSON text); repeat until an answer calls no tool. Bad
JSON, arguments that do not fit the schema, an unknown tool or an input the tool refuses (a
non-arithmetic expression, incompatible units) come back to the model as a tool turn starting
"Error:", as real agents report them, and the model may try again.

Each sample is the exchange (user task, assistant turns with tool calls, tool results, the
final answer) with `tools` = the schemas offered, the shape TRL's SFTTrainer and OpenAI
fine-tuning take. The teacher's system prompt is not kept. Error records:
`too_many_tool_rounds` (still calling tools after `max_tool_rounds` rounds), `no_tool_call`
(answered without any tool while `require_tool_call` is set: such an answer teaches the
opposite of tool use), and `truncated` / `refusal` / ... for answers that are not usable.
`first_tool_choice` is sent as `tool_choice` with the first request only: "required" makes the
teacher call some tool before it answers, a tool's name that tool; later requests leave the
choice to the model (forcing it every time would never let it answer). Annotated samples say
`expected_tools`, `tools_called` (per round), `tool_rounds` and `tool_errors` in their metadata:
filter on `tool_errors` to keep only exchanges whose tools all ran.

On the offline mock the teacher calls the first tool offered (the calculator) with a sentence of
the task as its expression, so the tool turns are calculator errors: the error path, end to end.
Set `first_tool_choice = "count_text"` to see real results come back.

Run it:   isf pipeline run tool-use --limit 3
          python pipelines/tool_use.py --limit 3 --no-annotate -o /tmp/tool-use.jsonl
"""

import ast
import json
import math
import operator
from typing import Literal

import jsonschema

from shaping.pipeline import Pipeline, PipelineError, TrainingSample, model_request

SYSTEM = ("You are a careful assistant with tools. Use them for arithmetic, unit conversions and counting "
          "characters or words instead of working these out yourself, then give the result in a short answer.")


class ToolError(Exception):
    """An input the tool refuses; its message goes back to the model."""


# -- calculator ------------------------------------------------------------------------------

BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
          ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION = 500
MAX_RESULT_BITS = 100_000  # an integer power larger than this is refused rather than computed


def tidy(number: int | float) -> int | float:
    """A result as a person would read it: floats to 12 significant digits, whole ones as ints."""
    if isinstance(number, int):
        return number
    if not math.isfinite(number):
        raise ToolError("the result is not a finite number")
    number = float(f"{number:.12g}")
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def calculate(expression: str) -> int | float:
    """Evaluate an arithmetic expression: numbers, + - * / // % **, unary signs, parentheses."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("expression must be a non-empty string")
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"expression is longer than {MAX_EXPRESSION} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from None

    def value(node: ast.AST) -> int | float:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return node.value
        if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
            return UNARY[type(node.op)](value(node.operand))
        if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
            left, right = value(node.left), value(node.right)
            if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int):
                if right > 0 and max(abs(left).bit_length(), 1) * right > MAX_RESULT_BITS:
                    raise ToolError("the power is too large to compute")
            try:
                return BINARY[type(node.op)](left, right)
            except ZeroDivisionError:
                raise ToolError("division by zero") from None
            except OverflowError:
                raise ToolError("the result is too large") from None
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitXor):
            raise ToolError("'^' is not a power here: write ** (2 ** 10)")
        if isinstance(node, ast.Tuple):
            raise ToolError("write numbers without thousands separators (2340, not 2,340)")
        raise ToolError(f"only numbers and + - * / // % ** ( ) are allowed, not {type(node).__name__} "
                        f"({ast.unparse(node)[:60]!r})")

    result = value(tree.body)
    if isinstance(result, complex):  # (-8) ** 0.5
        raise ToolError("the result is not a real number")
    return tidy(result)


# -- unit converter ----------------------------------------------------------------------------

#: unit -> (quantity, factor to the quantity's base unit: m, kg, l, m/s)
UNITS = {
    "mm": ("length", 0.001), "cm": ("length", 0.01), "m": ("length", 1.0), "km": ("length", 1000.0),
    "in": ("length", 0.0254), "ft": ("length", 0.3048), "yd": ("length", 0.9144), "mi": ("length", 1609.344),
    "mg": ("mass", 1e-6), "g": ("mass", 0.001), "kg": ("mass", 1.0), "t": ("mass", 1000.0),
    "oz": ("mass", 0.028349523125), "lb": ("mass", 0.45359237),
    "ml": ("volume", 0.001), "l": ("volume", 1.0), "tsp": ("volume", 0.00492892159375),
    "tbsp": ("volume", 0.01478676478125), "fl_oz": ("volume", 0.0295735295625), "cup": ("volume", 0.2365882365),
    "gal": ("volume", 3.785411784),
    "m/s": ("speed", 1.0), "km/h": ("speed", 1 / 3.6), "mph": ("speed", 0.44704), "knot": ("speed", 1852 / 3600),
}
TEMPERATURES = ("C", "F", "K")


def to_kelvin(value: float, unit: str) -> float:
    return {"C": value + 273.15, "F": (value - 32) * 5 / 9 + 273.15, "K": value}[unit]


def from_kelvin(kelvin: float, unit: str) -> float:
    return {"C": kelvin - 273.15, "F": (kelvin - 273.15) * 9 / 5 + 32, "K": kelvin}[unit]


def convert_units(value: float, from_unit: str, to_unit: str) -> dict:
    """Convert `value` from one unit to another of the same quantity."""
    known = (*UNITS, *TEMPERATURES)
    for unit in (from_unit, to_unit):
        if unit not in known:
            raise ToolError(f"unknown unit {unit!r}; the units are: {', '.join(known)}")
    if from_unit in TEMPERATURES or to_unit in TEMPERATURES:
        if not (from_unit in TEMPERATURES and to_unit in TEMPERATURES):
            raise ToolError(f"cannot convert {from_unit} to {to_unit}: only temperatures convert to temperatures")
        kelvin = to_kelvin(value, from_unit)
        if kelvin < 0:
            raise ToolError(f"{value} {from_unit} is below absolute zero")
        return {"value": tidy(from_kelvin(kelvin, to_unit)), "unit": to_unit}
    (kind_from, factor_from), (kind_to, factor_to) = UNITS[from_unit], UNITS[to_unit]
    if kind_from != kind_to:
        raise ToolError(f"cannot convert {from_unit} ({kind_from}) to {to_unit} ({kind_to})")
    return {"value": tidy(value * factor_from / factor_to), "unit": to_unit}


# -- text counter ------------------------------------------------------------------------------

def count_text(text: str, find: str | None = None) -> dict:
    """Characters, characters without whitespace, words and lines of `text`; with `find`, how
    often it occurs in the text (case-insensitive, overlapping occurrences counted)."""
    counts = {"characters": len(text), "characters_without_spaces": sum(1 for c in text if not c.isspace()),
              "words": len(text.split()), "lines": len(text.splitlines()) or (1 if text else 0)}
    if find:
        haystack, needle = text.lower(), find.lower()
        counts["occurrences"] = sum(1 for i in range(len(haystack) - len(needle) + 1)
                                    if haystack.startswith(needle, i))
    return counts


# -- what the model sees, and running a call -------------------------------------------------------

def function_tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required,
                       "additionalProperties": False}}}


TOOLS = [
    function_tool(
        "calculator",
        "Evaluate an arithmetic expression exactly. Numbers, + - * / // % ** and parentheses only: "
        "no variables, functions or thousands separators. Returns the number.",
        {"expression": {"type": "string", "description": "the expression, e.g. (17 * 3.45) - 12 / 4"}},
        ["expression"]),
    function_tool(
        "convert_units",
        "Convert a value between units of length, mass, volume, speed or temperature. "
        "Returns {value, unit}.",
        {"value": {"type": "number", "description": "the amount to convert"},
         "from_unit": {"type": "string", "enum": [*UNITS, *TEMPERATURES], "description": "the unit it is in"},
         "to_unit": {"type": "string", "enum": [*UNITS, *TEMPERATURES], "description": "the unit wanted"}},
        ["value", "from_unit", "to_unit"]),
    function_tool(
        "count_text",
        "Count the characters, characters without whitespace, words and lines of a text and, "
        "given `find`, how often that substring occurs in it (case-insensitive). Returns the counts.",
        {"text": {"type": "string", "description": "the text to count, exactly as given"},
         "find": {"type": "string", "description": "optional: a letter, word or substring to count"}},
        ["text"]),
]
FUNCTIONS = {"calculator": calculate, "convert_units": convert_units, "count_text": count_text}
SCHEMAS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}


def run_tool(name: str, arguments: str) -> str:
    """What the tool turn for one call says: the function's result as JSON text, or a line
    starting "Error:" when the call cannot be run as made."""
    if name not in FUNCTIONS:
        return f"Error: there is no tool named {name!r}; the tools are: {', '.join(FUNCTIONS)}"
    try:
        args = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError as exc:
        return f"Error: the arguments are not valid JSON ({exc.msg} at column {exc.colno})"
    try:
        jsonschema.validate(args, SCHEMAS[name])
    except jsonschema.ValidationError as exc:
        where = "/".join(map(str, exc.absolute_path))
        return f"Error: invalid arguments for {name}: {(where + ': ') if where else ''}{exc.message}"
    try:
        result = FUNCTIONS[name](**args)
    except ToolError as exc:
        return f"Error: {exc}"
    try:
        return json.dumps(result, ensure_ascii=False)
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit, say
        return f"Error: the result cannot be written out: {exc}"


class ToolUse(Pipeline):
    name = "tool-use"
    tasks = Pipeline.file_dep("identity/tool_tasks.jsonl")
    teacher = Pipeline.model_dep("teacher")
    system: str | None = SYSTEM  # sent to the teacher, not kept in the sample; None sends none
    max_tool_rounds = 5        # answers with tool calls per task; one more is too_many_tool_rounds
    require_tool_call = True   # an answer that used no tool at all is a no_tool_call error record
    #: tool_choice of the first request only: "required", or a tool's name; None leaves it to the model
    first_tool_choice: Literal["auto", "required", "calculator", "convert_units", "count_text"] | None = None

    def run(self):
        records = [json.loads(line) for line in self.tasks.read().splitlines() if line.strip()]
        return self.run_task(self.solve, records=records)

    def solve(self, record):
        conversation = [{"role": "user", "content": record["task"]}]
        system = [{"role": "system", "content": self.system}] if self.system else []
        called, errors = [], 0
        while True:
            choice = None if called else self.first_tool_choice
            if isinstance(choice, str) and choice in FUNCTIONS:
                choice = {"type": "function", "function": {"name": choice}}
            answer = yield model_request(system + conversation, model=self.teacher, tools=TOOLS,
                                         tool_choice=choice, metadata={"round": len(called)})
            conversation.append(answer.as_message())  # raises for refused, filtered, cut-off, empty
            if not answer.tool_calls:
                break
            if len(called) == self.max_tool_rounds:
                raise PipelineError(f"still calling tools after {self.max_tool_rounds} rounds",
                                    error_type="too_many_tool_rounds")
            called.append([call.function.name for call in answer.tool_calls])
            for call in answer.tool_calls:
                result = run_tool(call.function.name, call.function.arguments)
                errors += result.startswith("Error:")
                conversation.append({"role": "tool", "tool_call_id": call.id, "name": call.function.name,
                                     "content": result})
        if self.require_tool_call and not called:
            raise PipelineError("the teacher answered without calling any tool", error_type="no_tool_call")
        return TrainingSample(
            id=record["id"],
            messages=conversation,
            tools=TOOLS,
            metadata={"expected_tools": record.get("tools", []), "tools_called": called,
                      "tool_rounds": len(called), "tool_errors": errors},
        )


if __name__ == "__main__":
    ToolUse().execute()
