"""Run parameters: the settings a pipeline declares, overridden per run with `--set KEY=VALUE`.

A pipeline's parameters are its public class attributes with a simple value, the way a
dataclass's fields are its annotated attributes:

    class HonestyDataset(Pipeline):
        mode: Literal["model", "template"] = "model"   # typed by the annotation
        batch_size = 5                                 # int, from the default
        reward_distribution = {-2: 0.2, 2: 0.8}        # dict[int, float]
        topic: str | None = None                       # None or text
        SYSTEM = "..."                                 # UPPER_CASE: a constant, not a parameter
        cache_dir: ClassVar[str] = "x"                 # ClassVar: not a parameter
        _seen = 0                                      # private: not a parameter

- defined on the pipeline class or a base of it below `Pipeline` (Pipeline's own settings,
  `name`, `annotated`, `workers`, `dedupe`, `max_cost_usd`, `quality`..., are not parameters:
  the run flags set those);
- a value of a simple type (str, int, float, bool, None, list, tuple, dict), or any value
  with an annotation pydantic can check; dependencies, methods and properties never are, nor
  an attribute annotated with a type pydantic has no schema for (`helper: Helper = Helper()`,
  `list[Helper]`): that is an object of the pipeline's own, not a setting;
- typed by the annotation when there is one, else by the default: `5` is an int, `0.5` a
  float, `"x"` text, `[1, 2]` a list of ints, `{"a": 0.5}` a dict of str to float; `None`
  without an annotation takes any value (JSON when it parses as JSON, else the text).

`--set KEY=VALUE` parses VALUE by that type: integers, numbers, `true`/`false` (also yes/no,
on/off, 1/0), text as it is, JSON for lists and dicts (a list also takes comma-separated
values), and `none`/`null` where the type allows None. `true`/`false` are refused where the
type has no bool in it (`batch_size=true` is an error, never 1), and nan and infinity
everywhere (the manifest records JSON, which has neither). A run records every parameter's
value in its manifest (`params`, a set as a sorted list; and `params_set`: the names set for
that run); `isf pipeline status` says STALE (`changed_params`) while the output was made with
values other than those the class declares.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Union

from pydantic import PydanticSchemaGenerationError, TypeAdapter, ValidationError
from pydantic_core import to_jsonable_python

from shaping.errors import PipelineDefinitionError, ShapingError

#: the types whose values are parameters without an annotation
SIMPLE = (str, int, float, bool, type(None), list, tuple, dict)
#: words that mean None where a parameter's type allows it
NONE_WORDS = ("none", "null")
#: what Pipeline sets on each instance: never parameters
INSTANCE_ATTRS = {"project", "limit"}
#: Pipeline's own settings that have a run flag of their own
RUN_FLAGS = {"workers": "--workers", "annotated": "--annotate/--no-annotate", "max_cost_usd": "--max-cost"}


class ParamError(ShapingError):
    """A `--set` the pipeline cannot take: an unknown name or a value of the wrong type."""


@dataclass(frozen=True)
class Param:
    """One parameter: its name, type (an annotation or the one inferred from the default) and
    default, and the class that declares it."""

    name: str
    type: Any
    default: Any
    owner: str

    @property
    def adapter(self) -> TypeAdapter:
        return _adapter(self.type)

    def label(self) -> str:
        """The type as `isf pipeline list --params` shows it: int, str | None, 'a' | 'b'..."""
        return type_label(self.type)

    def shown_default(self, width: int = 40) -> str:
        return short_repr(self.default, width)

    def summary(self) -> str:
        """`batch_size (int, 5)`: how an error line lists a parameter."""
        return f"{self.name} ({self.label()}, {self.shown_default(24)})"

    def validate(self, value: Any, where: str) -> Any:
        """`value` (already a Python value) checked and converted to the parameter's type."""
        if _has_bool(value) and not _takes_bool(self.type):  # True would pass as 1
            raise ParamError(f"{where}: expected {expectation(self.type)}, got {short_repr(value, 60)}")
        try:
            checked = self.adapter.validate_python(value)
        except ValidationError as exc:
            if _constraint(exc) and not isinstance(value, (dict, list, tuple)):
                raise ParamError(f"{where}: {short_repr(value, 60)} {_bound(exc)}") from None
            raise ParamError(f"{where}: expected {expectation(self.type)}, got {short_repr(value, 60)}"
                             f"{_detail(exc) if isinstance(value, (dict, list, tuple)) else ''}") from exc
        return _finite(checked, where)

    def parse(self, raw: str) -> Any:
        """The value of `--set NAME=raw`, by the parameter's type; ParamError says what it expected."""
        where = f"--set {self.name}={short_text(raw)}"
        kind = self.type
        if _allows_none(kind) and raw.strip().lower() in NONE_WORDS:
            return None
        if kind is Any:
            try:
                return _finite(json.loads(raw), where)
            except ValueError:
                return raw
        candidates: list[Any] = [raw]
        try:
            parsed_json = json.loads(raw)
        except ValueError:
            parsed_json = raw
        if not isinstance(parsed_json, str):
            candidates.append(parsed_json)
        if _is_sequence(kind) and not raw.lstrip().startswith("["):
            candidates.append([part.strip() for part in raw.split(",")] if raw.strip() else [])
        last: ValidationError | None = None
        takes_bool = _takes_bool(kind)
        for candidate in candidates:
            if not takes_bool and _has_bool(candidate):  # JSON true would pass as 1
                continue
            try:
                value = self.adapter.validate_python(candidate)
            except ValidationError as exc:
                last = exc
                continue
            return _finite(value, where)
        structured = isinstance(parsed_json, (dict, list)) or (_is_sequence(kind) and len(candidates) > 1)
        if last is not None and _constraint(last) and not structured:
            raise ParamError(f"{where}: {_bound(last)}")
        detail = _detail(last) if last is not None and structured else ""
        raise ParamError(f"{where}: expected {expectation(kind)}{detail}")


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, dict):
        return any(_has_bool(k) or _has_bool(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_bool(v) for v in value)
    return False


def _takes_bool(kind: Any) -> bool:
    """Whether `kind` names bool (or Any) anywhere: where it does not, a bool is refused rather
    than taken as 1 or 0."""
    kind = _strip(kind)
    if kind is Any or kind is bool:
        return True
    origin = typing.get_origin(kind)
    if origin is Literal:
        return any(isinstance(a, bool) for a in _args(kind))
    if origin is None:  # a class: numbers and text take no bool; anything else (a model, a bare
        return kind not in (int, float, str, bytes, type(None), None)  # dict) may have one inside
    return any(_takes_bool(a) for a in _args(kind) if a is not Ellipsis)


def _finite(value: Any, where: str) -> Any:
    """`value`, unless it holds nan or infinity: the manifest records JSON, which has neither."""
    if _non_finite(value):
        raise ParamError(f"{where}: should be a finite number (nan and infinity cannot be recorded)")
    return value


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_non_finite(v) for v in value)
    return False


