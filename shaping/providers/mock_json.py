"""Deterministic JSON for the mock provider, shaped by a request's JSON schema.

When a request asks for structured output (`response_format` of type `json_schema`), the mock
answers with an instance of that schema: objects get every property, arrays a few items,
integers and numbers a value within their bounds, enums one of their values, and strings a
sentence taken from the prompt. The same conversation always gets the same JSON.
"""

from __future__ import annotations

import random
import re
from typing import Any

SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def prompt_sentences(text: str) -> list[str]:
    parts = [p.strip(" -*#\t") for p in SENTENCE.split(text)]
    return [p for p in parts if len(p.split()) >= 3] or [text.strip() or "mock text"]


def schema_instance(schema: dict[str, Any], seed: str, text: str) -> Any:
    rng = random.Random(seed)
    sentences = prompt_sentences(text)
    counter = iter(range(10**9))

    def resolve(node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = schema
            for part in ref[2:].split("/"):
                target = target[part]
            return resolve(target)
        return node

    def make(node: dict[str, Any]) -> Any:
        node = resolve(node)
        if "enum" in node:
            return rng.choice(node["enum"])
        if "const" in node:
            return node["const"]
        for key in ("anyOf", "oneOf"):
            if key in node:
                options = [o for o in node[key] if resolve(o).get("type") != "null"] or node[key]
                return make(options[0])
        if "allOf" in node:
            return make(node["allOf"][0])
        kind = node.get("type", "object" if "properties" in node else "string")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind == "object":
            return {name: make(sub) for name, sub in node.get("properties", {}).items()}
        if kind == "array":
            low = node.get("minItems", 1)
            high = max(low, min(node.get("maxItems", 3), 3))
            return [make(node.get("items", {})) for _ in range(rng.randint(low, high))]
        if kind == "integer":
            low = node.get("minimum", node.get("exclusiveMinimum", -1) + 1 if "exclusiveMinimum" in node else 0)
            high = node.get("maximum", node.get("exclusiveMaximum", low + 11) - 1 if "exclusiveMaximum" in node else low + 10)
            return rng.randint(int(low), int(high))
        if kind == "number":
            low, high = node.get("minimum", 0.0), node.get("maximum", 1.0)
            return round(rng.uniform(low, high), 3)
        if kind == "boolean":
            return rng.random() < 0.5
        if kind == "null":
            return None
        return sentences[(rng.randrange(len(sentences)) + next(counter)) % len(sentences)]

    return make(schema)
