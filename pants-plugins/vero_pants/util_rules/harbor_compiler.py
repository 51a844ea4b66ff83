"""The compiler a `harbor_task` names, built and ready to run as a sandboxed Process.

Both of its runs go through `HarborCompiler.process`: `vero harbor describe` (what build.yaml
names) and `vero harbor build`. A process is a pure function of its input digest: the compiler
PEX plus the files handed to it; its environment holds no host value but tool locations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from pants.backend.python.goals.package_pex_binary import PexBinaryFieldSet
from pants.backend.python.subsystems.setup import PythonSetup
from pants.backend.python.target_types import InterpreterConstraintsField
from pants.backend.python.util_rules.interpreter_constraints import InterpreterConstraints
from pants.backend.python.util_rules.pex_environment import PythonExecutable
from pants.core.goals.package import BuiltPackage, EnvironmentAwarePackageRequest
from pants.core.util_rules.system_binaries import GitBinary
from pants.engine.addresses import Address
from pants.engine.fs import Digest
from pants.engine.internals.native_engine import AddressInput
from pants.engine.process import Process
from pants.engine.rules import Get, MultiGet, collect_rules, rule
from pants.engine.target import WrappedTarget, WrappedTargetRequest
from pants.util.frozendict import FrozenDict
from pants.util.logging import LogLevel

from vero_pants.subsystems.harbor_task import HarborTaskSubsystem
from vero_pants.target_types import HarborTaskCompilerField

PEX_ROOT_CACHE = "vero_pex_root"
# What the compiler found checking build inputs, keyed by their content (vero's validation cache):
# an entry only lets a build skip work that would give the same result, so the process stays a
# pure function of its inputs.
VALIDATION_CACHE = "vero_validation"


class HarborTaskError(Exception):
    """A user error in a harbor_task target or its build config."""


@dataclass(frozen=True)
class HarborCompilerRequest:
    """The compiler of one harbor_task: its `compiler` field, else `[harbor-tasks].compiler`."""

    field: HarborTaskCompilerField


@dataclass(frozen=True)
class HarborCompilerAddress:
    address: Address


@dataclass(frozen=True)
class HarborCompiler:
    """The compiler PEX (in `digest`, at `pex_path`) and the interpreter and git it runs with."""

    digest: Digest
    pex_path: str
    python: str
    git: str

    def process(
        self,
        args: Iterable[str],
        *,
        input_digest: Digest,
        description: str,
        level: LogLevel = LogLevel.DEBUG,
        env: Mapping[str, str] = FrozenDict(),
        output_directories: Iterable[str] = (),
    ) -> Process:
        """`vero ARGS` in a sandbox holding the compiler PEX and `input_digest`."""
        # The compiler runs the baseline and the scorer under python3.11 (or 3.13), and git, from PATH.
        search_path = os.pathsep.join(dict.fromkeys([os.path.dirname(self.git), os.path.dirname(self.python)]))
        return Process(
            argv=(self.python, self.pex_path, *args),
            input_digest=input_digest,
            output_directories=tuple(output_directories),
            env={
                "PATH": search_path,
                "PEX_ROOT": f".cache/{PEX_ROOT_CACHE}",
                # The PEX hides PEX_ROOT from the compiler; its scorer check reuses the cache through this.
                "VERO_PEX_ROOT": f".cache/{PEX_ROOT_CACHE}",
                "VERO_CACHE_DIR": f".cache/{VALIDATION_CACHE}",
                "LANG": "C.UTF-8",
                **env,
            },
            append_only_caches={
                PEX_ROOT_CACHE: f".cache/{PEX_ROOT_CACHE}",
                VALIDATION_CACHE: f".cache/{VALIDATION_CACHE}",
            },
            description=description,
            level=level,
        )


@rule(desc="Find the harbor_task compiler", level=LogLevel.DEBUG)
async def find_harbor_compiler_address(
    request: HarborCompilerRequest, subsystem: HarborTaskSubsystem
) -> HarborCompilerAddress:
    field = request.field
    spec = field.value or subsystem.compiler
    origin = f"the `compiler` field of {field.address}" if field.value else "`[harbor-tasks].compiler`"
    address = await Get(
        Address,
        AddressInput,
        AddressInput.parse(spec, relative_to=field.address.spec_path, description_of_origin=origin),
    )
    return HarborCompilerAddress(address)


@rule(desc="Build the harbor_task compiler", level=LogLevel.DEBUG)
async def build_harbor_compiler(
    request: HarborCompilerRequest, python_setup: PythonSetup, git: GitBinary
) -> HarborCompiler:
    compiler = await Get(HarborCompilerAddress, HarborCompilerRequest, request)
    wrapped = await Get(
        WrappedTarget,
        WrappedTargetRequest(compiler.address, description_of_origin=f"the compiler of {request.field.address}"),
    )
    if not PexBinaryFieldSet.is_applicable(wrapped.target):
        raise HarborTaskError(
            f"{request.field.address}: the compiler {compiler.address} is not a pex_binary target; point "
            "`compiler` (or `[harbor-tasks].compiler`) at the pex_binary of the vero CLI (default "
            "//src/python/vero:vero)."
        )
    interpreter_constraints = InterpreterConstraints.create_from_compatibility_fields(
        [wrapped.target[InterpreterConstraintsField]], python_setup
    )
    package, python = await MultiGet(
        Get(BuiltPackage, EnvironmentAwarePackageRequest(PexBinaryFieldSet.create(wrapped.target))),
        Get(PythonExecutable, InterpreterConstraints, interpreter_constraints),
    )
    [pex_path] = [artifact.relpath for artifact in package.artifacts if artifact.relpath]
    assert pex_path is not None
    return HarborCompiler(package.digest, pex_path, python.path, git.path)


def rules() -> Iterable[Any]:
    return [*collect_rules(), *HarborTaskSubsystem.rules()]
