"""Structured output: ask for JSON of a given shape, check it, and ask again with the problem.

`model_request(..., response_model=Answer)` (a pydantic model) or `response_model={...}` (a JSON
schema) makes the dispatcher ask for JSON — through `response_format` where the provider
supports it, else with the schema appended to the prompt — then parse and validate the reply.
A reply that fails is sent back with the validation error, up to `max_repairs` times; every
attempt is a step. The answer's `parsed` holds the object (a model instance, or the decoded
JSON for a schema); a reply still wrong after the repairs is a failed response of type
`validation_error`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def schema_of(response_model: Any) -> dict[str, Any]:
    if isinstance(response_model, type) and issubclass(response_model, BaseModel):
        return response_model.model_json_schema()
    if isinstance(response_model, dict):
        return response_model
    raise TypeError(f"response_model must be a pydantic model class or a JSON schema dict, got {response_model!r:.80}")


def response_format(response_model: Any) -> dict[str, Any]:
    schema = schema_of(response_model)
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", str(schema.get("title", "response")))[:64] or "response"
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": False}}


def instruction(response_model: Any) -> str:
    """For providers without `response_format`: the shape asked for, in words."""
    return ("\n\nAnswer with JSON only (no prose around it), matching this JSON schema:\n"
            + json.dumps(schema_of(response_model), ensure_ascii=False))


def parse(response_model: Any, text: str) -> tuple[Any, str | None]:
    """(the parsed value, None) or (None, what is wrong, in one paragraph for the model)."""
    match = FENCE.match(text)
    body = match.group(1) if match else text.strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"The reply is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
    if isinstance(response_model, type) and issubclass(response_model, BaseModel):
        try:
            return response_model.model_validate(data), None
        except ValidationError as exc:
            problems = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}"
                        for e in exc.errors(include_url=False)]
            return None, "The JSON does not match the schema: " + "; ".join(problems) + "."
    problem = _check_schema(data, response_model)
    return (data, None) if problem is None else (None, f"The JSON does not match the schema: {problem}.")


def repair_prompt(problem: str) -> str:
    return f"{problem}\nReturn the whole corrected JSON, and nothing else."


def _check_schema(data: Any, schema: dict[str, Any], where: str = "(top level)") -> str | None:
    """A small structural check for plain JSON schemas: types, required keys, enums, bounds."""
    kinds = {"object": dict, "array": list, "string": str, "integer": int, "number": (int, float),
             "boolean": bool, "null": type(None)}
    kind = schema.get("type")
    if kind in kinds and (not isinstance(data, kinds[kind]) or (kind in ("integer", "number") and isinstance(data, bool))):
        return f"{where}: expected {kind}, got {type(data).__name__}"
    if "enum" in schema and data not in schema["enum"]:
        return f"{where}: expected one of {schema['enum']}, got {data!r}"
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        if "minimum" in schema and data < schema["minimum"]:
            return f"{where}: {data} is below the minimum {schema['minimum']}"
        if "maximum" in schema and data > schema["maximum"]:
            return f"{where}: {data} is above the maximum {schema['maximum']}"
    if isinstance(data, dict):
        for key in schema.get("required", []):
            if key not in data:
                return f"{where}: missing required key '{key}'"
        for key, sub in schema.get("properties", {}).items():
            if key in data and (problem := _check_schema(data[key], sub, key if where == "(top level)" else f"{where}.{key}")):
                return problem
    if isinstance(data, list):
        if len(data) < schema.get("minItems", 0):
            return f"{where}: expected at least {schema['minItems']} items, got {len(data)}"
        if "maxItems" in schema and len(data) > schema["maxItems"]:
            return f"{where}: expected at most {schema['maxItems']} items, got {len(data)}"
        for i, item in enumerate(data):
            if problem := _check_schema(item, schema.get("items", {}), f"{where}[{i}]"):
                return problem
    return None
