"""BuildConfig: the strict model of build.yaml (SPEC §3), Mode A and Mode B.

Paths are plain strings here, relative to build.yaml's directory; `vero.compiler.loader` parses the
file and turns validation errors into messages, `vero.compiler.plan` resolves the paths and runs the
checks that need the file system (dataset splits, partition names, read-only paths).
"""

from __future__ import annotations

import re
from typing import Literal, Union

from pydantic import Field, field_validator, model_validator

from vero.core.benchmark import AccessTier, ImportPath
from vero.core.datasets import partition_problems
from vero.core.policy import EvaluationPolicy
from vero.modeb.config import HarborConfig, is_registry_source

# Harbor's own rule for [task].name (harbor.constants.ORG_NAME_PATTERN), minus "..".
TASK_NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._-]*/[a-zA-Z0-9][a-zA-Z0-9._-]*$"
# A Docker image reference (name[:tag]); digests are refused because local images have none.
IMAGE_REF = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)
DEFAULT_BASE_IMAGE = "vero/base:bookworm"
DEFAULT_MODE_B_SIDECAR_IMAGE = "vero/harbor-sidecar:trixie"


class BuildHarborConfig(HarborConfig):
    """The `harbor:` section of a Mode B build.yaml.

    `task_source` may be omitted when `inner_task` names a local source: the compiler bakes that
    source into the sidecar and writes its in-container path into serve.json. With a registry
    dataset (`name@version`), `registry_path` names a local registry.json: the compiler bakes
    the partition's tasks of that dataset, and a registry.json listing only them, into the
    sidecar (never into main), so the nested harbor reaches them with no network.
    """

    task_source: str | None = None  # type: ignore[assignment]


class BuildCommon(EvaluationPolicy):
    """Fields shared by both modes: the evaluation policy (flat, as serve.json carries it) plus
    what only the build needs."""

    name: str = Field(pattern=TASK_NAME_PATTERN, description="Harbor task name, org/name")
    description: str = ""
    agent_repo: str = Field(min_length=1, description="the baseline candidate: a git repo, subtree or dir")
    base_image_main: str = DEFAULT_BASE_IMAGE
    base_image_sidecar: str | None = Field(default=None, description="default depends on the mode")
    agent_timeout: float = Field(default=3600.0, gt=0, description="seconds the optimizer may work")
    solution: str | None = Field(default=None, description="dir with the oracle's solve.sh")

    @field_validator("base_image_main", "base_image_sidecar")
    @classmethod
    def _image_ref(cls, ref: str | None) -> str | None:
        if ref is not None and not IMAGE_REF.fullmatch(ref):
            raise ValueError(f"{ref!r} is not a local Docker image reference like 'vero/base:bookworm'")
        return ref

    def tier(self, split: str) -> AccessTier:
        """The split's tier; a split that is not listed is `no_access` (fail closed)."""
        for entry in self.splits:
            if entry.split == split:
                return entry.access
        return "no_access"

    def referenced_splits(self) -> list[str]:
        """Every split named anywhere in the config, in first-mention order."""
        names = [s.split for s in self.splits] + [b.split for b in self.budgets]
        names += [self.selection_split] + [t.split for t in self.targets]
        return list(dict.fromkeys(names))

    @model_validator(mode="after")
    def _cross_checks(self) -> BuildCommon:
        _unique("splits", [s.split for s in self.splits])
        _unique("budgets", [b.split for b in self.budgets])
        _unique("targets (reward_key)", [t.reward_key for t in self.targets])
        for budget in self.budgets:
            if self.tier(budget.split) == "no_access":
                raise ValueError(f"budgets: split {budget.split!r} is no_access (or not listed in splits); "
                                 "the optimizer cannot evaluate it, so it cannot have a budget")
        if self.tier(self.selection_split) == "no_access":
            raise ValueError(f"selection_split {self.selection_split!r} must be viewable or non_viewable "
                             "in splits: the optimizer's candidates are ranked on it")
        if self.selection_split not in {b.split for b in self.budgets}:
            raise ValueError(f"selection_split {self.selection_split!r} has no entry in budgets")
        if self.reward_mode == "submit" and not self.submit_enabled:
            raise ValueError("reward_mode 'submit' requires submit_enabled: true")
        return self


