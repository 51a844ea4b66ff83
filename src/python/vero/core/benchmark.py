"""Benchmark vocabulary shared by build.yaml (BuildConfig) and serve.json (ServeConfig)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vero.models import StrictModel

AccessTier = Literal["viewable", "non_viewable", "no_access"]
RewardMode = Literal["submit", "auto_best"]

SPLIT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class SplitAccess(StrictModel):
    """The tier of one split. A split that is not listed is `no_access` (fail closed)."""

    split: str = Field(pattern=SPLIT_NAME_PATTERN)
    access: AccessTier


class Budget(StrictModel):
    """Evaluation budget of one split: runs and/or samples, spent atomically, never refunded (except
    the charge of an evaluation that could not run at all, see `vero.core.ledger`)."""

    split: str = Field(pattern=SPLIT_NAME_PATTERN)
    total_run_budget: int | None = Field(default=None, ge=0)
    total_sample_budget: int | None = Field(default=None, ge=0)
    max_samples_per_run: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _some_total(self) -> Budget:
        if self.total_run_budget is None and self.total_sample_budget is None:
            raise ValueError("set total_run_budget and/or total_sample_budget")
        return self


class Target(StrictModel):
    """A held-out score that finalize reports under `reward_key`."""

    split: str = Field(pattern=SPLIT_NAME_PATTERN)
    reward_key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    sample_ids: list[str] | None = None