_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(kind: Any) -> TypeAdapter:
    try:
        return _ADAPTERS[kind]
    except (KeyError, TypeError):
        pass
    adapter = TypeAdapter(kind)
    try:
        _ADAPTERS[kind] = adapter
    except TypeError:  # an unhashable annotation
        pass
    return adapter


#: pydantic error types that only say "not of this type": the expectation says it better
PLAIN_ERRORS = {"int_parsing", "int_type", "int_from_float", "float_parsing", "float_type", "bool_parsing",
                "bool_type", "string_type", "literal_error", "dict_type", "list_type", "tuple_type", "set_type",
                "none_required", "is_instance_of"}


def _detail(exc: ValidationError) -> str:
    first = exc.errors()[0]
    parts = [str(p) for p in first["loc"]]
    if len(parts) >= 2 and parts[-1] == "[key]":
        parts[-2:] = [f"key {parts[-2]!r}"]
    where = ".".join(parts)
    return f" ({where + ': ' if where else ''}{first['msg']})"


def _bound(exc: ValidationError) -> str:
    """A failed bound or length, as `should be greater than or equal to 1`."""
    msg = exc.errors()[0]["msg"]
    return "should be " + msg[len("Input should be "):] if msg.startswith("Input should be ") else msg


def _constraint(exc: ValidationError) -> bool:
    """Whether the error says more than the type: a bound, a length, a pattern."""
    return exc.errors()[0]["type"] not in PLAIN_ERRORS


