"""Data sets read through the `datasets` library (`Pipeline.dataset_dep`): where one comes from,
which revision that is, and its records, streamed.

Where: a hub dataset ("allenai/WildChat-1M") or a local path: a folder of parquet / jsonl / json /
arrow / csv files, a `save_to_disk` folder, or one such file. A path that exists under the project
root, or starts with '/', './', '../' or '~', is local; any other `name` or `owner/name` is a hub
repository. shaping.toml's `[datasets]` table points a name somewhere else (a local copy, a
mirror) for every pipeline of the project, for runs and status alike:

    [datasets]
    "allenai/WildChat-1M" = "data/wildchat-sample"

Which revision (what the manifest records and staleness compares):
- hub: the commit sha. A sha given as `revision=` is used as is (nothing to resolve). A branch
  (default "main") is resolved once per process: online by fetching the dataset card at that
  branch (one request; it also records the branch in the local hub cache), with
  HF_HUB_OFFLINE=1 from the local hub cache alone, never the network.
- local: "sha256:" + one hash over the files' names, sizes and contents (hidden files and folders
  skipped). Content hashes are remembered by (size, mtime) in training/.cache/dataset-hashes.json,
  so an unchanged folder of gigabytes is not read again by every `isf pipeline status`.

Offline (HF_HUB_OFFLINE=1), a hub dataset is read from its snapshot in the local hub cache
(`hf download allenai/WildChat-1M --repo-type dataset` puts it there); not there is one line
saying so. Nothing here imports `datasets` until records are read.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL = "pip install 'shaping[hf]'"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
SUFFIX_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".arrow": "arrow", ".csv": "csv"}
#: how long a hub revision is checked for, online, before the local cache is used
HUB_TIMEOUT_S = 10.0
MEMO_FILE = "dataset-hashes.json"


class DatasetProblem(Exception):
    """Why a data set cannot be resolved or read; the message completes `<dataset> ...`."""


class NotOnHub(DatasetProblem):
    pass


@dataclass(frozen=True)
class Source:
    """Where a data set is read from: a hub repository or a local path."""

    kind: str       # "hub" | "local"
    location: str   # the repository id, or the absolute path
    shown: str      # the repository id, or the path relative to the project root
    #: for a hub name, the local path it would have been (not there)
    looked_for: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.shown}"


def locate(path: str, root: Path, overrides: Mapping[str, str] | None = None) -> Source:
    """Where `path` (as declared) is read from, after the project's `[datasets]` table."""
    target = (overrides or {}).get(path, path)
    expanded = Path(target).expanduser()
    local = expanded if expanded.is_absolute() else root / expanded
    if (target.startswith(("/", "./", "../", "~")) or expanded.is_absolute() or local.exists()
            or not HUB_ID.match(target)):
        local = local.resolve()
        try:
            shown = local.relative_to(root).as_posix()
        except ValueError:
            shown = str(local)
        return Source("local", str(local), shown)
    return Source("hub", target, target, str(local))


