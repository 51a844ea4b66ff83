"""Benchmark vocabulary shared by build.yaml (BuildConfig) and serve.json (ServeConfig), and the
string patterns every model at a boundary uses for names, import paths and commits."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from vero.models import StrictModel

AccessTier = Literal["viewable", "non_viewable", "no_access"]
RewardMode = Literal["submit", "auto_best"]

SPLIT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SPLIT_NAME_RULE = "letters, digits, '_', '.', '-' (at most 64, starting with a letter or digit)"
# `module.sub:name`: a Mode A entrypoint, a Harbor agent class, the candidate of an isolated agent.
IMPORT_PATH_PATTERN = r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*$"
# A SHA-1 commit as vero's baseline rules make it (`vero.baseline`).
COMMIT_SHA_PATTERN = r"^[0-9a-f]{40}$"
# Any full commit id: SHA-1, or SHA-256 for a repository in that object format.
FULL_SHA_PATTERN = r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$"

ImportPath = Annotated[str, Field(pattern=IMPORT_PATH_PATTERN)]
CommitSha = Annotated[str, Field(pattern=COMMIT_SHA_PATTERN)]
FullSha = Annotated[str, Field(pattern=FULL_SHA_PATTERN)]


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
