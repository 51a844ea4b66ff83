"""`package` for `harbor_task`: one rule (`compile_harbor_task`) runs `vero harbor build` in the
sandbox; `package`, its archive option and the codegen to `files` (what a dependent target
receives) all request its result, so they share one cached process.

`package` also warns about uncommitted changes in the agent directory, worded as `vero harbor
build` words it: the sandbox has no `.git`, so the compiler cannot tell.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

from pants.base.build_root import BuildRoot
from pants.core.goals.package import BuiltPackage, BuiltPackageArtifact, PackageFieldSet
from pants.core.target_types import FileSourceField
from pants.core.util_rules.archive import CreateArchive
from pants.core.util_rules.distdir import DistDir
from pants.core.util_rules.system_binaries import ArchiveFormat, GitBinaryException
from pants.engine.addresses import Address
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import (
    AddPrefix,
    Digest,
    DigestContents,
    DigestSubset,
    MergeDigests,
    PathGlobs,
    RemovePrefix,
    Snapshot,
)
from pants.engine.process import ProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import GeneratedSources, GenerateSourcesRequest
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel
from pants.vcs.git import GitWorktreeRequest, MaybeGitWorktree

from vero_pants.subsystems.harbor_task import HarborTaskSubsystem
from vero_pants.target_types import (
    HarborTaskArchiveFormatField,
    HarborTaskCompilerField,
    HarborTaskConfigField,
    HarborTaskDryRunField,
    HarborTaskOutputPathField,
)
from vero_pants.util_rules.harbor_compiler import HarborCompiler, HarborCompilerRequest, HarborTaskError
from vero_pants.util_rules.harbor_task_inputs import HarborTaskInputs, HarborTaskInputsRequest, listed

logger = logging.getLogger(__name__)

_OUT_DIR = "__vero_out"
CODEGEN_PREFIX = "dist"
# Secret values never enter the sandbox (nor the cache key, nor a remote cache): the plugin
# checks that each declared secret is set on the host, and the compiler sees this stand-in.
SECRET_STAND_IN = "set-on-host"
_ARCHIVE_FORMATS = {"tar": ArchiveFormat.TAR, "tar.gz": ArchiveFormat.TGZ, "zip": ArchiveFormat.ZIP}
_SEAL = "SEAL.json"


@dataclass(frozen=True)
class HarborTaskFieldSet(PackageFieldSet):
    required_fields = (HarborTaskConfigField,)

    config: HarborTaskConfigField
    output_path: HarborTaskOutputPathField
    archive_format: HarborTaskArchiveFormatField
    compiler: HarborTaskCompilerField
    dry_run: HarborTaskDryRunField

    @property
    def dest(self) -> str:
        """The compiled task's directory, relative to dist/ (and to the codegen root)."""
        return self.output_path.value_or_default()


@dataclass(frozen=True)
class CompileHarborTaskRequest:
    field_set: HarborTaskFieldSet


@dataclass(frozen=True)
class CompiledHarborTask:
    digest: Digest  # the compiled task, under field_set.dest
    stdout: bytes   # the compiler's report: `checked: ...` lines and the `built ...` line
    stderr: bytes   # its `warning: ...` lines
    inputs: HarborTaskInputs


def compile_description(address: Address, distdir: DistDir, dest: str) -> str:
    """The log line of the compile process, naming the directory `package` writes."""
    return f"Compiling {address} into {os.path.join(str(distdir.relpath), dest)}"


def uncommitted_changes_warning(agent_path: str, changed: list[str]) -> str:
    """Worded as `vero harbor build` words it (vero.compiler.agent_repo.uncommitted_changes_warning)."""
    return (f"agent_repo {agent_path} has uncommitted changes ({listed(changed)}); the baseline is the directory "
            "as it is on disk, these changes included: commit them to make the baseline reproducible from git")


def build_summary(address: Address, dest: str, seal: bytes | None, stdout: bytes) -> str:
    """The package log line: what the directory now holds (seal root, build.yaml digest) and what
    the compiler checked."""
    line = f"{address}: {dest}"
    if seal is not None:
        try:
            recorded = json.loads(seal)
            line += f" has seal {recorded['root']}, compiled from build.yaml sha256 {recorded['build_config_sha256']}"
        except (ValueError, KeyError, TypeError):
            line += f" has an unreadable {_SEAL}"
    checked = [text for text in stdout.decode("utf-8", "replace").splitlines() if text.startswith("checked: ")]
    return "\n  ".join([line, *checked])


