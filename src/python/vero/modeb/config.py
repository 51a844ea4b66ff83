"""HarborConfig: how a Mode B benchmark invokes Harbor for one candidate evaluation."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, model_validator

from vero.core.benchmark import ImportPath
from vero.models import StrictModel

# A registry source: `name@version` (a dataset of a Harbor registry: the default remote one, or a
# local registry.json given as `registry_path`) or `org/name@version` (a Harbor Hub package).
REGISTRY_SOURCE = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*@[\w.+-]+$")


class HarborConfig(StrictModel):
    """Flags of the nested `harbor run`, validated at build time (SPEC §6)."""

    task_source: str = Field(min_length=1, description="local task/dataset dir, registry dataset name@version, "
                                                         "or Harbor Hub package org/name@version")
    registry_path: str | None = Field(default=None, min_length=1,
                                      description="a local registry.json holding the name@version dataset "
                                                  "(harbor run --registry-path)")
    agent: ImportPath = Field(description="module:Class import path of the candidate's Harbor agent")
    model: str | None = None
    environment: str = Field(default="docker", pattern=r"^[A-Za-z0-9_.:-]+$")
    n_concurrent: int = Field(default=4, ge=1)
    n_attempts: int = Field(default=1, ge=1)
    max_retries: int = Field(default=0, ge=0)
    reward_key: str | None = None
    aggregate_attempts: Literal["best", "mean"] = "best"
    harbor_command: list[str] = Field(default_factory=lambda: ["harbor"], min_length=1)
    extra_args: list[str] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0, description="seconds for the whole harbor run")
    kill_grace: float = Field(default=30.0, ge=0,
                              description="seconds between SIGTERM and SIGKILL when the run times out")

    @property
    def is_registry_source(self) -> bool:
        """True when `task_source` names a registry dataset rather than a local directory."""
        return is_registry_source(self.task_source)

    @model_validator(mode="after")
    def _registry_path_needs_a_registry_dataset(self) -> HarborConfig:
        check_registry_path(self.task_source, self.registry_path)
        return self


def is_registry_source(task_source: str) -> bool:
    """True when a task source names a registry dataset (`name@version` or `org/name@version`),
    not a local path (a local dir whose name looks like one is written `./name@version`)."""
    return bool(REGISTRY_SOURCE.fullmatch(task_source)) and not task_source.startswith((".", "/"))


def is_hub_package(task_source: str) -> bool:
    """True for `org/name@version`: Harbor 0.24 fetches such a dataset from the Harbor Hub."""
    return is_registry_source(task_source) and "/" in task_source


def check_registry_path(task_source: str | None, registry_path: str | None) -> None:
    """A local registry serves only a `name@version` dataset (ValueError otherwise)."""
    if registry_path is None:
        return
    if task_source is None or not is_registry_source(task_source):
        raise ValueError("registry_path needs task_source to name a dataset of that registry (name@version)")
    if is_hub_package(task_source):
        raise ValueError(f"task_source {task_source!r} is a Harbor Hub package (org/name@version), which "
                         "Harbor 0.24 never reads from a local registry; name the registry's dataset "
                         f"as name@version (e.g. {task_source.split('/', 1)[1]!r})")


class CollationSettings(StrictModel):
    """The part of HarborConfig that collation reads (the `collate` command needs no agent)."""

    reward_key: str | None = None
    aggregate_attempts: Literal["best", "mean"] = "best"
    n_attempts: int = Field(default=1, ge=1, description="attempts each task should have (a mean over "
                                                         "fewer scored ones is flagged)")

    @classmethod
    def of(cls, config: HarborConfig) -> CollationSettings:
        """The collation settings of a full HarborConfig."""
        return cls(reward_key=config.reward_key, aggregate_attempts=config.aggregate_attempts,
                   n_attempts=config.n_attempts)