# -- types ------------------------------------------------------------------------------------

def _args(kind: Any) -> tuple[Any, ...]:
    return typing.get_args(kind)


def _is_union(kind: Any) -> bool:
    return typing.get_origin(kind) in (Union, types.UnionType)


def _allows_none(kind: Any) -> bool:
    kind = _strip(kind)
    if kind is Any or kind is None or kind is type(None):
        return True
    if _is_union(kind):
        return any(_allows_none(a) for a in _args(kind))
    if typing.get_origin(kind) is Literal:
        return None in _args(kind)
    return False


def _is_sequence(kind: Any) -> bool:
    kind = _strip(kind)
    if _is_union(kind):
        return any(_is_sequence(a) for a in _args(kind) if a is not type(None))
    origin = typing.get_origin(kind) or kind
    return origin in (list, tuple, set, frozenset)


def _common(values: Any) -> Any:
    """The one simple type all `values` share (int and float make float), else Any."""
    kinds = {type(v) for v in values}
    if kinds == {int, float}:
        return float
    if len(kinds) == 1 and next(iter(kinds)) in (str, int, float, bool):
        return next(iter(kinds))
    return Any


def infer_type(value: Any) -> Any:
    """The type a default gives an unannotated parameter."""
    if value is None:
        return Any
    if isinstance(value, list):
        return list[_common(value)]
    if isinstance(value, tuple):
        return tuple[_common(value), ...]
    if isinstance(value, dict):
        return dict[_common(value.keys()), _common(value.values())]
    return type(value)


def _strip(kind: Any) -> Any:
    """`Annotated[int, Field(ge=1)]` -> int (the constraint is pydantic's to check and say)."""
    while typing.get_origin(kind) is typing.Annotated:
        kind = _args(kind)[0]
    return kind


def type_label(kind: Any) -> str:
    kind = _strip(kind)
    if kind is Any:
        return "any"
    if kind is type(None) or kind is None:
        return "None"
    origin = typing.get_origin(kind)
    if origin is Literal:
        return " | ".join(repr(a) for a in _args(kind))
    if _is_union(kind):
        return " | ".join(type_label(a) for a in _args(kind))
    if origin is not None:
        args = _args(kind)
        inner = ", ".join("..." if a is Ellipsis else type_label(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{inner}]" if args else name
    if isinstance(kind, type):
        return kind.__name__
    return str(kind).replace("typing.", "")


def expectation(kind: Any) -> str:
    """What a value of `kind` is, for an error: `an integer`, `one of 'a', 'b'`..."""
    kind = _strip(kind)
    if kind is Any:
        return "any value"
    if kind is type(None) or kind is None:
        return "none"
    origin = typing.get_origin(kind)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in _args(kind))
    if _is_union(kind):
        parts = [expectation(a) for a in _args(kind)]
        return ", or ".join(parts) if len(parts) == 2 else ", ".join(parts[:-1]) + ", or " + parts[-1]
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "text"}
    if kind in simple:
        return simple[kind]
    if origin in (list, tuple, set, frozenset):
        return f"a JSON list or comma-separated values ({type_label(kind)})"
    if origin is dict or kind is dict:
        return f'a JSON object ({type_label(kind)}), e.g. {{"key": value}}'
    if kind in (list, tuple):
        return "a JSON list or comma-separated values"
    return f"a value of type {type_label(kind)}"