def offline() -> bool:
    """HF_HUB_OFFLINE (or HF_DATASETS_OFFLINE, TRANSFORMERS_OFFLINE), read now, not at import."""
    return any(os.environ.get(var, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


# -- revisions ---------------------------------------------------------------------------------

#: (repo, revision, offline) -> commit sha or the problem: one look-up per data set per process
_hub_revisions: dict[tuple[str, str, bool], str | DatasetProblem] = {}
#: (path, size, mtime_ns) -> sha256, for this process (and the memo file, for the next ones)
_file_hashes: dict[tuple[str, int, int], str] = {}


def resolve_revision(source: Source, revision: str | None, memo_dir: Path | None = None,
                     create_memo: bool = False) -> str:
    """The revision the data set has now: a hub commit sha, or "sha256:..." of local files.
    Local content hashes are remembered in `memo_dir` where it exists (a run creates it)."""
    if source.kind == "local":
        return local_fingerprint(Path(source.location), memo_dir, create_memo)
    try:
        return hub_revision(source.location, revision)
    except NotOnHub as exc:
        if source.looked_for is None:
            raise
        raise DatasetProblem(f"is neither a local path (looked for {source.looked_for}) nor a dataset on "
                             f"the Hugging Face Hub (if it is private, log in: `hf auth login`)") from exc


def hub_revision(repo_id: str, revision: str | None) -> str:
    wanted = revision or "main"
    if COMMIT.match(wanted):
        return wanted
    key = (repo_id, wanted, offline())
    if key not in _hub_revisions:
        try:
            _hub_revisions[key] = _lookup_hub_revision(repo_id, wanted)
        except DatasetProblem as exc:
            _hub_revisions[key] = exc
    found = _hub_revisions[key]
    if isinstance(found, DatasetProblem):
        raise found
    return found


def _hub():
    try:
        import huggingface_hub
    except ImportError as exc:
        raise DatasetProblem(f"is on the Hugging Face Hub: finding its revision needs huggingface_hub: {INSTALL}") from exc
    return huggingface_hub


def _lookup_hub_revision(repo_id: str, revision: str) -> str:
    hub = _hub()
    from huggingface_hub import errors

    at = "" if revision == "main" else f" (revision {revision!r})"
    if offline():
        return Path(cached_snapshot(repo_id, revision)).name
    try:
        card = hub.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=revision,
                                   etag_timeout=HUB_TIMEOUT_S)
        return Path(card).parent.name  # .../snapshots/<commit>/README.md
    except errors.LocalEntryNotFoundError as exc:  # the hub is out of reach and the card not cached
        raise DatasetProblem(f"{at}: the Hugging Face Hub cannot be reached and the dataset is not in "
                             f"the local hub cache") from exc
    except errors.RevisionNotFoundError as exc:
        raise DatasetProblem(f"has no revision {revision!r} on the Hugging Face Hub") from exc
    except errors.GatedRepoError as exc:
        raise DatasetProblem("is gated on the Hugging Face Hub: accept its terms on the dataset page and "
                             "log in (`hf auth login`, or set HF_TOKEN)") from exc
    except errors.RepositoryNotFoundError as exc:
        raise NotOnHub("is not on the Hugging Face Hub (if it is private, log in: `hf auth login`)") from exc
    except errors.EntryNotFoundError:  # no dataset card: ask for the commit itself
        pass
    except (OSError, ValueError) as exc:
        raise DatasetProblem(f"{at}: cannot be looked up on the Hugging Face Hub: {_first_line(exc)}") from exc
    try:
        return hub.HfApi().dataset_info(repo_id, revision=revision, timeout=HUB_TIMEOUT_S).sha
    except (OSError, ValueError) as exc:
        raise DatasetProblem(f"{at}: cannot be looked up on the Hugging Face Hub: {_first_line(exc)}") from exc


def cached_snapshot(repo_id: str, revision: str) -> str:
    """The dataset's folder in the local hub cache at `revision` (a branch or a commit)."""
    hub = _hub()
    try:
        return hub.snapshot_download(repo_id, repo_type="dataset", revision=revision, local_files_only=True)
    except (OSError, ValueError) as exc:
        from huggingface_hub import constants

        at = "" if revision == "main" else f" at revision {revision!r}"
        raise DatasetProblem(
            f"is not in the local hub cache{at} ({constants.HF_HUB_CACHE}) and HF_HUB_OFFLINE=1 forbids "
            f"fetching it: download it once with `hf download {repo_id} --repo-type dataset`, or point "
            f"shaping.toml's [datasets] table at a local copy") from exc


def data_files_of(path: Path) -> list[Path]:
    """The files a local data set is made of: hidden files and folders (.git, .cache) aside."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetProblem(f"not found (looked for {path})")
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(path).parts))


def local_fingerprint(path: Path, memo_dir: Path | None = None, create_memo: bool = False) -> str:
    """One sha256 over the files' relative names, sizes and content hashes."""
    files = data_files_of(path)
    if not files:
        raise DatasetProblem(f"has no files (looked in {path})")
    memo = _Memo(memo_dir, create_memo)
    digest = hashlib.sha256()
    for file in files:
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        sha = _file_hashes.get(key) or memo.get(key)
        if sha is None:
            from shaping.output import sha256_file

            sha = sha256_file(file)
        _file_hashes[key] = sha
        memo.put(key, sha)
        name = file.name if file == path else file.relative_to(path).as_posix()
        digest.update(f"{name}\0{stat.st_size}\0{sha}\n".encode())
    memo.save()
    return "sha256:" + digest.hexdigest()


class _Memo:
    """Content hashes of large files, by path, size and mtime, kept between commands in the
    project's cache folder (only where that folder exists: status creates nothing)."""

    def __init__(self, folder: Path | None, create: bool = False) -> None:
        if folder is not None and create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:
                pass
        self.path = folder / MEMO_FILE if folder is not None and folder.is_dir() else None
        self.entries: dict[str, list[Any]] = {}
        self.changed = False
        if self.path is not None:
            try:
                loaded = json.loads(self.path.read_text(encoding="utf-8"))
                self.entries = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.entries = {}

    def get(self, key: tuple[str, int, int]) -> str | None:
        entry = self.entries.get(key[0])
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == [key[1], key[2]]:
            return entry[2]
        return None

    def put(self, key: tuple[str, int, int], sha: str) -> None:
        if self.path is not None and self.get(key) != sha:
            self.entries[key[0]] = [key[1], key[2], sha]
            self.changed = True

    def save(self) -> None:
        if self.path is None or not self.changed:
            return
        temp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        try:
            temp.write_text(json.dumps(self.entries), encoding="utf-8")
            os.replace(temp, self.path)
        except OSError:  # a memo only: the next command hashes again
            temp.unlink(missing_ok=True)


# -- records -----------------------------------------------------------------------------------

def import_datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise DatasetProblem(f"cannot be read without the `datasets` library: {INSTALL}") from exc
    return datasets


def open_dataset(source: Source, *, split: str, revision: str, streaming: bool,
                 data_files: Any, columns: list[str] | None) -> Any:
    """The `datasets` object to iterate (an IterableDataset when streaming), its columns checked.
    `revision` is the resolved one: a hub dataset is read at exactly that commit. Streamed
    parquet (WildChat's format) reads only the columns asked for from the files."""
    ds = import_datasets()
    if source.kind == "hub" and offline():  # the local hub cache's snapshot, read as local files
        folder = Path(cached_snapshot(source.location, revision))
        load = _local_loader(ds, folder, split, streaming, data_files, cached=source.location)
    elif source.kind == "hub":
        def load(**extra: Any) -> Any:
            return _guard(lambda: ds.load_dataset(source.location, split=split, revision=revision,
                                                  streaming=streaming, data_files=data_files, **extra), split)
    else:
        load = _local_loader(ds, Path(source.location), split, streaming, data_files)
    data = load()
    if columns:
        known = data.column_names
        if known is None:
            return data  # checked and selected on the first record (see iterate)
        check_columns(columns, known)
        if streaming and getattr(data.info, "builder_name", None) == "parquet" and getattr(load, "pushdown", True):
            return load(columns=list(columns))  # lazy: nothing was read yet
        return data.select_columns(columns)
    return data


def check_columns(columns: list[str], known: Any) -> None:
    missing = [c for c in columns if c not in known]
    if missing:
        raise DatasetProblem(f"has no column {', '.join(map(repr, missing))} (its columns: {', '.join(known)})")


def _local_loader(ds: Any, path: Path, split: str, streaming: bool, data_files: Any,
                  cached: str | None = None) -> Any:
    """A function loading the local data set (its keyword arguments go to `load_dataset`)."""
    if not path.exists():
        raise DatasetProblem(f"not found (looked for {path})")
    if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
        if data_files is not None:
            raise DatasetProblem("is a save_to_disk folder: data_files does not apply to it")

        def from_disk(**extra: Any) -> Any:
            data = _guard(lambda: ds.load_from_disk(str(path)), split)
            if isinstance(data, ds.DatasetDict):
                if split not in data:
                    raise DatasetProblem(f"has no split {split!r} (its splits: {', '.join(data)})")
                data = data[split]
            elif data.split is not None and str(data.split) != split:
                raise DatasetProblem(f"has no split {split!r} (it was saved as split {str(data.split)!r})")
            return data.to_iterable_dataset() if streaming else data

        from_disk.pushdown = False  # arrow files, memory-mapped: select_columns costs nothing
        return from_disk
    if path.is_file():
        builder = SUFFIX_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DatasetProblem(f"is a file of unknown format (expected {', '.join(SUFFIX_BUILDERS)})")
        return lambda **extra: _guard(lambda: ds.load_dataset(builder, data_files={split: str(path)}, split=split,
                                                              streaming=streaming, **extra), split)
    return lambda **extra: _guard(lambda: ds.load_dataset(str(path), split=split, streaming=streaming,
                                                          data_files=data_files, **extra), split, cached)


def _guard(load: Any, split: str, cached: str | None = None) -> Any:
    """Run a `datasets` load; what goes wrong is one line."""
    try:
        return load()
    except DatasetProblem:
        raise
    except ValueError as exc:
        text = _first_line(exc)
        if "split" in text.lower():
            found = re.search(r"(?:Available splits:|Should be one of) \[([^\]]*)\]", text)
            known = f" (its splits: {found.group(1).replace(chr(39), '')})" if found else ""
            raise DatasetProblem(f"has no split {split!r}{known}") from None
        raise DatasetProblem(f"cannot be read: {text}") from exc
    except FileNotFoundError as exc:
        if cached is not None:
            raise DatasetProblem(
                f"is only partly in the local hub cache (its data files are missing) and HF_HUB_OFFLINE=1 "
                f"forbids fetching them: download it once with `hf download {cached} --repo-type dataset`"
            ) from None
        raise DatasetProblem(f"has no data files: {_first_line(exc)}") from exc
    except ConnectionError as exc:
        raise DatasetProblem(f"cannot be reached: {_first_line(exc)}") from exc
    except Exception as exc:  # noqa: BLE001 - the library's own errors are many; the user sees one line
        name = type(exc).__name__
        if name in ("DataFilesNotFoundError", "EmptyDatasetError") and cached is not None:
            raise DatasetProblem(
                f"is only partly in the local hub cache (no data files) and HF_HUB_OFFLINE=1 forbids "
                f"fetching them: download it once with `hf download {cached} --repo-type dataset`") from None
        if name == "DatasetNotFoundError":
            raise DatasetProblem(f"cannot be read: {_first_line(exc)}") from None
        raise DatasetProblem(f"cannot be read: {name}: {_first_line(exc)}") from exc


def iterate(data: Any, columns: list[str] | None) -> Iterator[dict[str, Any]]:
    """The records as dicts; columns checked on the first one where the schema was not known."""
    select = bool(columns) and data.column_names is None  # not selected by open_dataset
    first = True
    for row in data:
        if select:
            if first:
                check_columns(columns, list(row))
                first = False
            row = {c: row[c] for c in columns}
        yield row


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
