"""Dependency inference: the owners of what build.yaml names, and the compiler. No PEX is built:
the compiler's description of build.yaml is stubbed."""

from __future__ import annotations

import json

import pytest
from pants.backend.python.target_types import PexBinary
from pants.core.target_types import FilesGeneratorTarget
from pants.engine.addresses import Address
from pants.engine.fs import DigestContents, PathGlobs
from pants.engine.rules import Get, rule
from pants.engine.target import InferredDependencies
from pants.testutil.rule_runner import QueryRule, RuleRunner

from vero_pants.subsystems.harbor_task import HarborTaskSubsystem
from vero_pants.target_types import HarborTaskTarget
from vero_pants.util_rules import dependencies
from vero_pants.util_rules.dependencies import HarborTaskInferenceFieldSet, InferHarborTaskDependencies
from vero_pants.util_rules.harbor_compiler import find_harbor_compiler_address
from vero_pants.util_rules.harbor_task_inputs import (
    BuildConfigDescription,
    DescribeBuildConfigRequest,
    parse_description,
)


@rule
async def describe_from_json(request: DescribeBuildConfigRequest) -> BuildConfigDescription:
    """Stands in for `vero harbor describe`: build.yaml holds its answer as JSON."""
    [content] = await Get(DigestContents, PathGlobs([request.config.file_path]))
    return parse_description(request.config.file_path, content.content)


@pytest.fixture
def rule_runner() -> RuleRunner:
    runner = RuleRunner(
        rules=[
            *dependencies.rules(),
            find_harbor_compiler_address,
            *HarborTaskSubsystem.rules(),
            describe_from_json,
            QueryRule(InferredDependencies, [InferHarborTaskDependencies]),
        ],
        target_types=[HarborTaskTarget, FilesGeneratorTarget, PexBinary],
    )
    description = {"inputs": [{"field": "agent_repo", "path": "agent"}, {"field": "dataset", "path": "../shared/data"},
                              {"field": "scorer", "path": "scorer.py"}], "secrets": []}
    runner.write_files(
        {
            "tool/BUILD": "pex_binary(name='bin', entry_point='compile.py')\npex_binary(name='other', "
                          "entry_point='compile.py')\n",
            "t/build.yaml": json.dumps(description),
            "t/agent/main.py": "",
            "t/scorer.py": "",
            "t/unrelated.txt": "",
            "shared/data/train.jsonl": "",
            "shared/BUILD": "files(name='data', sources=['data/*'])\n",
            "t/BUILD": (
                "files(name='agent', sources=['agent/**'])\nfiles(name='scorer', sources=['scorer.py'])\n"
                "files(name='unrelated', sources=['unrelated.txt'])\n"
                "harbor_task(name='x', compiler='//tool:bin')\nharbor_task(name='y')\n"
            ),
        }
    )
    return runner


def _inferred(rule_runner: RuleRunner, name: str) -> set[Address]:
    target = rule_runner.get_target(Address("t", target_name=name))
    inferred = rule_runner.request(
        InferredDependencies, [InferHarborTaskDependencies(HarborTaskInferenceFieldSet.create(target))]
    )
    return {address.maybe_convert_to_target_generator() for address in inferred.include}


def test_inference_finds_the_owners_of_each_input_and_the_compiler(rule_runner: RuleRunner) -> None:
    assert _inferred(rule_runner, "x") == {
        Address("tool", target_name="bin"),
        Address("t", target_name="agent"),
        Address("t", target_name="scorer"),
        Address("shared", target_name="data"),
    }


def test_the_default_compiler_is_the_subsystems(rule_runner: RuleRunner) -> None:
    rule_runner.set_options(["--harbor-tasks-compiler=//tool:other"])
    assert Address("tool", target_name="other") in _inferred(rule_runner, "y")

