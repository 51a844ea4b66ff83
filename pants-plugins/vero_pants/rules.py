"""Rules that compile a `harbor_task` target with vero's compiler PEX inside the sandbox.

One rule (`render_harbor_task`) runs the compiler; `package`, the two codegen paths and the
archive option all request its result, so they share one cached process. The process is a
pure function of its input digest: the compiler PEX, build.yaml and the declared input files.

The baseline is the agent directory as it is on disk, minus what git ignores, whichever way the
task is built (see vero.compiler.agent_repo): the sandbox holds exactly the files Pants sees there
(Pants applies the same ignore rules), so every such file must be an input, and `package` warns
about uncommitted changes in the agent directory as `vero harbor build` does.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

import yaml
from pants.backend.python.goals.package_pex_binary import PexBinaryFieldSet
from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.target_types import InterpreterConstraintsField
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.util_rules.pex_environment import PythonExecutable
from pants.base.build_root import BuildRoot
from pants.core.goals.package import (
    BuiltPackage,
    BuiltPackageArtifact,
    EnvironmentAwarePackageRequest,
    PackageFieldSet,
)
from pants.core.target_types import FileSourceField
from pants.core.util_rules.archive import CreateArchive
from pants.core.util_rules.distdir import DistDir
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.core.util_rules.system_binaries import (
    ArchiveFormat,
    BinaryPathRequest,
    BinaryPaths,
    GitBinaryException,
)
from pants.engine.addresses import Address
from pants.engine.env_vars import EnvironmentVars, EnvironmentVarsRequest
from pants.engine.fs import (
    AddPrefix,
    Digest,
    DigestContents,
    DigestSubset,
    MergeDigests,
    PathGlobs,
    Paths,
    RemovePrefix,
    Snapshot,
)
from pants.engine.internals.graph import Owners, OwnersRequest
from pants.engine.internals.native_engine import AddressInput
from pants.engine.process import Process, ProcessResult
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import (
    FieldSet,
    GeneratedSources,
    GenerateSourcesRequest,
    HydratedSources,
    HydrateSourcesRequest,
    InferDependenciesRequest,
    InferredDependencies,
    SourcesField,
    TransitiveTargets,
    TransitiveTargetsRequest,
    WrappedTarget,
    WrappedTargetRequest,
)
from pants.engine.unions import UnionRule
from pants.util.logging import LogLevel
from pants.vcs.git import GitWorktreeRequest, MaybeGitWorktree

from vero_pants.target_types import (
    HarborTaskArchiveFormatField,
    HarborTaskCompilerField,
    HarborTaskConfigField,
    HarborTaskDryRunField,
    HarborTaskOutputNameField,
)

logger = logging.getLogger(__name__)

_OUT_DIR = "__vero_out"
CODEGEN_PREFIX = "dist"
_PEX_ROOT_CACHE = "vero_pex_root"
# Secret values never enter the sandbox (nor the cache key, nor a remote cache): the plugin
# checks that each declared secret is set on the host, and the compiler sees this stand-in.
SECRET_STAND_IN = "set-on-host"
# build.yaml keys whose values are input paths relative to build.yaml's directory.
PATH_KEYS = ("agent_repo", "dataset", "scorer", "inner_task", "solution")
_GIT_SEARCH_PATH = ("/usr/bin", "/bin", "/usr/local/bin")
_ARCHIVE_FORMATS = {"tar": ArchiveFormat.TAR, "tar.gz": ArchiveFormat.TGZ, "zip": ArchiveFormat.ZIP}
MAX_LISTED_PATHS = 10
_SEAL = "SEAL.json"


class HarborTaskError(Exception):
    """A user error in a harbor_task target or its build config."""


@dataclass(frozen=True)
class HarborTaskFieldSet(PackageFieldSet):
    required_fields = (HarborTaskConfigField,)

    config: HarborTaskConfigField
    output_name: HarborTaskOutputNameField
    archive_format: HarborTaskArchiveFormatField
    compiler: HarborTaskCompilerField
    dry_run: HarborTaskDryRunField

    @property
    def dest(self) -> str:
        """The compiled task's directory, relative to dist/ (and to the codegen root)."""
        return os.path.join(self.address.spec_path, self.output_name.value or self.address.target_name)


@dataclass(frozen=True)
class ConfigReference:
    """One input path named in build.yaml."""

    key: str
    value: str
    path: str  # relative to the build root


@dataclass(frozen=True)
class BuildConfigFacts:
    """What the plugin reads from build.yaml: input paths and secret names. The compiler
    validates the whole file; unreadable YAML yields no facts here and its error there."""

    references: tuple[ConfigReference, ...]
    secrets: tuple[str, ...]


