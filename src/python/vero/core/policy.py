"""EvaluationPolicy: how the optimizer's candidates are evaluated and rewarded.

One declaration of each setting and its default. build.yaml carries these fields at its top level
(`BuildCommon` extends the policy) and serve.json the same fields, unchanged (`ServeConfig`
extends it too), so the compiler copies them with `policy_fields` and no field can drift.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from pydantic import Field, field_validator

from vero.core.benchmark import Budget, RewardMode, SplitAccess, Target
from vero.core.limits import Limits
from vero.models import StrictModel

SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"


class EvaluationPolicy(StrictModel):
    """Tiers, budgets, targets and the reward, what a candidate must leave alone, the secrets the
    evaluation needs, and its time, concurrency and resource limits."""

    splits: list[SplitAccess] = Field(min_length=1)
    budgets: list[Budget] = Field(min_length=1)
    reward_mode: RewardMode = "auto_best"
    selection_split: str
    targets: list[Target] = Field(min_length=1)
    submit_enabled: bool = True
    score_baseline: bool = False
    read_only_paths: list[str] = Field(default_factory=list,
                                       description="repo paths a candidate must leave as the baseline has them")
    secrets: list[str] = Field(default_factory=list, description="names of host environment variables")
    timeout: float = Field(default=600.0, gt=0, description="seconds for one evaluation")
    max_concurrency: int = Field(default=4, ge=1)
    k_anonymity_floor: int = Field(default=5, ge=1)
    limits: Limits = Field(default_factory=Limits, description="memory, processes, sizes and timeouts")

    @field_validator("read_only_paths")
    @classmethod
    def _relative_inside(cls, paths: list[str]) -> list[str]:
        for path in paths:
            pure = PurePosixPath(path)
            if not path or path.startswith("/") or pure.is_absolute():
                raise ValueError(f"{path!r} must be relative to the agent repo")
            if ".." in pure.parts:
                raise ValueError(f"{path!r} must not contain '..'")
            if pure.parts[:1] == (".git",) or str(pure) == ".":
                raise ValueError(f"{path!r} must name a file or directory inside the repo, "
                                 "not the repo itself or .git")
        return paths

    @field_validator("secrets")
    @classmethod
    def _identifiers(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(SECRET_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid environment variable name "
                                 "([A-Za-z_][A-Za-z0-9_]*)")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return names


def policy_fields(model: EvaluationPolicy) -> dict[str, Any]:
    """The policy settings of `model` (a build.yaml config, a serve.json), field by field."""
    return {name: getattr(model, name) for name in EvaluationPolicy.model_fields}