@rule(desc="Compile harbor_task", level=LogLevel.DEBUG)
async def compile_harbor_task(
    request: CompileHarborTaskRequest, distdir: DistDir, defaults: HarborTaskSubsystem
) -> CompiledHarborTask:
    fs = request.field_set
    compiler, inputs = await MultiGet(
        Get(HarborCompiler, HarborCompilerRequest(fs.compiler)),
        Get(HarborTaskInputs, HarborTaskInputsRequest(fs.config, fs.compiler)),
    )
    secrets = inputs.description.secrets
    host_env = await Get(EnvironmentVars, EnvironmentVarsRequest(secrets))
    # Compose's `${NAME:?}` guard refuses an empty value too.
    missing_secrets = [name for name in secrets if not host_env.get(name)]
    if missing_secrets:
        raise HarborTaskError(
            f"{fs.address}: {fs.config.file_path} declares secret(s) that are not set (or empty) in the environment: "
            f"{', '.join(missing_secrets)}. Export them before packaging (only their presence is checked; "
            "the values never enter the build)."
        )
    out = os.path.join(_OUT_DIR, os.path.basename(fs.dest))
    input_digest = await Get(Digest, MergeDigests([compiler.digest, inputs.digest]))
    dry_run = () if fs.dry_run.value else ("--no-dry-run",)
    result = await Get(
        ProcessResult,
        compiler.process(
            ("harbor", "build", "-c", fs.config.file_path, "-o", out, "--runtime-pex", compiler.pex_path,
             *defaults.base_image_args(), *dry_run),
            input_digest=input_digest,
            output_directories=(_OUT_DIR,),
            env={name: SECRET_STAND_IN for name in secrets},
            description=compile_description(fs.address, distdir, fs.dest),
            level=LogLevel.INFO,
        ),
    )
    stripped = await Get(Digest, RemovePrefix(result.output_digest, _OUT_DIR))
    placed = await Get(Digest, AddPrefix(stripped, os.path.dirname(fs.dest)))
    return CompiledHarborTask(placed, result.stdout, result.stderr, inputs)


async def _warn_about_uncommitted_changes(field_set: HarborTaskFieldSet, inputs: HarborTaskInputs) -> None:
    """The CLI's warning for an agent dir that differs from git's HEAD (the sandbox has no .git)."""
    agent = inputs.description.agent_repo
    maybe = await Get(MaybeGitWorktree, GitWorktreeRequest())
    if agent is None or maybe.git_worktree is None:
        return
    try:
        changed = maybe.git_worktree.changed_files(
            include_untracked=True, relative_to=os.path.join(BuildRoot().path, agent.path)
        )
    except GitBinaryException as exc:
        logger.warning(f"{field_set.address}: agent_repo {agent.path}: git cannot compare it with HEAD ({exc}); "
                       "the baseline is the directory as it is on disk")
        return
    if changed:
        logger.warning(f"{field_set.address}: {uncommitted_changes_warning(agent.path, sorted(changed))}")


@rule(desc="Package harbor_task", level=LogLevel.DEBUG)
async def package_harbor_task(field_set: HarborTaskFieldSet, distdir: DistDir) -> BuiltPackage:
    compiled = await Get(CompiledHarborTask, CompileHarborTaskRequest(field_set))
    await _warn_about_uncommitted_changes(field_set, compiled.inputs)
    for text in compiled.stderr.decode("utf-8", "replace").splitlines():
        if text.startswith("warning: "):
            logger.warning(f"{field_set.address}: {text.removeprefix('warning: ')}")
    seal_path = os.path.join(field_set.dest, _SEAL)
    seal = await Get(DigestContents, DigestSubset(compiled.digest, PathGlobs([seal_path])))
    logger.info(build_summary(field_set.address, os.path.join(str(distdir.relpath), field_set.dest),
                              seal[0].content if seal else None, compiled.stdout))
    artifacts = [BuiltPackageArtifact(field_set.dest)]
    digests = [compiled.digest]
    archive_format = field_set.archive_format.value
    if archive_format:
        # The archive holds `<last part of output_path>/...`, not the directories above it.
        parent = os.path.dirname(field_set.dest)
        inner = await Get(Snapshot, RemovePrefix(compiled.digest, parent))
        name = f"{os.path.basename(field_set.dest)}.{archive_format}"
        archive = await Get(Digest, CreateArchive(inner, name, _ARCHIVE_FORMATS[archive_format]))
        digests.append(await Get(Digest, AddPrefix(archive, parent)))
        artifacts.append(BuiltPackageArtifact(f"{field_set.dest}.{archive_format}"))
    return BuiltPackage(await Get(Digest, MergeDigests(digests)), tuple(artifacts))


class GenerateFilesFromHarborTaskRequest(GenerateSourcesRequest):
    # Only `files`: consumers such as python_tests ask for files *and* resources at once, and
    # two generators would be ambiguous; `archive` and `relocated_files` accept files too.
    input = HarborTaskConfigField
    output = FileSourceField


@rule(desc="Generate files from harbor_task", level=LogLevel.DEBUG)
async def generate_files_from_harbor_task(request: GenerateFilesFromHarborTaskRequest) -> GeneratedSources:
    field_set = HarborTaskFieldSet.create(request.protocol_target)
    compiled = await Get(CompiledHarborTask, CompileHarborTaskRequest(field_set))
    # Consumers find the task where `package` puts it (dist/<output_path>/), and it cannot
    # collide with the benchmark's own input files, which often live at <path>/<name>/.
    return GeneratedSources(await Get(Snapshot, AddPrefix(compiled.digest, CODEGEN_PREFIX)))


def rules() -> Iterable[Any]:
    return [
        *collect_rules(),
        UnionRule(PackageFieldSet, HarborTaskFieldSet),
        UnionRule(GenerateSourcesRequest, GenerateFilesFromHarborTaskRequest),
    ]
