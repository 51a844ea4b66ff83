"""Tests of the harbor_task backend: facts read from build.yaml, and the real rule graph."""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from pants.backend.python import target_types_rules
from pants.backend.python.goals import package_pex_binary
from pants.backend.python.target_types import PexBinary, PythonSourcesGeneratorTarget
from pants.backend.python.util_rules import pex_from_targets
from pants.core.goals.package import BuiltPackage
from pants.core.target_types import FilesGeneratorTarget, FileSourceField
from pants.core.target_types import rules as core_target_types_rules
from pants.core.util_rules import archive, source_files, system_binaries
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.engine.addresses import Address
from pants.engine.fs import DigestContents
from pants.engine.internals.scheduler import ExecutionError
from pants.engine.target import InferredDependencies
from pants.testutil.rule_runner import QueryRule, RuleRunner

from vero_pants.rules import (
    ConfigReference,
    HarborTaskError,
    HarborTaskFieldSet,
    HarborTaskInferenceFieldSet,
    InferHarborTaskDependencies,
    missing_references,
    read_build_config_facts,
)
from vero_pants.rules import rules as harbor_task_rules
from vero_pants.target_types import HarborTaskConfigField, HarborTaskTarget

PEX_CLI = os.environ.get("VERO_PEX_CLI", "")


def test_facts_resolve_paths_against_build_yaml() -> None:
    content = textwrap.dedent(
        """
        mode: B
        agent_repo: agent
        dataset: ../shared/data
        harbor: {task_source: inner, agent: "a:B"}
        secrets: [API_KEY, OTHER]
        """
    ).encode()
    facts = read_build_config_facts("tasks/bar/build.yaml", content)
    assert [(r.key, r.path) for r in facts.references] == [
        ("agent_repo", "tasks/bar/agent"),
        ("dataset", "tasks/shared/data"),
        ("harbor.task_source", "tasks/bar/inner"),
    ]
    assert facts.secrets == ("API_KEY", "OTHER")


def test_registry_source_is_not_a_path_and_bad_yaml_yields_nothing() -> None:
    facts = read_build_config_facts("t/build.yaml", b"harbor: {task_source: 'org/name@1.0'}\n")
    assert facts.references == ()
    local = read_build_config_facts("t/build.yaml", b"harbor: {task_source: 'bench@1.0', registry_path: r.json}\n")
    assert [(r.key, r.path) for r in local.references] == [("harbor.registry_path", "t/r.json")]
    assert read_build_config_facts("t/build.yaml", b"a: [unclosed\n").references == ()
    assert read_build_config_facts("t/build.yaml", b"- a list\n").references == ()


@pytest.mark.parametrize("value", ["/etc", "../../outside", "../.."])
def test_paths_outside_the_build_root_are_refused(value: str) -> None:
    with pytest.raises(HarborTaskError, match="points outside the repository"):
        read_build_config_facts("t/build.yaml", f"agent_repo: '{value}'\n".encode())


def test_missing_references_matches_files_and_directories() -> None:
    refs = [ConfigReference("agent_repo", "agent", "t/agent"), ConfigReference("scorer", "s.py", "t/s.py"),
            ConfigReference("dataset", "data", "t/data")]
    files = ["t/agent/x.py", "t/s.py", "t/database/y.jsonl"]
    # `t/database` must not satisfy `t/data`.
    assert missing_references(refs, files) == [refs[2]]