def read_build_config_facts(config_path: str, content: bytes) -> BuildConfigFacts:
    """Extract input paths and secret names from build.yaml, leniently."""
    try:
        data: Any = yaml.safe_load(content)
    except yaml.YAMLError:
        return BuildConfigFacts((), ())
    if not isinstance(data, dict):
        return BuildConfigFacts((), ())
    base = os.path.dirname(config_path)
    candidates: list[tuple[str, Any]] = [(key, data.get(key)) for key in PATH_KEYS]
    harbor = data.get("harbor")
    if isinstance(harbor, dict):
        source = harbor.get("task_source")
        # A registry source (`name@version`, `org/name@version`) is not a path; its local
        # registry.json is (the tasks it lists are absolute paths or file:// repositories).
        if isinstance(source, str) and "@" not in source:
            candidates.append(("harbor.task_source", source))
        candidates.append(("harbor.registry_path", harbor.get("registry_path")))
    references = []
    for key, value in candidates:
        if not isinstance(value, str) or not value:
            continue
        path = os.path.normpath(os.path.join(base, value))
        if os.path.isabs(value) or path == ".." or path.startswith("../"):
            raise HarborTaskError(
                f"{config_path}: `{key}: {value}` points outside the repository; under Pants every input "
                "must be a path inside the build root, relative to build.yaml's directory."
            )
        references.append(ConfigReference(key, value, path))
    secrets = data.get("secrets")
    names = tuple(s for s in secrets if isinstance(s, str)) if isinstance(secrets, list) else ()
    return BuildConfigFacts(tuple(references), names)


def missing_references(references: Iterable[ConfigReference], files: Iterable[str]) -> list[ConfigReference]:
    """The references for which no input file is at or under the referenced path."""
    file_list = list(files)
    return [
        ref for ref in references
        if not any(f == ref.path or f.startswith(ref.path.rstrip("/") + "/") for f in file_list)
    ]


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:MAX_LISTED_PATHS])
    return shown + (f" and {len(paths) - MAX_LISTED_PATHS} more" if len(paths) > MAX_LISTED_PATHS else "")


def unprovided_agent_files(agent: ConfigReference, on_disk: Iterable[str], inputs: Iterable[str]) -> list[str]:
    """Files Pants sees under the agent directory that no dependency provides, relative to it:
    the baseline is the whole directory, so the sandbox must hold every one of them."""
    provided = set(inputs)
    prefix = agent.path.rstrip("/") + "/"
    return sorted(path[len(prefix):] for path in on_disk if path.startswith(prefix) and path not in provided)


def uncommitted_changes_warning(agent_path: str, changed: list[str]) -> str:
    """Worded as `vero harbor build` words it (vero.compiler.agent_repo.uncommitted_changes_warning)."""
    return (f"agent_repo {agent_path} has uncommitted changes ({_listed(changed)}); the baseline is the directory "
            "as it is on disk, these changes included: commit them to make the baseline reproducible from git")


def compile_description(address: Address, distdir: DistDir, dest: str) -> str:
    """The log line of the compile process, naming the directory `package` writes."""
    return f"Compiling {address} into {os.path.join(str(distdir.relpath), dest)}"


async def _build_config_facts(field: HarborTaskConfigField) -> BuildConfigFacts:
    contents = await Get(DigestContents, PathGlobs([field.file_path]))
    if not contents:
        return BuildConfigFacts((), ())
    return read_build_config_facts(field.file_path, contents[0].content)


async def _compiler_address(field_set: HarborTaskFieldSet | HarborTaskInferenceFieldSet) -> Address:
    return await Get(
        Address,
        AddressInput,
        AddressInput.parse(
            field_set.compiler.value,
            relative_to=field_set.address.spec_path,
            description_of_origin=f"the `compiler` field of {field_set.address}",
        ),
    )


@dataclass(frozen=True)
class RenderHarborTaskRequest:
    field_set: HarborTaskFieldSet


@dataclass(frozen=True)
class RenderedHarborTask:
    digest: Digest  # the compiled task, under field_set.dest
    stdout: bytes   # the compiler's report: `checked: ...` lines and the `built ...` line
    stderr: bytes   # its `warning: ...` lines


