"""Dependency inference for `harbor_task`: the compiler, and the owners of every input build.yaml
names (as `vero harbor describe` reports them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from pants.engine.fs import PathGlobs, Paths
from pants.engine.internals.graph import Owners, OwnersRequest
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import FieldSet, InferDependenciesRequest, InferredDependencies
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel

from vero_pants.target_types import HarborTaskCompilerField, HarborTaskConfigField
from vero_pants.util_rules.harbor_compiler import HarborCompilerAddress, HarborCompilerRequest
from vero_pants.util_rules.harbor_task_inputs import BuildConfigDescription, DescribeBuildConfigRequest


@dataclass(frozen=True)
class HarborTaskInferenceFieldSet(FieldSet):
    required_fields = (HarborTaskConfigField, HarborTaskCompilerField)

    config: HarborTaskConfigField
    compiler: HarborTaskCompilerField


class InferHarborTaskDependencies(InferDependenciesRequest[HarborTaskInferenceFieldSet]):
    infer_from = HarborTaskInferenceFieldSet


@rule(desc="Infer harbor_task dependencies", level=LogLevel.DEBUG)
async def infer_harbor_task_dependencies(request: InferHarborTaskDependencies) -> InferredDependencies:
    """The compiler (so `--changed-dependents` sees compiler edits) and the owners of the inputs."""
    fs = request.field_set
    compiler, description = await MultiGet(
        Get(HarborCompilerAddress, HarborCompilerRequest(fs.compiler)),
        Get(BuildConfigDescription, DescribeBuildConfigRequest(fs.config, fs.compiler)),
    )
    globs = [glob for ref in description.references for glob in (ref.path, f"{ref.path}/**")]
    paths = await Get(Paths, PathGlobs(globs)) if globs else Paths((), ())
    owners = await Get(Owners, OwnersRequest(tuple(paths.files))) if paths.files else Owners()
    inferred = {compiler.address, *(address for address in owners if address != fs.address)}
    return InferredDependencies(sorted(inferred))


def rules() -> Iterable[Any]:
    return [*collect_rules(), UnionRule(InferDependenciesRequest, InferHarborTaskDependencies)]
