"""Request bodies checked against the official SDKs' own parameter types (TypedDicts).

pydantic validates the values; TypedDicts accept unknown keys, so `unknown_keys` walks the
types too and reports any key the SDK does not define (a field the real API would refuse).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import TypeAdapter
from typing_extensions import is_typeddict


def _options(tp: Any) -> list[Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return [o for arg in typing.get_args(tp) for o in _options(arg)]
    if origin in (typing.Required, typing.NotRequired, typing.Annotated):
        return _options(typing.get_args(tp)[0])
    return [tp]


def unknown_keys(value: Any, tp: Any, where: str = "body") -> list[str] | None:
    """Keys of `value` that no member of type `tp` defines ([] when some member takes it
    whole); None when no member describes the value at all (a wrong role, say)."""
    best: list[str] | None = None
    for option in _options(tp):
        problems = _check(value, option, where)
        if problems is None:
            continue
        if not problems:
            return []
        if best is None or len(problems) < len(best):
            best = problems
    return best


def _check(value: Any, tp: Any, where: str) -> list[str] | None:
    """None: this type does not describe this value at all; else the unknown keys."""
    if is_typeddict(tp):
        if not isinstance(value, dict):
            return None
        hints = typing.get_type_hints(tp, include_extras=True)
        problems = [f"{where}.{k}" for k in value if k not in hints]
        for key, item in value.items():
            if key in hints:
                inner = unknown_keys(item, hints[key], f"{where}.{key}")
                if inner is None:
                    return None
                problems += inner
        return problems
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return [] if value in typing.get_args(tp) else None
    if origin in (list, Iterable, typing.Iterable):
        if not isinstance(value, list):
            return None
        (item_type,) = typing.get_args(tp) or (Any,)
        problems = []
        for i, item in enumerate(value):
            inner = unknown_keys(item, item_type, f"{where}[{i}]")
            if inner is None:
                return None
            problems += inner
        return problems
    if origin is dict or tp is dict:
        return [] if isinstance(value, dict) else None
    if tp is str:
        return [] if isinstance(value, str) else None
    return []


def check_body(body: dict[str, Any], params_type: Any) -> None:
    """Raise AssertionError unless `body` is valid for the SDK's params type, with no unknown key."""
    TypeAdapter(params_type).validate_python(body)
    unknown = unknown_keys(body, params_type)
    assert unknown == [], f"keys the SDK does not define: {unknown}"


def openai_params_type() -> Any:
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

    return CompletionCreateParamsNonStreaming


def anthropic_params_type() -> Any:
    from anthropic.types.message_create_params import MessageCreateParamsNonStreaming

    return MessageCreateParamsNonStreaming
