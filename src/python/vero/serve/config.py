"""ServeConfig: the contract between the compiler (writes serve.json) and `vero harbor serve`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from vero.container import CONTAINER
from vero.core.benchmark import CommitSha, ImportPath
from vero.core.policy import EvaluationPolicy
from vero.modeb.config import HarborConfig
from vero.models import StrictModel, load_model_file


class ServePaths(StrictModel):
    """Where the sidecar finds and keeps things inside its container (defaults: `CONTAINER`;
    tests and local runs point them elsewhere)."""

    agent_repo: str = CONTAINER.repo_dir          # the optimizer's repo (shared volume, read-only here)
    results_dir: str = CONTAINER.results_dir      # the agent's view of results (shared volume)
    admin_dir: str = CONTAINER.admin_dir          # ledger, submission, experiments (sidecar only)
    token_file: str = CONTAINER.token_file        # token volume; main mounts it read-only
    baseline_dir: str = CONTAINER.baseline_dir    # files/ + BASELINE.json (vero.baseline)
    trusted_repo: str = CONTAINER.trusted_repo    # created from baseline_dir at first start
    work_dir: str = CONTAINER.work_dir            # candidate worktrees, readable by the harness user
    log_dir: str = CONTAINER.log_dir              # why the sidecar stopped; Harbor collects it as an artifact
    identity_file: str = CONTAINER.identity_file  # the task's digest, baked at build time


class ModeAServe(StrictModel):
    """Mode A: vero runs `entrypoint` on each label-stripped row and scores it with `scorer`."""

    dataset_dir: str
    label_fields: list[str] = Field(default_factory=list)
    entrypoint: ImportPath
    scorer: str
    sample_timeout: float = Field(default=60.0, gt=0)


class ModeBServe(StrictModel):
    """Mode B: each sample is a Harbor task of `partition`, run by a nested `harbor run`."""

    harbor: HarborConfig
    partition: dict[str, list[str]]


class ServeConfig(EvaluationPolicy):
    """Everything `vero harbor serve` needs; written by the compiler as serve.json (the evaluation
    policy as build.yaml states it, flat, plus where things are in the sidecar)."""

    version: Literal[1] = 1
    mode: Literal["A", "B"]
    name: str
    host: str = "0.0.0.0"
    port: int = Field(default=CONTAINER.eval_port, ge=1, le=65535)
    paths: ServePaths = Field(default_factory=ServePaths)
    baseline_commit: CommitSha
    harness_user: str | None = Field(default=CONTAINER.harness_user,
                                     description="unprivileged user for candidate code; when set, candidate "
                                     "processes also get their own pid namespace")
    fetch_uid: int | None = Field(default=None, ge=1, description="uid that reads the optimizer's repo (the "
                                  "optimizer's own uid in a compiled task); None: the sidecar's own user")
    auto_best_top_k: int = Field(default=3, ge=1)
    mode_a: ModeAServe | None = None
    mode_b: ModeBServe | None = None

    @model_validator(mode="after")
    def _mode_section(self) -> ServeConfig:
        if self.mode == "A" and (self.mode_a is None or self.mode_b is not None):
            raise ValueError("mode A needs a mode_a section and no mode_b section")
        if self.mode == "B" and (self.mode_b is None or self.mode_a is not None):
            raise ValueError("mode B needs a mode_b section and no mode_a section")
        return self


def load_serve_config(path: Path) -> ServeConfig:
    """Read and validate serve.json, turning every problem into one VeroError."""
    return load_model_file(path, ServeConfig, "serve config",
                           fix="pass --config with the serve.json `vero harbor build` wrote (rebuild the task "
                               "if it was changed)")
