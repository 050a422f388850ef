"""The package's modules import on their own, and none imports back into a module that imports it."""

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "shaping"


def module_names() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__main__.py":  # runs the command line when imported
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def module_level_imports(name: str, known: set[str]) -> set[str]:
    """The package modules `name` imports when it is imported (top-level statements only: an import
    inside a function runs when the function does)."""
    path = PACKAGE.parent / (name.replace(".", "/") + ("/__init__.py" if (PACKAGE.parent / name.replace(".", "/")).is_dir() else ".py"))
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    # importing a.b.c imports a and a.b first
    expanded = set()
    for module in found:
        parts = module.split(".")
        expanded |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return {m for m in expanded if m in known and m != name}


def test_no_module_imports_back_into_what_imports_it():
    names = module_names()
    graph = {name: module_level_imports(name, set(names)) for name in names}
    graph["shaping"] -= {"shaping._version", "shaping._lazy"}  # the root imports only these
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
    assert graph["shaping"] == set(), "the package root imports nothing eagerly"


def test_each_module_imports_alone_in_a_fresh_interpreter():
    def alone(name):
        done = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=120)
        return name, done.returncode, done.stderr.strip().splitlines()[-1:] if done.returncode else []

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [r for r in pool.map(alone, module_names()) if r[1] != 0]
    assert failures == []


def test_the_local_and_the_ray_versions_fit_the_named_seams(tmp_path):
    """The dispatcher's cache, limits and transport: local and Ray versions alike."""
    from shaping.config import ModelConfig
    from shaping.dispatch.cache import RequestCache
    from shaping.dispatch.limits import RateLimits
    from shaping.dispatch.seams import AnswerCache, Limits, Transport
    from shaping.providers.http import Client
    from shaping.ray_executor import _RemoteCache, _RemoteLimits

    cache = RequestCache(tmp_path)
    try:
        assert isinstance(cache, AnswerCache)
    finally:
        cache.close()
    assert isinstance(_RemoteCache(None, {}), AnswerCache)
    config = ModelConfig(model="m", requests_per_minute=60)
    assert isinstance(RateLimits(config), Limits) and isinstance(_RemoteLimits(None, "m", config), Limits)
    assert isinstance(Client("http://127.0.0.1:9/v1/chat/completions", {}, 5.0), Transport)
    assert not isinstance(object(), AnswerCache) and not isinstance(object(), Limits)
