"""The project: its root (the nearest folder upward holding shaping.toml) and its models."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, ValidationError

from shaping.errors import ConfigError, describe_validation_error

if TYPE_CHECKING:
    from shaping.output import OutputPaths
    from shaping.resolved import ResolvedModel

CONFIG_FILE = "shaping.toml"


class ModelConfig(BaseModel):
    """One `[models.NAME]` table of shaping.toml."""

    model_config = ConfigDict(extra="forbid")

    provider: str | None = None
    model: str
    base_url: str | None = None
    #: several endpoints serving the same model (HTTP providers): spread by least outstanding
    base_urls: list[str] | None = Field(default=None, min_length=1)
    api_key_env: str | None = None
    max_concurrency: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    requests_per_minute: PositiveInt | None = None
    tokens_per_minute: PositiveInt | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    retry_backoff_s: float = Field(default=1.0, ge=0)
    retry_max_wait_s: float = Field(default=60.0, ge=0)
    price_per_million_input: float | None = Field(default=None, ge=0)
    price_per_million_output: float | None = Field(default=None, ge=0)
    #: input tokens read from the provider's prompt cache (default: the input price)
    price_per_million_cached_input: float | None = Field(default=None, ge=0)
    #: input tokens written to the provider's prompt cache (default: the input price)
    price_per_million_cache_write: float | None = Field(default=None, ge=0)
    #: through the provider's batch API (default: half the online prices)
    price_per_million_batch_input: float | None = Field(default=None, ge=0)
    price_per_million_batch_output: float | None = Field(default=None, ge=0)
    #: send this model's run_task requests through the provider's batch API (see shaping.dispatch.batch)
    batch: bool = False
    #: in batch mode: seconds between polls of a submitted batch
    #: how often a submitted batch is polled (default: the provider's, 30 s for the APIs)
    batch_poll_s: float | None = Field(default=None, gt=0)
    #: in batch mode: the longest a request waits for its round to form (see shaping.dispatch.batch)
    batch_gather_s: float = Field(default=60.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class PriceTable(BaseModel):
    """`[prices."MODEL-ID"]`: USD per million tokens of a model id (see shaping.prices)."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    batch_input: float | None = Field(default=None, ge=0)
    batch_output: float | None = Field(default=None, ge=0)


class FeedbackConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = "training/.feedback.sqlite"


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, ModelConfig] = Field(default_factory=dict)
    prices: dict[str, PriceTable] = Field(default_factory=dict)
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    #: `[datasets]`: read a dataset_dep's data set from elsewhere (a local copy, a mirror), e.g.
    #: "allenai/WildChat-1M" = "data/wildchat-sample"; see shaping.datasets.source
    datasets: dict[str, str] = Field(default_factory=dict)


class Project:
    """Where things live, and the parsed shaping.toml."""

    def __init__(self, root: Path, config: ProjectConfig) -> None:
        self.root = root
        self.config = config
        self._resolved: dict[str, Any] = {}

    @property
    def pipelines_dir(self) -> Path:
        return self.root / "pipelines"

    @property
    def data_dir(self) -> Path:
        return self.root / "training" / "data"

    @property
    def feedback_path(self) -> Path:
        return self.root / self.config.feedback.path

    def outputs(self, pipeline: str) -> "OutputPaths":
        """Where pipeline `pipeline` writes by default: training/data/NAME.jsonl and beside it."""
        from shaping.output import OutputPaths

        return OutputPaths.for_samples(self.data_dir / f"{pipeline}.jsonl")

    @property
    def cache_dir(self) -> Path:
        return self.root / "training" / ".cache"

    def model(self, name: str) -> ModelConfig:
        try:
            return self.config.models[name]
        except KeyError as exc:
            known = ", ".join(sorted(self.config.models)) or "none"
            raise ConfigError(
                f"{self.root / CONFIG_FILE}: unknown model '{name}' (known models: {known})"
            ) from exc

    def resolved(self, name: str) -> "ResolvedModel":
        """Model `name` as a run uses it (shaping.resolved), resolved on first use and kept:
        one object per model for everything this project object does."""
        model = self._resolved.get(name)
        if model is None:
            from shaping.resolved import resolve

            model = self._resolved[name] = resolve(self, name)
        return model

    def relative(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(self.root))
        except ValueError:
            return str(path)

    @classmethod
    def load(cls, root: Path) -> "Project":
        path = root / CONFIG_FILE
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"{path}: not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
        try:
            config = ProjectConfig.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc, str(path))) from exc
        return cls(root.resolve(), config)

    @classmethod
    def find(cls, start: Path | None = None) -> "Project":
        """Load the project whose shaping.toml is in `start` or the nearest folder above it."""
        here = (start or Path.cwd()).resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_FILE).is_file():
                return cls.load(folder)
        raise ConfigError(
            f"no {CONFIG_FILE} found in {here} or any folder above it "
            f"(a project's root holds shaping.toml with its [models.NAME] tables)"
        )
