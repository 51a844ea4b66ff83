"""HarborConfig: how a Mode B benchmark invokes Harbor for one candidate evaluation."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from vero.models import StrictModel

REGISTRY_SOURCE = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*@[\w.+-]+$")


class HarborConfig(StrictModel):
    """Flags of the nested `harbor run`, validated at build time (SPEC §6)."""

    task_source: str = Field(min_length=1, description="local task/dataset dir, or registry org/name@version")
    agent: str = Field(pattern=r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$",
                       description="module:Class import path of the candidate's Harbor agent")
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

    @property
    def is_registry_source(self) -> bool:
        """True when `task_source` names a registry dataset rather than a local directory."""
        return bool(REGISTRY_SOURCE.match(self.task_source)) and not self.task_source.startswith((".", "/"))