@rule(desc="Compile harbor_task", level=LogLevel.DEBUG)
async def render_harbor_task(
    request: RenderHarborTaskRequest, python_setup: PythonSetup, distdir: DistDir
) -> RenderedHarborTask:
    fs = request.field_set
    compiler_address = await _compiler_address(fs)
    compiler = await Get(
        WrappedTarget,
        WrappedTargetRequest(compiler_address, description_of_origin=f"the `compiler` field of {fs.address}"),
    )
    if not PexBinaryFieldSet.is_applicable(compiler.target):
        raise HarborTaskError(
            f"{fs.address}: `compiler={fs.compiler.value!r}` is not a pex_binary target; point it at the "
            "pex_binary of the vero CLI (default //src/python/vero:vero)."
        )
    interpreter_constraints = InterpreterConstraints.create_from_compatibility_fields(
        [compiler.target[InterpreterConstraintsField]], python_setup
    )
    facts = await _build_config_facts(fs.config)
    compiler_package, python, git_paths, host_env, transitive, compiler_closure, config = await MultiGet(
        Get(BuiltPackage, EnvironmentAwarePackageRequest(PexBinaryFieldSet.create(compiler.target))),
        Get(PythonExecutable, InterpreterConstraints, interpreter_constraints),
        Get(BinaryPaths, BinaryPathRequest(binary_name="git", search_path=_GIT_SEARCH_PATH)),
        Get(EnvironmentVars, EnvironmentVarsRequest(facts.secrets)),
        Get(TransitiveTargets, TransitiveTargetsRequest([fs.address])),
        Get(TransitiveTargets, TransitiveTargetsRequest([compiler_address])),
        Get(HydratedSources, HydrateSourcesRequest(fs.config)),
    )
    git = git_paths.first_path
    if git is None:
        raise HarborTaskError(
            f"{fs.address}: the compiler needs `git`; install it (looked in {', '.join(_GIT_SEARCH_PATH)})."
        )
    # Compose's `${NAME:?}` guard refuses an empty value too.
    missing_secrets = [name for name in facts.secrets if not host_env.get(name)]
    if missing_secrets:
        raise HarborTaskError(
            f"{fs.address}: {fs.config.file_path} declares secret(s) that are not set (or empty) in the environment: "
            f"{', '.join(missing_secrets)}. Export them before packaging (only their presence is checked; "
            "the values never enter the build)."
        )
    tool_addresses = {t.address for t in compiler_closure.closure}
    inputs = await Get(
        SourceFiles,
        SourceFilesRequest(
            t.get(SourcesField) for t in transitive.dependencies if t.address not in tool_addresses
        ),
    )
    unprovided = missing_references(facts.references, inputs.snapshot.files)
    if unprovided:
        lines = "\n".join(
            f"  `{ref.key}: {ref.value}` -> {ref.path}: no file of the target's dependencies is there"
            for ref in unprovided
        )
        raise HarborTaskError(
            f"{fs.address}: inputs named in {fs.config.file_path} are not provided:\n{lines}\n"
            "Add a `files(sources=[\"<dir>/**\"])` target owning them (it is then inferred), or list it in "
            "`dependencies`; check the path for typos."
        )
    agent = next((ref for ref in facts.references if ref.key == "agent_repo"), None)
    if agent is not None:
        on_disk = await Get(Paths, PathGlobs([f"{agent.path}/**"]))
        unowned = unprovided_agent_files(agent, on_disk.files, inputs.snapshot.files)
        if unowned:
            raise HarborTaskError(
                f"{fs.address}: files of `agent_repo: {agent.value}` ({agent.path}) are not provided by the "
                f"target's dependencies: {_listed(unowned)}. The baseline is the whole directory, as "
                "`vero harbor build` bakes it: own them with a `files` target (e.g. "
                f"`files(sources=[\"{os.path.basename(agent.path)}/**/*\"])` in the BUILD file above it), delete "
                "them, or have git ignore them."
            )
    [pex_artifact] = [a for a in compiler_package.artifacts if a.relpath]
    pex_path = pex_artifact.relpath
    assert pex_path is not None
    out = os.path.join(_OUT_DIR, os.path.basename(fs.dest))
    input_digest = await Get(
        Digest, MergeDigests([compiler_package.digest, config.snapshot.digest, inputs.snapshot.digest])
    )
    dry_run = () if fs.dry_run.value else ("--no-dry-run",)
    # The compiler runs the baseline and the scorer under python3.11 (or 3.13), found on PATH.
    search_path = os.pathsep.join(dict.fromkeys([os.path.dirname(git.path), os.path.dirname(python.path)]))
    result = await Get(
        ProcessResult,
        Process(
            argv=(python.path, pex_path, "harbor", "build", "-c", fs.config.file_path, "-o", out,
                  "--runtime-pex", pex_path, *dry_run),
            input_digest=input_digest,
            output_directories=(_OUT_DIR,),
            env={
                "PATH": search_path,
                "PEX_ROOT": f".cache/{_PEX_ROOT_CACHE}",
                # The PEX hides PEX_ROOT from the compiler; its scorer check reuses the cache through this.
                "VERO_PEX_ROOT": f".cache/{_PEX_ROOT_CACHE}",
                "LANG": "C.UTF-8",
                **{name: SECRET_STAND_IN for name in facts.secrets},
            },
            append_only_caches={_PEX_ROOT_CACHE: f".cache/{_PEX_ROOT_CACHE}"},
            description=compile_description(fs.address, distdir, fs.dest),
            level=LogLevel.INFO,
        ),
    )
    stripped = await Get(Digest, RemovePrefix(result.output_digest, _OUT_DIR))
    return RenderedHarborTask(await Get(Digest, AddPrefix(stripped, fs.address.spec_path)), result.stdout,
                              result.stderr)


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