# A stand-in compiler with the real CLI shape (`harbor build -c CFG -o OUT --runtime-pex PEX`):
# it lists the inputs it was given, so the test sees exactly what the sandbox held.
FAKE_COMPILER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    args = sys.argv[1:]
    assert args[:2] == ["harbor", "build"], args
    value = lambda flag: args[args.index(flag) + 1]
    config, out, pex = value("-c"), value("-o"), value("--runtime-pex")
    inputs = sorted(os.path.join(d, f) for d, _, fs in os.walk(".") for f in fs
                    if not d.startswith(("./.cache", "./__vero_out")))
    os.makedirs(os.path.join(out, "environment", "bin"))
    with open(os.path.join(out, "inputs.json"), "w") as f:
        seen = {"config": config, "inputs": inputs, "secret": os.environ.get("API_KEY")}
        json.dump(seen, f, sort_keys=True)
    with open(pex, "rb") as src, open(os.path.join(out, "environment", "bin", "vero.pex"), "wb") as dst:
        dst.write(src.read())
    """
)


def _set_options(runner: RuleRunner, env: dict[str, str]) -> None:
    data = Path(PEX_CLI).read_bytes()
    version = subprocess.run([PEX_CLI, "--version"], capture_output=True, text=True, check=True).stdout
    version = version.strip()
    known = f"v{version}|linux_x86_64|{hashlib.sha256(data).hexdigest()}|{len(data)}"
    runner.set_options(
        [
            f"--pex-cli-url-template=file://{PEX_CLI}",
            f"--pex-cli-version=v{version}",
            f"--pex-cli-known-versions=['{known}']",
            "--python-interpreter-constraints=['CPython>=3.9,<3.12']",
            "--python-bootstrap-search-path=['<PYENV>', '<PATH>']",
        ],
        env_inherit={"PATH", "PYENV_ROOT", "HOME"},
        env=env,
    )


@pytest.fixture
def rule_runner(tmp_path: Path) -> RuleRunner:
    if not PEX_CLI or not os.path.exists(PEX_CLI):
        pytest.skip("VERO_PEX_CLI (build-support/bin/pex, built by ./pants) is needed")
    runner = RuleRunner(
        rules=[
            *harbor_task_rules(),
            *pex_from_targets.rules(),
            *package_pex_binary.rules(),
            *target_types_rules.rules(),
            *core_target_types_rules(),
            *archive.rules(),
            *source_files.rules(),
            *system_binaries.rules(),
            QueryRule(BuiltPackage, [HarborTaskFieldSet]),
            QueryRule(InferredDependencies, [InferHarborTaskDependencies]),
            QueryRule(SourceFiles, [SourceFilesRequest]),
        ],
        target_types=[HarborTaskTarget, FilesGeneratorTarget, PexBinary, PythonSourcesGeneratorTarget],
        isolated_local_store=True,
        bootstrap_args=[f"--named-caches-dir={tmp_path / 'named_caches'}"],
    )
    _set_options(runner, env={"API_KEY": "the-real-secret-value"})
    runner.write_files(
        {
            "tool/compile.py": FAKE_COMPILER,
            "tool/BUILD": "python_sources(name='lib')\npex_binary(name='bin', entry_point='compile.py')\n",
            "t/build.yaml": "mode: A\nagent_repo: agent\ndataset: data\nsecrets: [API_KEY]\n",
            "t/agent/main.py": "print('hi')\n",
            "t/data/train.jsonl": '{"x": 1}\n',
            "t/unrelated.txt": "not an input\n",
            "t/BUILD": textwrap.dedent(
                """
                files(name="agent", sources=["agent/**"])
                files(name="data", sources=["data/**"])
                harbor_task(name="x", compiler="//tool:bin", archive_format="tar.gz")
                harbor_task(name="y", config="broken.yaml", compiler="//tool:bin", output_name="why")
                """
            ),
            "t/broken.yaml": "agent_repo: agent\ndataset: nowhere\n",
        }
    )
    return runner


def _package(rule_runner: RuleRunner, name: str) -> dict[str, bytes]:
    target = rule_runner.get_target(Address("t", target_name=name))
    built = rule_runner.request(BuiltPackage, [HarborTaskFieldSet.create(target)])
    contents = rule_runner.request(DigestContents, [built.digest])
    return {c.path: c.content for c in contents}


def test_inference_finds_owners_and_the_compiler(rule_runner: RuleRunner) -> None:
    target = rule_runner.get_target(Address("t", target_name="x"))
    inferred = rule_runner.request(
        InferredDependencies, [InferHarborTaskDependencies(HarborTaskInferenceFieldSet.create(target))]
    )
    assert {a.maybe_convert_to_target_generator() for a in inferred.include} == {
        Address("tool", target_name="bin"),
        Address("t", target_name="agent"),
        Address("t", target_name="data"),
    }


def test_package_runs_the_compiler_on_exactly_the_inputs(rule_runner: RuleRunner) -> None:
    import json

    files = _package(rule_runner, "x")
    assert set(files) == {"t/x/inputs.json", "t/x/environment/bin/vero.pex", "t/x.tar.gz"}
    seen = json.loads(files["t/x/inputs.json"])
    assert seen["config"] == "t/build.yaml"
    # the declared inputs and the compiler PEX, nothing unrelated
    assert "./t/agent/main.py" in seen["inputs"] and "./t/data/train.jsonl" in seen["inputs"]
    assert "./t/unrelated.txt" not in seen["inputs"]
    assert "./tool/bin.pex" in seen["inputs"]
    # the secret's value never enters the sandbox
    assert seen["secret"] == "set-on-host"
    assert files["t/x/environment/bin/vero.pex"].startswith(b"#!")


def test_codegen_puts_the_task_where_package_does(rule_runner: RuleRunner) -> None:
    target = rule_runner.get_target(Address("t", target_name="x"))
    generated = rule_runner.request(
        SourceFiles,
        [SourceFilesRequest([target[HarborTaskConfigField]], for_sources_types=(FileSourceField,),
                            enable_codegen=True)],
    )
    assert set(generated.snapshot.files) == {"dist/t/x/inputs.json", "dist/t/x/environment/bin/vero.pex"}


def test_missing_input_names_the_path_and_target(rule_runner: RuleRunner) -> None:
    with pytest.raises(ExecutionError) as excinfo:
        _package(rule_runner, "y")
    message = str(excinfo.value)
    assert "t:y" in message and "`dataset: nowhere` -> t/nowhere" in message


@pytest.mark.parametrize("env", [{}, {"API_KEY": ""}])
def test_missing_or_empty_secret_is_named(rule_runner: RuleRunner, env: dict[str, str]) -> None:
    _set_options(rule_runner, env=env)
    with pytest.raises(ExecutionError, match=r"not set \(or empty\) in the environment: API_KEY"):
        _package(rule_runner, "x")
