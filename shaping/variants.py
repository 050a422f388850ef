"""Prompt A/B: a pipeline declares variants of a prompt; each record gets one, deterministically.

    class Coding(Pipeline):
        variants = {"plain": "Answer the question.",
                    "step_by_step": "Think it through step by step, then answer."}

        def task(self, record):
            name, system = self.variant(record)   # e.g. ("plain", "Answer the question.")
            ...

A variant's value is anything (a system prompt, a template, a dict of settings). A record's
variant is a function of its id and the variant names alone (rendezvous hashing over sha256:
the same in every run and every process, whatever PYTHONHASHSEED says); adding a variant moves
only the records the new one takes, removing one moves only its own records. Records without
an "id" are known by their position, as their samples and error records are: in a task,
`self.variant(record)` (or `self.variant()`) goes by the id the run knows the task's own record
by, so a record that is a string or a number gets the variant its samples are labelled with;
any other string or number is taken as an id (see `variant_for`).

The run puts the name in each sample's `metadata["variant"]` (annotated output); a failed
record's variant is worked out again from its error record's id, so `isf pipeline validate` and
`isf pipeline report` compare the variants side by side (shaping.quality.variants).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from shaping.errors import PipelineDefinitionError, TaskContractError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_variants(cls: type) -> None:
    """`variants` is None or a non-empty dict whose keys are short names."""
    variants = getattr(cls, "variants", None)
    if variants is None:
        return
    where = f"pipeline '{cls.name}': variants"
    if not isinstance(variants, dict) or not variants:
        raise PipelineDefinitionError(f"{where} must be a dict of at least one name and its value, such as "
                                      f'{{"plain": "...", "step_by_step": "..."}}; got {variants!r:.80}')
    for name in variants:
        if not isinstance(name, str) or len(name) > 64 or not NAME.match(name):
            raise PipelineDefinitionError(f"{where}: name {name!r} must be letters, digits, '.', '_' or '-' "
                                          f"(at most 64; it goes into each sample's metadata)")


def variant_names(cls: type) -> tuple[str, ...]:
    """The declared variant names, in declared order (none: an empty tuple)."""
    return tuple(getattr(cls, "variants", None) or ())


def variant_of(record_id: Any, names: Any) -> str:
    """The variant of the record with this id among `names`: the name whose sha256 with the id
    is highest (rendezvous hashing)."""
    names = list(names)
    if not names:
        raise ValueError("variant_of: no variant names")
    key = str(record_id).encode()
    return max(names, key=lambda name: (hashlib.sha256(name.encode() + b"\0" + key).digest(), name))


def _is_own(record: Any, now: Any) -> bool:
    """Whether `record` is the record the task works on (the same object, or an equal value)."""
    if now is None:
        return False
    if record is now.record:
        return True
    try:
        return bool(record == now.record)
    except Exception:  # noqa: BLE001 - a value that cannot be compared is not the record
        return False


def variant_for(pipeline: Any, record: Any = None) -> tuple[str, Any]:
    """`Pipeline.variant(record)`: (name, value) of a record's variant, by one rule:

    - left out, or the record the task works on (the same object or an equal value): that
      record's id as the run knows it (its "id", else its position), the id its samples'
      `metadata["variant"]` is worked out from;
    - a dict with an "id": that id;
    - a string or a number (not the task's own record): taken as an id;
    - anything else (a dict without an "id" that is not the task's own record, say): an error.
    """
    from shaping.record_hooks import current

    names = variant_names(type(pipeline))
    if not names:
        raise TaskContractError(f"pipeline '{pipeline.name}': variant() needs variants = {{name: prompt, ...}} "
                                f"on the class")
    now = current()
    if record is None or _is_own(record, now):
        if now is None:
            raise TaskContractError(f"pipeline '{pipeline.name}': variant() outside a task needs the record "
                                    f"or its id, got {record!r:.60}")
        key = now.record_id
    elif isinstance(record, dict) and record.get("id") is not None:
        key = str(record["id"])
    elif isinstance(record, (str, int)) and not isinstance(record, bool):
        key = str(record)
    else:
        where = "outside a task" if now is None else "for a record other than the task's own"
        raise TaskContractError(f"pipeline '{pipeline.name}': variant() {where} needs the record's id, or a "
                                f"record with an \"id\" (one without is known by its position), got {record!r:.60}")
    name = variant_of(key, names)
    return name, pipeline.variants[name]
