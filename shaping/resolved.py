"""A model as a run uses it, resolved once from its `[models.NAME]` table.

    model = project.resolved("judge")       # the same object for the whole command
    model.config        # as its provider gets it: provider named (inferred from the model id
                        # where left out), a named host's base_url and key variable filled in
    model.provider_cls  # the Provider subclass (entry point, register(), preset)
    model.state         # provider, model, base_url, params, options, files, and the fingerprint
                        # that the manifest records, staleness compares and the cache keys use
    model.prices        # shaping.prices: what its tokens cost, or None
    model.create_provider(read_key=True)

The dispatcher, its channels, the runner, staleness and dry runs read this object; nothing
else works out a model's provider, host, fingerprint or prices again. Resolving checks
everything that can be checked without the key: an unknown model or provider, options that do
not fit the provider, a key variable the provider needs and the table does not name, streaming
params; each is one ConfigError line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from shaping.config import ModelConfig
from shaping.manifest import ModelState, model_state
from shaping.prices import Prices, prices_for
from shaping.providers.registry import check_model, create_provider, resolve_model

if TYPE_CHECKING:
    from shaping.config import Project
    from shaping.providers.base import Provider


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    #: the table as written in shaping.toml
    table: ModelConfig
    #: the table as its provider gets it
    config: ModelConfig
    provider_cls: type["Provider"]
    state: ModelState
    prices: Prices | None

    @property
    def fingerprint(self) -> str:
        return self.state.fingerprint

    def create_provider(self, read_key: bool = True) -> "Provider":
        """The provider, reading the key from its variable (`read_key=False`: a dry run's,
        which sends nothing)."""
        return create_provider(self.name, self.table, read_key=read_key)

    def batched(self, batch_all: bool = False) -> bool:
        """Whether run_task's requests go through the provider's batch API (shaping.providers.batch)."""
        from shaping.providers.batch import batched

        return batched(self.name, self.config, self.provider_cls, batch_all)


def resolve(project: "Project", name: str) -> ResolvedModel:
    """Model `name` of the project, resolved (see the module docstring); use
    `project.resolved(name)`, which does this once per model."""
    table = project.model(name)
    provider_cls = check_model(name, table)
    return ResolvedModel(name=name, table=table, config=resolve_model(name, table), provider_cls=provider_cls,
                         state=model_state(name, table), prices=prices_for(name, table, project.config.prices))