def _repr(value: Any) -> str:
    """repr, with the items of sets in a fixed order (not the process's hash order)."""
    if isinstance(value, (set, frozenset)) and value:
        items = "{" + ", ".join(_repr(v) for v in sorted(value, key=lambda v: _sort_key(jsonable(v)))) + "}"
        return items if isinstance(value, set) else f"frozenset({items})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_repr(k)}: {_repr(v)}" for k, v in value.items()) + "}"
    if type(value) in (list, tuple):
        inner = ", ".join(_repr(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    return repr(value)


def short_repr(value: Any, width: int = 40) -> str:
    text = _repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def short_text(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


# -- what a pipeline declares ---------------------------------------------------------------------

def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation.replace("typing.", "").startswith("ClassVar")
    return annotation is ClassVar or typing.get_origin(annotation) is ClassVar


def _annotations(klass: type) -> dict[str, Any]:
    """The class's own annotations, evaluated where that works: all at once when every one
    reads (`from __future__ import annotations` makes them text); else each stays text, read
    alone by `_evaluate` when it is a parameter's (a private attribute's annotation that names
    a TYPE_CHECKING import, say, is never read)."""
    try:
        return inspect.get_annotations(klass, eval_str=True)
    except Exception:  # noqa: BLE001 - one unreadable annotation: read the parameters' one by one
        return inspect.get_annotations(klass)


def _evaluate(attr: str, annotation: Any, klass: type) -> Any:
    """One annotation, evaluated as `inspect.get_annotations(klass, eval_str=True)` would (the
    module's globals, the class's namespace)."""
    if not isinstance(annotation, str):
        return annotation

    def holder() -> None: ...

    holder.__annotations__ = {attr: annotation}
    module = sys.modules.get(klass.__module__)
    return inspect.get_annotations(holder, globals=dict(vars(module)) if module is not None else {},
                                   locals=dict(vars(klass)), eval_str=True)[attr]


def _shown(annotation: Any) -> str:
    return repr(annotation) if isinstance(annotation, str) else type_label(annotation)


def _first_line(text: str) -> str:
    return short_text(text.strip().splitlines()[0] if text.strip() else text, 200)


def declared_params(cls: type, base: type) -> dict[str, Param]:
    """The parameters of pipeline class `cls` (a subclass of `base`, Pipeline), by name, in the
    order they are declared (a base's first). Raises PipelineDefinitionError for an annotation
    that cannot be read or a default its annotation does not allow."""
    reserved = {attr for klass in base.__mro__ for attr in [*vars(klass), *inspect.get_annotations(klass)]}
    reserved |= INSTANCE_ATTRS
    methods = {attr for attr in dir(base) if not attr.startswith("_")
               and isinstance(inspect.getattr_static(base, attr), (types.FunctionType, classmethod))}
    where = f"pipeline '{getattr(cls, 'name', cls.__qualname__)}'"
    found: dict[str, Param] = {}
    for klass in reversed(cls.__mro__):
        if klass in base.__mro__:
            continue
        annotations = _annotations(klass)
        for attr, value in vars(klass).items():
            if attr in methods and type(value) in SIMPLE:  # meant as a parameter, it would hide the method
                raise PipelineDefinitionError(f"{where}: {attr} is a method of Pipeline; give the "
                                              f"parameter another name")
            if attr.startswith("_") or attr.isupper() or attr in reserved:
                continue
            annotation = annotations.get(attr, inspect.Parameter.empty)
            if annotation is not inspect.Parameter.empty and _is_classvar(annotation):
                found.pop(attr, None)
                continue
            if annotation is inspect.Parameter.empty and attr in found and type(value) in SIMPLE:
                kind = found[attr].type  # a new default for a base's parameter keeps its type
                try:
                    _adapter(kind).validate_python(value)
                except ValidationError as exc:
                    raise PipelineDefinitionError(
                        f"{where}: parameter {attr}: its default {short_repr(value)} is not "
                        f"{expectation(kind)}{_detail(exc)}") from exc
            elif annotation is inspect.Parameter.empty:
                if type(value) not in SIMPLE:
                    found.pop(attr, None)  # a method or dependency hides a base's parameter
                    continue
                kind = infer_type(value)
            else:
                if callable(value) and not isinstance(value, type) or isinstance(value, (property, classmethod,
                                                                                          staticmethod)):
                    continue
                try:
                    kind = _evaluate(attr, annotation, klass)
                    adapter = _adapter(kind)
                except PydanticSchemaGenerationError:  # a type pydantic cannot check: not a parameter
                    found.pop(attr, None)
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure is the annotation's
                    raise PipelineDefinitionError(
                        f"{where}: parameter {attr}: cannot read its annotation {_shown(annotation)} "
                        f"({type(exc).__name__}: {_first_line(str(exc))})") from exc
                try:
                    adapter.validate_python(value)
                except ValidationError as exc:
                    raise PipelineDefinitionError(
                        f"{where}: parameter {attr}: its default {short_repr(value)} is not "
                        f"{expectation(kind)}{_detail(exc)}") from exc
            found[attr] = Param(attr, kind, value, klass.__qualname__)
    return found


def _sort_key(value: Any) -> tuple[int, Any]:
    """Numbers by value, then text, then anything else by its JSON."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True, default=str))


def _sorted(items: Any) -> list[Any]:
    return sorted((_ordered(v) for v in items), key=lambda v: _sort_key(jsonable(v)))


def _ordered(value: Any) -> Any:
    """`value` with every set and frozenset a sorted list: a set's own order is its hash order,
    which PYTHONHASHSEED changes from one process to the next."""
    if isinstance(value, (set, frozenset)):
        return _sorted(value)
    if isinstance(value, dict):
        return {k: _ordered(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_ordered(v) for v in value]
    return value


def jsonable(value: Any) -> Any:
    """A parameter's value as the manifest records it (JSON: dict keys become strings, a set a
    sorted list, so the record is the same in every process)."""
    return json.loads(json.dumps(to_jsonable_python(_ordered(value), fallback=str)))


def same_value(a: Any, b: Any) -> bool:
    """Whether two parameter values are the same once recorded as JSON (1 and 1.0 are; a list
    recorded for a set is compared as a set's items, whatever order it was written in)."""
    return jsonable(_as_sets(a, b)) == jsonable(_as_sets(b, a))


def _as_sets(value: Any, other: Any) -> Any:
    """`value` with its items sorted wherever `other` holds a set (a record written before sets
    were sorted holds a list in some hash order there)."""
    if isinstance(other, (set, frozenset)) or isinstance(value, (set, frozenset)):
        return _sorted(value) if isinstance(value, (list, tuple, set, frozenset)) else value
    if isinstance(value, dict) and isinstance(other, dict):
        keys = {str(k): v for k, v in other.items()}
        return {k: _as_sets(v, keys.get(str(k))) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and isinstance(other, (list, tuple)) and len(value) == len(other):
        return [_as_sets(v, o) for v, o in zip(value, other)]
    return value


# -- --set --------------------------------------------------------------------------------------

def describe_params(params: dict[str, Param]) -> str:
    if not params:
        return "it declares none (a parameter is a simple public class attribute; see `isf pipeline list --params`)"
    return "its parameters: " + ", ".join(p.summary() for p in sorted(params.values(), key=lambda p: p.name))


def unknown(cls: Any, key: str) -> ParamError:
    """The one line for `--set key=...` when `cls` has no parameter `key`."""
    params = cls.parameters()
    head = f"--set: pipeline '{cls.name}' has no parameter '{key}'"
    why = ""
    if key in RUN_FLAGS:
        why = f" ({key} is a run setting: use {RUN_FLAGS[key]})"
    elif key in cls.file_deps:
        why = f" ({key} is its file_dep {cls.file_deps[key].relpath}, not a parameter)"
    elif key in cls.model_deps:
        why = f" ({key} is its model_dep {cls.model_deps[key].model_name!r}, not a parameter)"
    elif key in cls.dataset_deps:
        why = f" ({key} is its dataset_dep {cls.dataset_deps[key].path}, not a parameter)"
    elif key and hasattr(cls, key):
        why = f" ({key} is a setting of the class, not a parameter)"
    else:
        close = difflib.get_close_matches(key, list(params), n=1)
        if close:
            why = f" (did you mean '{close[0]}'?)"
    return ParamError(f"{head}{why}; {describe_params(params)}")


def parse_assignments(cls: Any, assignments: typing.Iterable[str]) -> dict[str, Any]:
    """`["batch_size=3", "mode=template"]` -> {"batch_size": 3, "mode": "template"}, typed by
    `cls`'s parameters; a later assignment of the same name wins. Raises ParamError (one line)."""
    params = cls.parameters()
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParamError(f"--set {short_text(item)}: expected KEY=VALUE (e.g. --set batch_size=3); "
                             f"{describe_params(params)}")
        if key not in params:
            raise unknown(cls, key)
        values[key] = params[key].parse(raw)
    return values
