"""The compiler a harbor_task names: built from its pex_binary and run as a sandboxed process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pants.backend.python import target_types_rules
from pants.backend.python.goals import package_pex_binary
from pants.backend.python.target_types import PexBinary, PythonSourcesGeneratorTarget
from pants.backend.python.util_rules import pex_from_targets
from pants.core.target_types import FilesGeneratorTarget
from pants.core.util_rules import system_binaries
from pants.engine.addresses import Address
from pants.engine.fs import CreateDigest, Digest, FileContent, MergeDigests
from pants.engine.internals.scheduler import ExecutionError
from pants.engine.process import Process, ProcessResult
from pants.testutil.rule_runner import QueryRule, RuleRunner

from vero_pants.target_types import HarborTaskCompilerField, HarborTaskTarget
from vero_pants.testutil import FAKE_COMPILER, FAKE_COMPILER_BUILD, require_pex_cli, set_options
from vero_pants.util_rules import harbor_compiler
from vero_pants.util_rules.harbor_compiler import VALIDATION_CACHE, HarborCompiler, HarborCompilerRequest


@pytest.fixture
def rule_runner(tmp_path: Path) -> RuleRunner:
    require_pex_cli()
    runner = RuleRunner(
        rules=[
            *harbor_compiler.rules(),
            *pex_from_targets.rules(),
            *package_pex_binary.rules(),
            *target_types_rules.rules(),
            *system_binaries.rules(),
            QueryRule(HarborCompiler, [HarborCompilerRequest]),
            QueryRule(Digest, [CreateDigest]),
            QueryRule(Digest, [MergeDigests]),
            QueryRule(ProcessResult, [Process]),
        ],
        target_types=[HarborTaskTarget, FilesGeneratorTarget, PexBinary, PythonSourcesGeneratorTarget],
        isolated_local_store=True,
        bootstrap_args=[f"--named-caches-dir={tmp_path / 'named_caches'}"],
    )
    set_options(runner, env={})
    runner.write_files(
        {
            "tool/compile.py": FAKE_COMPILER,
            "tool/BUILD": FAKE_COMPILER_BUILD,
            "t/BUILD": "files(name='inputs', sources=['*.yaml'])\nharbor_task(name='x', compiler='//tool:bin')\n"
                       "harbor_task(name='not_a_pex', compiler=':inputs')\n",
        }
    )
    return runner


def _compiler(rule_runner: RuleRunner, name: str) -> HarborCompiler:
    target = rule_runner.get_target(Address("t", target_name=name))
    return rule_runner.request(HarborCompiler, [HarborCompilerRequest(target[HarborTaskCompilerField])])


def test_the_compiler_runs_in_a_sandbox_with_its_inputs(rule_runner: RuleRunner) -> None:
    compiler = _compiler(rule_runner, "x")
    assert compiler.pex_path == "tool/bin.pex" and Path(compiler.git).name == "git"
    config = rule_runner.request(
        Digest, [CreateDigest([FileContent("t/build.yaml", b'{"agent_repo": "agent", "secrets": ["K"]}')])]
    )
    input_digest = rule_runner.request(Digest, [MergeDigests([compiler.digest, config])])
    process = compiler.process(("harbor", "describe", "--config", "t/build.yaml"), input_digest=input_digest,
                               description="describe")
    # Nothing from the host but tool locations: the process is a function of its inputs.
    assert set(process.env) == {"PATH", "PEX_ROOT", "VERO_PEX_ROOT", "VERO_CACHE_DIR", "LANG"}
    # vero's validation cache lives in a named cache Pants keeps between runs, not in the sandbox.
    assert process.append_only_caches[VALIDATION_CACHE] == process.env["VERO_CACHE_DIR"]
    result = rule_runner.request(ProcessResult, [process])
    assert json.loads(result.stdout) == {"inputs": [{"field": "agent_repo", "path": "agent"}], "secrets": ["K"]}


def test_a_compiler_that_is_not_a_pex_binary_is_refused(rule_runner: RuleRunner) -> None:
    with pytest.raises(ExecutionError, match="t:not_a_pex: the compiler t:inputs is not a pex_binary target"):
        _compiler(rule_runner, "not_a_pex")
