"""An export pushed to the Hugging Face Hub as a dataset repository, with a card made from the
run's manifest. Everything goes through `huggingface_hub`: its endpoint (`HF_ENDPOINT`) and its
token (`HF_TOKEN`, or what `hf auth login` saved), which is never read, printed or written here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shaping._version import __version__
from shaping.errors import ShapingError
from shaping.export import ExportResult, require_hf

SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(count: int) -> str:
    return next((label for limit, label in SIZES if count < limit), "n>100M")


def repo_files(result: ExportResult) -> dict[str, Path]:
    """Where each exported file goes in the repository: under data/."""
    if result.path.is_dir():
        return {f"data/{p.relative_to(result.path).as_posix()}": p for p in result.files()}
    return {f"data/{result.path.name}": result.path}


def data_files(result: ExportResult) -> str:
    """The pattern the card's `configs` gives the Hub and `load_dataset(repo)` for the data."""
    return "data/*.arrow" if result.path.is_dir() else f"data/{result.path.name}"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def card_text(name: str, manifest: Any, result: ExportResult) -> str:
    """The README.md: YAML front matter (configs, size, tags) and what the data was made from."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(
        pretty_name=name, size_categories=[size_category(result.exported)], task_categories=["text-generation"],
        tags=["synthetic", "shaping", result.fmt],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": data_files(result)}]}],
    )
    skipped = "; ".join(f"{n} {reason}" for reason, n in sorted(result.skipped.items())) or "none"
    rows = [("format", f"{result.fmt} (reasoning: {result.reasoning})"),
            ("samples exported", result.exported), ("left out", skipped)]
    models = []
    if manifest is None:
        rows.append(("provenance", "unknown: the output has no readable manifest"))
    else:
        errors = ", ".join(f"{kind} {n}" for kind, n in sorted(manifest.counts.errors.items())) or "none"
        commit = manifest.git.commit or f"unknown ({manifest.git.note or 'not a git repository'})"
        rows += [("records in the run", manifest.counts.records), ("samples in the run", manifest.counts.samples),
                 ("failed records", errors),
                 ("pipeline source sha256", f"`{manifest.pipeline_source_sha256}`"),
                 ("git commit", f"`{commit}`" + (" (uncommitted changes)" if manifest.git.dirty else "")),
                 ("made", manifest.completed_at.isoformat()),
                 ("annotated run", "yes" if manifest.annotated else "no"),
                 ("shaping version", f"{manifest.shaping_version} (exported with {__version__})")]
        if manifest.limit is not None:
            rows.append(("partial run", f"--limit {manifest.limit}"))
        if getattr(manifest, "stopped", None):
            rows.append(("stopped early", manifest.stopped))
        seen = {}
        for state in manifest.model_deps.values():
            seen.setdefault(state.name, state)
        models = [f"| {_cell(s.name)} | {_cell(s.provider)} | {_cell(s.model)} |" for s in seen.values()]
    body = [f"# {name}", "",
            f"Training data made by the [shaping](https://pypi.org/project/shaping/) pipeline `{name}` "
            f"and exported with `isf pipeline export {name} --format {result.fmt}`.", "",
            "| | |", "|---|---|", *(f"| {key} | {_cell(value)} |" for key, value in rows), ""]
    if models:
        body += ["## Models", "", "| name | provider | model |", "|---|---|---|", *models, ""]
    return str(DatasetCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)))


def check_push(repo_id: str) -> None:
    """Refuse, before anything is written, a push that cannot work: a repository id the Hub
    would refuse, or no token."""
    require_hf("--push-to-hub", ("huggingface_hub",))
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise ShapingError(f"--push-to-hub {repo_id}: {str(exc).strip().splitlines()[0]}") from exc
    if get_token() is None:
        raise ShapingError("--push-to-hub needs a Hugging Face token: set HF_TOKEN (or run `hf auth login`)")


def push(result: ExportResult, card: str, repo_id: str, private: bool, name: str) -> str:
    """Create the dataset repository (if need be) and commit the export and its card in one
    commit. Returns the repository's URL. Any failure is one line, with no token in it."""
    check_push(repo_id)
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi()
    files = repo_files(result)
    operations = [CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8"))]
    operations += [CommitOperationAdd(path_in_repo=where, path_or_fileobj=str(local)) for where, local in files.items()]
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
        # what an earlier push left under data/ goes in the same commit: the card's data pattern
        # would take it in (old shards beside new ones)
        stale = [f for f in api.list_repo_files(repo_id, repo_type="dataset") if f.startswith("data/") and f not in files]
        operations += [CommitOperationDelete(path_in_repo=path) for path in stale]
        api.create_commit(repo_id, operations=operations, repo_type="dataset",
                          commit_message=f"isf pipeline export {name} --format {result.fmt}")
    except Exception as exc:  # noqa: BLE001 - HTTP, network, offline mode, a repo id it refuses: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ShapingError(f"push to {repo_id} failed: {first}") from exc
    return str(url)
