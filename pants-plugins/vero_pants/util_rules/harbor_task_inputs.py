"""What a `harbor_task` compiles from: build.yaml, as the compiler describes it, and the snapshot
of the files it names.

build.yaml is read only by the compiler itself (`vero harbor describe`, strict like `vero harbor
build`), so the plugin and the compiler can never disagree about it. The sandbox then holds
exactly the files of the target's dependencies: every path build.yaml names must be provided, and
for `agent_repo` every file Pants sees there (the baseline is the whole directory as it is on disk,
minus what git ignores, and Pants applies the same ignore rules).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Iterable

from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.engine.addresses import Address
from pants.engine.fs import Digest, MergeDigests, PathGlobs, Paths
from pants.engine.process import FallibleProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import (
    HydratedSources,
    HydrateSourcesRequest,
    SourcesField,
    TransitiveTargets,
    TransitiveTargetsRequest,
)
from pants.util.logging import LogLevel

from vero_pants.target_types import HarborTaskCompilerField, HarborTaskConfigField
from vero_pants.util_rules.harbor_compiler import (
    HarborCompiler,
    HarborCompilerAddress,
    HarborCompilerRequest,
    HarborTaskError,
)

MAX_LISTED_PATHS = 10


@dataclass(frozen=True)
class ConfigReference:
    """One input named in build.yaml: the field, its value as written, the path from the build root."""

    field: str
    value: str
    path: str


@dataclass(frozen=True)
class BuildConfigDescription:
    """`vero harbor describe`'s answer, with every input resolved against build.yaml's directory."""

    references: tuple[ConfigReference, ...]
    secrets: tuple[str, ...]

    @property
    def agent_repo(self) -> ConfigReference | None:
        return next((ref for ref in self.references if ref.field == "agent_repo"), None)


@dataclass(frozen=True)
class DescribeBuildConfigRequest:
    config: HarborTaskConfigField
    compiler: HarborTaskCompilerField


@dataclass(frozen=True)
class HarborTaskInputsRequest:
    config: HarborTaskConfigField
    compiler: HarborTaskCompilerField


@dataclass(frozen=True)
class HarborTaskInputs:
    """build.yaml and every input file (`digest`), and what the compiler said build.yaml names."""

    digest: Digest
    description: BuildConfigDescription


def parse_description(config_path: str, stdout: bytes) -> BuildConfigDescription:
    """The describe JSON, each input resolved from build.yaml's directory to a build-root path."""
    data = json.loads(stdout)
    base = os.path.dirname(config_path)
    references = []
    for entry in data["inputs"]:
        field, value = entry["field"], entry["path"]
        path = os.path.normpath(os.path.join(base, value))
        if os.path.isabs(value) or path == ".." or path.startswith("../"):
            raise HarborTaskError(
                f"{config_path}: `{field}: {value}` points outside the repository; under Pants every input "
                "must be a path inside the build root, relative to build.yaml's directory."
            )
        references.append(ConfigReference(field, value, path))
    return BuildConfigDescription(tuple(references), tuple(data["secrets"]))


def listed(paths: list[str]) -> str:
    """At most MAX_LISTED_PATHS of `paths`, then how many more."""
    shown = ", ".join(paths[:MAX_LISTED_PATHS])
    return shown + (f" and {len(paths) - MAX_LISTED_PATHS} more" if len(paths) > MAX_LISTED_PATHS else "")


def missing_references(references: Iterable[ConfigReference], files: Iterable[str]) -> list[ConfigReference]:
    """The references for which no input file is at or under the referenced path."""
    file_list = list(files)
    return [
        ref for ref in references
        if not any(f == ref.path or f.startswith(ref.path.rstrip("/") + "/") for f in file_list)
    ]


def unprovided_agent_files(agent: ConfigReference, on_disk: Iterable[str], inputs: Iterable[str]) -> list[str]:
    """Files Pants sees under the agent directory that no dependency provides, relative to it:
    the baseline is the whole directory, so the sandbox must hold every one of them."""
    provided = set(inputs)
    prefix = agent.path.rstrip("/") + "/"
    return sorted(path[len(prefix):] for path in on_disk if path.startswith(prefix) and path not in provided)


@rule(desc="Describe a harbor_task's build.yaml", level=LogLevel.DEBUG)
async def describe_build_config(request: DescribeBuildConfigRequest) -> BuildConfigDescription:
    config_path = request.config.file_path
    compiler, config = await MultiGet(
        Get(HarborCompiler, HarborCompilerRequest(request.compiler)),
        Get(HydratedSources, HydrateSourcesRequest(request.config)),
    )
    input_digest = await Get(Digest, MergeDigests([compiler.digest, config.snapshot.digest]))
    result = await Get(
        FallibleProcessResult,
        compiler.process(("harbor", "describe", "--config", config_path), input_digest=input_digest,
                         description=f"Describe {config_path}"),
    )
    if result.exit_code != 0:
        raise HarborTaskError(
            f"{request.config.address}: {config_path} is not a valid build config:\n"
            f"{result.stderr.decode('utf-8', 'replace').strip()}"
        )
    return parse_description(config_path, result.stdout)


@rule(desc="Gather a harbor_task's inputs", level=LogLevel.DEBUG)
async def harbor_task_inputs(request: HarborTaskInputsRequest) -> HarborTaskInputs:
    address: Address = request.config.address
    config_path = request.config.file_path
    description, compiler, transitive, config = await MultiGet(
        Get(BuildConfigDescription, DescribeBuildConfigRequest(request.config, request.compiler)),
        Get(HarborCompilerAddress, HarborCompilerRequest(request.compiler)),
        Get(TransitiveTargets, TransitiveTargetsRequest([address])),
        Get(HydratedSources, HydrateSourcesRequest(request.config)),
    )
    # The compiler is a dependency (inferred) but not an input: its own sources stay out.
    compiler_closure = await Get(TransitiveTargets, TransitiveTargetsRequest([compiler.address]))
    tool_addresses = {t.address for t in compiler_closure.closure}
    inputs = await Get(
        SourceFiles,
        SourceFilesRequest(
            t.get(SourcesField) for t in transitive.dependencies if t.address not in tool_addresses
        ),
    )
    unprovided = missing_references(description.references, inputs.snapshot.files)
    if unprovided:
        lines = "\n".join(
            f"  `{ref.field}: {ref.value}` -> {ref.path}: no file of the target's dependencies is there"
            for ref in unprovided
        )
        raise HarborTaskError(
            f"{address}: inputs named in {config_path} are not provided:\n{lines}\n"
            "Add a `files(sources=[\"<dir>/**\"])` target owning them (it is then inferred), or list it in "
            "`dependencies`; check the path for typos."
        )
    agent = description.agent_repo
    if agent is not None:
        on_disk = await Get(Paths, PathGlobs([f"{agent.path}/**"]))
        unowned = unprovided_agent_files(agent, on_disk.files, inputs.snapshot.files)
        if unowned:
            raise HarborTaskError(
                f"{address}: files of `agent_repo: {agent.value}` ({agent.path}) are not provided by the "
                f"target's dependencies: {listed(unowned)}. The baseline is the whole directory, as "
                "`vero harbor build` bakes it: own them with a `files` target (e.g. "
                f"`files(sources=[\"{os.path.basename(agent.path)}/**/*\"])` in the BUILD file above it), delete "
                "them, or have git ignore them."
            )
    digest = await Get(Digest, MergeDigests([config.snapshot.digest, inputs.snapshot.digest]))
    return HarborTaskInputs(digest, description)


def rules() -> Iterable[Any]:
    return collect_rules()
