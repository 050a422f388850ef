"""`isf models [NAME...] [--check] [--json]`: the models of shaping.toml, and whether they answer.

Each model: its provider (a preset such as together or ollama shown as one), the model id,
the host (its base_url(s), or "local"), the key variable and whether it is set (never its
value), and its prices with where they come from. `--check` sends each model one tiny request
through its provider, all at once, and reports the latency or the error; a model whose key
variable is not set is reported without sending. A transformers model is checked only when
named (`isf models --check NAME`): checking it loads its weights.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from shaping.cli.app import out, project_of, user_errors

#: the request a check sends: one user turn, an answer of a few tokens
CHECK_PROMPT = "Reply with the word OK."
CHECK_MAX_TOKENS = 8
#: how long to let the HTTP client's thread settle after the checks
CLOSE_GRACE_S = 0.1


def describe(project: Any, name: str) -> dict[str, Any]:
    """What `isf models` shows of model `name`: as much as can be known, and the first problem
    that would stop it from running (None when there is none)."""
    from shaping.errors import ConfigError
    from shaping.prices import prices_for
    from shaping.providers.registry import (check_model, preset_for, provider_class, resolve_base_url,
                                            resolve_provider_name)

    config = project.model(name)
    row: dict[str, Any] = {"name": name, "provider": config.provider, "inferred": not config.provider,
                           "preset_of": None, "model": config.model, "host": None, "key": None,
                           "prices": None, "problem": None}
    try:
        provider = row["provider"] = resolve_provider_name(name, config)
        preset = preset_for(provider)
        row["preset_of"] = preset.provider if preset is not None else None
        env = config.api_key_env or (preset.api_key_env if preset is not None else None)
        if env:
            row["key"] = {"env": env, "set": bool(os.environ.get(env, "").strip())}
        cls = provider_class(name, provider)
        default = getattr(cls, "default_base_url", None)
        if isinstance(default, str):  # an HTTP API
            base_url = resolve_base_url(config)
            if config.base_urls or base_url or preset is None:
                row["host"] = list(config.base_urls or [base_url or default])
            # else: a preset that needs a base_url and has none; check_model says so below
        else:
            row["host"] = "local"
        prices = prices_for(name, config, project.config.prices)
        if prices is not None:
            row["prices"] = {"input": prices.input, "output": prices.output, "cached_input": prices.cached_input,
                             "cache_write": prices.cache_write, "batch_input": prices.batch_input,
                             "batch_output": prices.batch_output, "source": prices.source}
        check_model(name, config)
    except ConfigError as exc:
        row["problem"] = str(exc)
    return row


def _scrub(text: str, env: str | None) -> str:
    """`text` without the value of the key variable (nor its recognisable start)."""
    key = os.environ.get(env, "").strip() if env else ""
    if key:
        text = text.replace(key, "***")
        if len(key) >= 12:
            text = text.replace(key[:8], "***")
    return text


async def check_model_answers(project: Any, name: str, timeout_s: float, named: bool) -> dict[str, Any]:
    """Send model `name` one tiny request: {"ok", "latency_s", "error", "skipped", ...}."""
    import asyncio

    import anyio

    from shaping.errors import ConfigError
    from shaping.requests import LLMRequest

    result: dict[str, Any] = {"ok": False, "latency_s": None, "error": None, "skipped": None}
    env = None
    try:
        model = project.resolved(name)
        env = model.config.api_key_env
        if model.provider_cls.loads_weights and not named:
            result["skipped"] = (f"checking loads the model's weights: name it to check it "
                                 f"(isf models --check {name})")
            return result
        provider = model.create_provider()  # a key variable not set: one line, nothing sent
    except ConfigError as exc:
        result["error"] = _scrub(str(exc), env)
        return result
    params = {k: v for k, v in provider.config.params.items() if k not in ("max_tokens", "max_completion_tokens")}
    limit = "max_completion_tokens" if "max_completion_tokens" in provider.config.params else "max_tokens"
    started = time.monotonic()
    try:
        # asyncio's timeout, not anyio's: the HTTP client ends a cancelled request with a
        # CancelledError of its own, which anyio's cancel scopes do not take for theirs
        async with asyncio.timeout(timeout_s):
            await provider.open()
            opened = time.monotonic()
            request = LLMRequest(messages=[{"role": "user", "content": CHECK_PROMPT}],
                                 params=provider.prepare_params({**params, limit: CHECK_MAX_TOKENS}))
            (response,) = await provider.generate_batch([request])
            result["latency_s"] = round(time.monotonic() - opened, 4)
            if opened - started >= 0.5:
                result["open_s"] = round(opened - started, 3)
    except TimeoutError:
        result["error"] = f"timeout: no answer within --timeout {timeout_s:g} s"
        return result
    except ConfigError as exc:
        result["error"] = _scrub(str(exc), env)
        return result
    except Exception as exc:  # a provider's own failure: one line, like a run would record it
        result["error"] = _scrub(f"{type(exc).__name__}: {' '.join(str(exc).split())}", env)
        return result
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await provider.aclose()
            except Exception:
                pass
    if response.error is not None:
        result["error"] = _scrub(f"{response.error.type}: {response.error.message}", env)
        result["latency_s"] = None
    else:
        result["ok"] = True
        result["finish_reason"] = response.finish_reason
        result["served_model"] = response.model
    return result


def run_checks(project: Any, names: list[str], timeout_s: float, named: bool) -> dict[str, dict[str, Any]]:
    import anyio

    results: dict[str, dict[str, Any]] = {}

    async def main() -> None:
        async def one(name: str) -> None:
            results[name] = await check_model_answers(project, name, timeout_s, named)

        async with anyio.create_task_group() as tg:
            for name in names:
                tg.start_soon(one, name)
        # the HTTP client's runtime thread may still be letting go of a failed connection's
        # Python objects: exiting under it aborts the interpreter now and then (SIGABRT)
        await anyio.sleep(CLOSE_GRACE_S)

    anyio.run(main)
    missing = {"ok": False, "latency_s": None, "error": "the check ended without an answer", "skipped": None}
    return {name: results.get(name, missing) for name in names}


def _provider_cell(row: dict[str, Any]) -> str:
    provider = row["provider"] or "?"
    notes = [f"preset over {row['preset_of']}"] if row["preset_of"] else []
    if row["inferred"] and row["provider"]:
        notes.append("from the model id")
    return f"{provider} ({', '.join(notes)})" if notes else provider


def _host_cell(row: dict[str, Any]) -> str:
    host = row["host"]
    if host is None:
        return "?"
    return host if isinstance(host, str) else ", ".join(host)


def _key_cell(row: dict[str, Any]) -> Text:
    key = row["key"]
    if key is None:
        return Text("-", style="dim")
    return Text.assemble(key["env"], " ", ("set", "green") if key["set"] else ("unset", "yellow"))


def _prices_cell(row: dict[str, Any]) -> str:
    p = row["prices"]
    if p is None:
        return "-"
    if not p["input"] and not p["output"]:
        return f"free ({p['source']})"
    return f"${_usd(p['input'])} in / ${_usd(p['output'])} out per M tokens ({p['source']})"


def _usd(amount: float) -> str:
    return f"{amount:.2f}" if round(amount, 2) == amount else f"{amount:g}"


def _check_line(name: str, width: int, check: dict[str, Any]) -> Text:
    label = f"{name:<{width}}  "
    if check["skipped"]:
        return Text.assemble(label, ("skipped", "yellow"), f": {check['skipped']}")
    if check["ok"]:
        opened = f" (opening took {check['open_s']:.2f} s)" if check.get("open_s") else ""
        return Text.assemble(label, ("ok", "green"), f" in {check['latency_s']:.3f} s{opened}")
    return Text.assemble(label, ("error", "bold red"), f": {check['error']}")


def show_providers(as_json: bool) -> None:
    from shaping.providers.registry import catalogue

    rows = catalogue()
    if as_json:
        click.echo(json.dumps({"providers": rows}, indent=2))
        return
    table = Table(box=None, padding=(0, 2), pad_edge=False, header_style="bold")
    for column in ("provider", "from", "serves"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["from"], row["serves"])
    out.print(table)


@click.command("models")
@click.argument("names", nargs=-1)
@click.option("--check", is_flag=True, help="Send each model one tiny request; report latency or the error.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds each check may take.")
@click.option("--providers", "list_providers", is_flag=True,
              help="List the providers a model's `provider` may name, and where each comes from.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
@user_errors
def models(ctx: click.Context, names: tuple[str, ...], check: bool, timeout_s: float, list_providers: bool,
           as_json: bool) -> None:
    """The models of shaping.toml (or only NAMES): provider, host, key variable, prices.

    With --check, each answers one tiny request (all at once). The exit status is 1 when a
    model cannot run (its problem is shown) or a check failed. A transformers model is checked
    only when named, as checking loads it. With --providers, the providers instead: installed
    packages' (the `shaping.providers` entry points, shaping's own among them) and the named
    hosts."""
    if list_providers:
        if names or check:
            raise click.UsageError("--providers lists providers: it takes no model NAMES and no --check")
        show_providers(as_json)
        return
    project = project_of(ctx)
    wanted = list(dict.fromkeys(names)) or list(project.config.models)
    rows = [describe(project, name) for name in wanted]
    checks = run_checks(project, wanted, timeout_s, named=bool(names)) if check else {}
    for row in rows:
        if check:
            row["check"] = checks[row["name"]]
    failed = [name for name, c in checks.items() if not c["ok"] and not c["skipped"]]
    failed += [row["name"] for row in rows if row["problem"] and row["name"] not in failed]
    if as_json:
        click.echo(json.dumps({"models": rows}, indent=2))
        sys.exit(1 if failed else 0)
    if not rows:
        out.print("no models: shaping.toml has no [models.NAME] tables")
        return
    table = Table(box=None, padding=(0, 2), pad_edge=False, header_style="bold")
    for column in ("model", "provider", "model id", "host", "key", "prices"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], _provider_cell(row), row["model"], _host_cell(row), _key_cell(row),
                      _prices_cell(row))
    out.print(table)
    problems = [row for row in rows if row["problem"] and not check]
    for row in problems:
        out.print(Text.assemble((f"{row['name']}: ", "bold"), ("problem", "red"), f": {row['problem']}"),
                  soft_wrap=True)
    if check:
        out.print()
        width = max(len(name) for name in checks)
        for name, result in checks.items():
            out.print(_check_line(name, width, result), soft_wrap=True)
        if failed:
            out.print(Text(f"{len(failed)} of {len(checks)} checks failed", style="bold red"))
    sys.exit(1 if failed else 0)