async def _warn_about_uncommitted_changes(field_set: HarborTaskFieldSet) -> None:
    """The CLI's warning for an agent dir that differs from git's HEAD (the sandbox has no .git)."""
    facts = await _build_config_facts(field_set.config)
    agent = next((ref for ref in facts.references if ref.key == "agent_repo"), None)
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
    rendered = await Get(RenderedHarborTask, RenderHarborTaskRequest(field_set))
    await _warn_about_uncommitted_changes(field_set)
    for text in rendered.stderr.decode("utf-8", "replace").splitlines():
        if text.startswith("warning: "):
            logger.warning(f"{field_set.address}: {text.removeprefix('warning: ')}")
    seal_path = os.path.join(field_set.dest, _SEAL)
    seal = await Get(DigestContents, DigestSubset(rendered.digest, PathGlobs([seal_path])))
    logger.info(build_summary(field_set.address, os.path.join(str(distdir.relpath), field_set.dest),
                              seal[0].content if seal else None, rendered.stdout))
    artifacts = [BuiltPackageArtifact(field_set.dest)]
    digests = [rendered.digest]
    archive_format = field_set.archive_format.value
    if archive_format:
        # The archive holds `<output_name>/...`, not the BUILD directory's path.
        inner = await Get(Snapshot, RemovePrefix(rendered.digest, field_set.address.spec_path))
        name = f"{os.path.basename(field_set.dest)}.{archive_format}"
        archive = await Get(Digest, CreateArchive(inner, name, _ARCHIVE_FORMATS[archive_format]))
        digests.append(await Get(Digest, AddPrefix(archive, field_set.address.spec_path)))
        artifacts.append(BuiltPackageArtifact(os.path.join(field_set.address.spec_path, name)))
    return BuiltPackage(await Get(Digest, MergeDigests(digests)), tuple(artifacts))


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
    compiler_address = await _compiler_address(fs)
    facts = await _build_config_facts(fs.config)
    globs = [glob for ref in facts.references for glob in (ref.path, f"{ref.path}/**")]
    paths = await Get(Paths, PathGlobs(globs)) if globs else Paths((), ())
    owners = await Get(Owners, OwnersRequest(tuple(paths.files))) if paths.files else Owners()
    inferred = {compiler_address, *(address for address in owners if address != fs.address)}
    return InferredDependencies(sorted(inferred))


class GenerateFilesFromHarborTaskRequest(GenerateSourcesRequest):
    # Only `files`: consumers such as python_tests ask for files *and* resources at once, and
    # two generators would be ambiguous; `archive` and `relocated_files` accept files too.
    input = HarborTaskConfigField
    output = FileSourceField


@rule(desc="Generate files from harbor_task", level=LogLevel.DEBUG)
async def generate_files_from_harbor_task(request: GenerateFilesFromHarborTaskRequest) -> GeneratedSources:
    field_set = HarborTaskFieldSet.create(request.protocol_target)
    rendered = await Get(RenderedHarborTask, RenderHarborTaskRequest(field_set))
    # Consumers find the task where `package` puts it (dist/<path>/<name>/), and it cannot
    # collide with the benchmark's own input files, which often live at <path>/<name>/.
    return GeneratedSources(await Get(Snapshot, AddPrefix(rendered.digest, CODEGEN_PREFIX)))


def rules() -> Iterable[Any]:
    return [
        *collect_rules(),
        UnionRule(PackageFieldSet, HarborTaskFieldSet),
        UnionRule(InferDependenciesRequest, InferHarborTaskDependencies),
        UnionRule(GenerateSourcesRequest, GenerateFilesFromHarborTaskRequest),
    ]