def _unique(what: str, names: list[str]) -> None:
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"{what}: listed more than once: {', '.join(duplicates)}")


class ModeABuild(BuildCommon):
    """Mode A: vero runs `entrypoint` on every dataset row and scores it with the trusted `scorer`."""

    mode: Literal["A"]
    dataset: str = Field(min_length=1, description="dir with <split>.jsonl files, or a save_to_disk dir")
    label_fields: list[str] = Field(default_factory=list)
    entrypoint: ImportPath = Field(description="module:function in the agent repo")
    scorer: str = Field(min_length=1, description="a .py file or package dir outside the agent repo")
    sample_timeout: float = Field(default=60.0, gt=0)
    output_contract: str = Field(default="", description="what the entrypoint must return, for instruction.md "
                                                         "(default: a pointer to the baseline's README)")

    @field_validator("label_fields")
    @classmethod
    def _label_names(cls, names: list[str]) -> list[str]:
        if any(not n for n in names):
            raise ValueError("label field names must not be empty")
        _unique("label_fields", names)
        return names

    def sidecar_image(self) -> str:
        """`base_image_sidecar`, or the shared base image."""
        return self.base_image_sidecar or DEFAULT_BASE_IMAGE


class ModeBBuild(BuildCommon):
    """Mode B: every sample is a Harbor task, scored by a nested `harbor run` of the candidate."""

    mode: Literal["B"]
    harbor: BuildHarborConfig
    partition: dict[str, list[str]] = Field(min_length=1, description="split -> inner task names")
    inner_task: str | None = Field(default=None, description="local Harbor task or dataset dir")

    @field_validator("partition")
    @classmethod
    def _partition_rules(cls, partition: dict[str, list[str]]) -> dict[str, list[str]]:
        problems = partition_problems(partition)
        if problems:
            raise ValueError("; ".join(problems))
        return partition

    @model_validator(mode="after")
    def _mode_b_checks(self) -> ModeBBuild:
        source = self.harbor.task_source
        if self.inner_task is None and source is None:
            raise ValueError("set inner_task (a local Harbor task or dataset dir) or harbor.task_source "
                             "(a registry dataset name@version, or a Harbor Hub package org/name@version)")
        if self.inner_task is not None and source is not None:
            raise ValueError("set inner_task or harbor.task_source, not both")
        if source is not None and not is_registry_source(source):
            raise ValueError(f"harbor.task_source {source!r} is not a registry dataset (name@version) or a "
                             "Harbor Hub package (org/name@version); put a local source in inner_task")
        missing = [s for s in self.referenced_splits() if s not in self.partition]
        if missing:
            raise ValueError(f"split(s) {', '.join(map(repr, missing))} have no tasks in partition "
                             f"(partition has {', '.join(map(repr, self.partition))})")
        for target in self.targets:
            unknown = [i for i in target.sample_ids or [] if i not in self.partition[target.split]]
            if unknown:
                raise ValueError(f"targets: sample_ids {', '.join(map(repr, unknown))} are not in "
                                 f"partition.{target.split}")
        return self

    def sidecar_image(self) -> str:
        """`base_image_sidecar`, or the sidecar image with a harbor CLI for nested runs."""
        return self.base_image_sidecar or DEFAULT_MODE_B_SIDECAR_IMAGE


BuildConfig = Union[ModeABuild, ModeBBuild]
MODELS: dict[str, type[ModeABuild] | type[ModeBBuild]] = {"A": ModeABuild, "B": ModeBBuild}
