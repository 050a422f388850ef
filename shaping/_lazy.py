"""Package namespaces whose names are imported on first use (PEP 562), so importing a package
imports none of its modules: no module importing `shaping.x.y` runs `shaping.x`'s whole tree
first, and nothing loops back into a module still being imported."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(namespace: dict[str, Any], exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` giving each name of `exports` (name -> module) when first asked."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {namespace['__name__']!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
