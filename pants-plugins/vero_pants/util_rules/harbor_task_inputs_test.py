"""The snapshot a harbor_task compiles from: build.yaml and exactly the files of its dependencies,
every input build.yaml names provided. No PEX is built: the compiler's description is stubbed."""

from __future__ import annotations

import json

import pytest
from pants.backend.python.target_types import PexBinary
from pants.core.target_types import FilesGeneratorTarget
from pants.core.target_types import rules as core_target_types_rules
from pants.core.util_rules import source_files
from pants.engine.addresses import Address
from pants.engine.fs import DigestContents, PathGlobs
from pants.engine.internals.scheduler import ExecutionError
from pants.engine.rules import Get, rule
from pants.testutil.rule_runner import QueryRule, RuleRunner

from vero_pants.subsystems.harbor_task import HarborTaskSubsystem
from vero_pants.target_types import HarborTaskCompilerField, HarborTaskConfigField, HarborTaskTarget
from vero_pants.util_rules.harbor_compiler import HarborTaskError, find_harbor_compiler_address
from vero_pants.util_rules.harbor_task_inputs import (
    BuildConfigDescription,
    ConfigReference,
    DescribeBuildConfigRequest,
    HarborTaskInputs,
    HarborTaskInputsRequest,
    harbor_task_inputs,
    missing_references,
    parse_description,
    unprovided_agent_files,
)


@rule
async def describe_from_json(request: DescribeBuildConfigRequest) -> BuildConfigDescription:
    """Stands in for `vero harbor describe`: build.yaml holds its answer as JSON."""
    [content] = await Get(DigestContents, PathGlobs([request.config.file_path]))
    return parse_description(request.config.file_path, content.content)


def _describe(*inputs: tuple[str, str], secrets: tuple[str, ...] = ()) -> str:
    return json.dumps({"inputs": [{"field": f, "path": p} for f, p in inputs], "secrets": list(secrets)})


@pytest.fixture
def rule_runner() -> RuleRunner:
    runner = RuleRunner(
        rules=[
            harbor_task_inputs,
            find_harbor_compiler_address,
            *HarborTaskSubsystem.rules(),
            describe_from_json,
            *source_files.rules(),
            *core_target_types_rules(),
            QueryRule(HarborTaskInputs, [HarborTaskInputsRequest]),
        ],
        target_types=[HarborTaskTarget, FilesGeneratorTarget, PexBinary],
    )
    # No inference here: each harbor_task lists its dependencies, the compiler among them.
    runner.write_files(
        {
            "tool/compile.py": "",
            "tool/BUILD": "files(name='lib', sources=['compile.py'])\npex_binary(name='bin', "
                          "entry_point='compile.py', dependencies=[':lib'])\n",
            "t/build.yaml": _describe(("agent_repo", "agent"), ("dataset", "data")),
            "t/broken.yaml": _describe(("agent_repo", "agent"), ("dataset", "nowhere")),
            "t/partial.yaml": _describe(("agent_repo", "partial"), ("dataset", "data")),
            "t/agent/main.py": "",
            "t/data/train.jsonl": "",
            "t/database/other.jsonl": "",
            "t/partial/main.py": "",
            "t/partial/README.md": "owned by no target",
            "t/partial/notes/todo.txt": "owned by no target",
            "t/unrelated.txt": "",
            "t/BUILD": (
                "files(name='agent', sources=['agent/**'])\nfiles(name='data', sources=['data/**'])\n"
                "files(name='database', sources=['database/**'])\nfiles(name='partial', sources=['partial/*.py'])\n"
                "files(name='unrelated', sources=['unrelated.txt'])\n"
                "harbor_task(name='x', compiler='//tool:bin', dependencies=[':agent', ':data', '//tool:bin'])\n"
                "harbor_task(name='y', config='broken.yaml', compiler='//tool:bin', dependencies=[':agent', "
                "':database'])\n"
                "harbor_task(name='z', config='partial.yaml', compiler='//tool:bin', dependencies=[':partial', "
                "':data'])\n"
            ),
        }
    )
    return runner


def _inputs(rule_runner: RuleRunner, name: str) -> HarborTaskInputs:
    target = rule_runner.get_target(Address("t", target_name=name))
    return rule_runner.request(
        HarborTaskInputs, [HarborTaskInputsRequest(target[HarborTaskConfigField], target[HarborTaskCompilerField])]
    )


def test_the_snapshot_is_build_yaml_and_the_inputs_not_the_compiler(rule_runner: RuleRunner) -> None:
    inputs = _inputs(rule_runner, "x")
    files = {c.path for c in rule_runner.request(DigestContents, [inputs.digest])}
    assert files == {"t/build.yaml", "t/agent/main.py", "t/data/train.jsonl"}
    assert inputs.description.agent_repo == ConfigReference("agent_repo", "agent", "t/agent")


def test_a_missing_input_names_the_field_the_path_and_the_target(rule_runner: RuleRunner) -> None:
    with pytest.raises(ExecutionError) as excinfo:
        _inputs(rule_runner, "y")
    assert "t:y: inputs named in t/broken.yaml are not provided:\n  `dataset: nowhere` -> t/nowhere" in str(
        excinfo.value)


def test_every_file_of_the_agent_dir_must_be_an_input(rule_runner: RuleRunner) -> None:
    with pytest.raises(ExecutionError) as excinfo:
        _inputs(rule_runner, "z")
    message = str(excinfo.value)
    assert "t:z: files of `agent_repo: partial` (t/partial) are not provided by the target's dependencies: " \
           "README.md, notes/todo.txt." in message
    assert 'files(sources=["partial/**/*"])' in message


def test_paths_resolve_against_build_yaml_and_must_stay_inside() -> None:
    described = parse_description("tasks/bar/build.yaml", _describe(("agent_repo", "agent"),
                                                                      ("dataset", "../shared/data"),
                                                                      secrets=("API_KEY",)).encode())
    assert [(r.field, r.path) for r in described.references] == [("agent_repo", "tasks/bar/agent"),
                                                                 ("dataset", "tasks/shared/data")]
    assert described.secrets == ("API_KEY",)
    for value in ("/etc", "../../outside", "../.."):
        with pytest.raises(HarborTaskError, match="points outside the repository"):
            parse_description("t/build.yaml", _describe(("agent_repo", value)).encode())


def test_matching_is_by_path_component() -> None:
    refs = [ConfigReference("agent_repo", "agent", "t/agent"), ConfigReference("scorer", "s.py", "t/s.py"),
            ConfigReference("dataset", "data", "t/data")]
    # `t/database` must not satisfy `t/data`.
    assert missing_references(refs, ["t/agent/x.py", "t/s.py", "t/database/y.jsonl"]) == [refs[2]]
    agent = refs[0]
    assert unprovided_agent_files(agent, ["t/agent/a.py", "t/agent/b/c.txt", "t/agents/x"], ["t/agent/a.py"]) == [
        "b/c.txt"]
