"""What a build reads besides build.yaml, for build tools that must gather it beforehand.

`vero harbor describe` prints this as JSON: the Pants plugin snapshots exactly these inputs
into the compiler's sandbox and checks these secrets, so it never reads build.yaml itself.
"""

from __future__ import annotations

from typing import Literal

from vero.compiler.config import BuildConfig, ModeABuild
from vero.models import StrictModel

InputField = Literal["agent_repo", "dataset", "scorer", "inner_task", "solution", "harbor.registry_path"]


class BuildInput(StrictModel):
    """One file or directory the compiler reads, named by the build.yaml field that names it."""

    field: InputField
    path: str  # as written in build.yaml: relative to its directory (or absolute)


class BuildDescription(StrictModel):
    """The inputs of a build (in build.yaml's field order) and the secrets it needs set."""

    inputs: list[BuildInput]
    secrets: list[str]


def describe(config: BuildConfig) -> BuildDescription:
    """The inputs and secret names of a validated build config."""
    named: list[tuple[InputField, str | None]] = [("agent_repo", config.agent_repo)]
    if isinstance(config, ModeABuild):
        named += [("dataset", config.dataset), ("scorer", config.scorer)]
    else:
        # A registry `harbor.task_source` (name@version) is fetched, not read; its local
        # registry.json is read.
        named += [("inner_task", config.inner_task), ("harbor.registry_path", config.harbor.registry_path)]
    named.append(("solution", config.solution))
    return BuildDescription(inputs=[BuildInput(field=key, path=path) for key, path in named if path is not None],
                            secrets=list(config.secrets))
