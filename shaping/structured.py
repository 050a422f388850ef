"""Structured output: ask for JSON of a given shape, check it, and ask again with the problem.

`model_request(..., response_model=Answer)` (a pydantic model) or `response_model={...}` (a JSON
schema) makes the dispatcher ask for JSON — through `response_format` where the provider
supports it, and with the schema appended to the prompt wherever the endpoint may ignore
`response_format` — then parse and validate the reply (pydantic for a class, `jsonschema` for
a dict). Every repair turn carries the schema again.
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
        check_schema(response_model)
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
    """(the parsed value, None) or (None, what is wrong, in one paragraph for the model).

    A pydantic class validates with its own rules; a schema dict is checked by `jsonschema`
    (`$ref`s, formats, every keyword of its draft)."""
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
    problems = [_describe(e) for e in _validator(response_model).iter_errors(data)]
    if problems:
        return None, "The JSON does not match the schema: " + "; ".join(sorted(problems)[:5]) + "."
    return data, None


def repair_prompt(problem: str, response_model: Any) -> str:
    """The turn that sends a wrong reply back: what is wrong, and the schema again."""
    return (f"{problem}\nReturn the whole corrected JSON, and nothing else. It must match this JSON schema:\n"
            + json.dumps(schema_of(response_model), ensure_ascii=False))


#: schema (as canonical JSON) -> its checked validator: a pipeline asks with the same few
#: schemas thousands of times
_VALIDATORS: dict[str, Any] = {}


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ValueError when `schema` is not a valid JSON schema."""
    _validator(schema)


def _validator(schema: dict[str, Any]) -> Any:
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _VALIDATORS.get(key)
    if validator is None:
        import jsonschema

        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"response_model is not a valid JSON schema: {exc.message}") from exc
        registry = _registry(schema, cls)
        validator = _VALIDATORS[key] = cls(schema, format_checker=cls.FORMAT_CHECKER, registry=registry)
    return validator


def _registry(schema: dict[str, Any], cls: Any) -> Any:
    """The schema (and the JSON Schema metaschemas) as `referencing` holds them: every `$ref` in
    it must point inside it, checked here, before any request is paid for; nothing is fetched
    from elsewhere. `referencing` walks only the keywords that hold subschemas in the schema's
    draft, and follows each `$id` (`id` in draft 4) as the draft says."""
    import referencing.jsonschema
    from jsonschema_specifications import REGISTRY as METASCHEMAS  # jsonschema's own dependency
    from referencing.exceptions import Unresolvable

    spec = referencing.jsonschema.specification_with(cls.META_SCHEMA.get("$id") or cls.META_SCHEMA.get("id", ""))
    root = spec.create_resource(schema)
    base = root.id() or ""
    registry = METASCHEMAS.with_resource(base, root).crawl()

    def follow(resource: Any, resolver: Any) -> None:
        ref = resource.contents.get("$ref") if isinstance(resource.contents, dict) else None
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable as exc:
                raise ValueError(f"response_model: $ref {ref!r} points to nothing in the schema (a $ref is "
                                 f"followed within the schema only: {type(exc).__name__})") from None
        for sub in resource.subresources():
            follow(sub, resolver.in_subresource(sub))

    follow(root, registry.resolver(base_uri=base))
    return registry


def _describe(error: Any) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return f"{where or '(top level)'}: {error.message}"
