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
from pants.core.util_rules import archive, distdir, source_files, system_binaries
from pants.core.util_rules.distdir import DistDir
from pants.core.util_rules.source_files import SourceFiles, SourceFilesRequest
from pants.engine.addresses import Address
from pants.engine.fs import DigestContents
from pants.engine.internals.scheduler import ExecutionError
from pants.engine.target import InferredDependencies
from pants.testutil.rule_runner import QueryRule, RuleRunner
from pants.vcs import git

from vero_pants.rules import (
    ConfigReference,
    HarborTaskError,
    HarborTaskFieldSet,
    HarborTaskInferenceFieldSet,
    InferHarborTaskDependencies,
    build_summary,
    compile_description,
    missing_references,
    read_build_config_facts,
    uncommitted_changes_warning,
    unprovided_agent_files,
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
        seen = {"config": config, "inputs": inputs, "secret": os.environ.get("API_KEY"), "argv": args}
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
            *distdir.rules(),
            *git.rules(),
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
                harbor_task(name="nodry", compiler="//tool:bin", dry_run=False)
                files(name="partial", sources=["partial/*.py"])
                harbor_task(name="z", config="partial.yaml", compiler="//tool:bin")
                """
            ),
            "t/broken.yaml": "agent_repo: agent\ndataset: nowhere\n",
            "t/partial.yaml": "mode: A\nagent_repo: partial\ndataset: data\n",
            "t/partial/main.py": "print('hi')\n",
            "t/partial/README.md": "owned by no target\n",
            "t/partial/notes/todo.txt": "owned by no target\n",
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


def test_dry_run_false_passes_no_dry_run_to_the_compiler(rule_runner: RuleRunner) -> None:
    import json

    assert "--no-dry-run" not in json.loads(_package(rule_runner, "x")["t/x/inputs.json"])["argv"]
    assert json.loads(_package(rule_runner, "nodry")["t/nodry/inputs.json"])["argv"][-1] == "--no-dry-run"


def test_every_file_of_the_agent_dir_must_be_an_input(rule_runner: RuleRunner) -> None:
    with pytest.raises(ExecutionError) as excinfo:
        _package(rule_runner, "z")
    message = str(excinfo.value)
    assert "t:z: files of `agent_repo: partial` (t/partial) are not provided by the target's dependencies: " \
           "README.md, notes/todo.txt." in message
    assert 'files(sources=[\"partial/**/*\"])' in message or 'files(sources=["partial/**/*"])' in message


def test_helpers_name_what_package_writes() -> None:
    agent = ConfigReference("agent_repo", "agent", "t/agent")
    assert unprovided_agent_files(agent, ["t/agent/a.py", "t/agent/b/c.txt", "t/agents/x"], ["t/agent/a.py"]) == [
        "b/c.txt"]
    assert compile_description(Address("tasks", target_name="units"), DistDir(relpath=Path("dist")),
                               "tasks/units") == "Compiling tasks:units into dist/tasks/units"
    seal = b'{"root": "' + b"a" * 64 + b'", "build_config_sha256": "' + b"b" * 64 + b'"}'
    summary = build_summary(Address("t", target_name="x"), "dist/t/x", seal, b"checked: one\nbuilt ...\n")
    assert summary == f"t:x: dist/t/x has seal {'a' * 64}, compiled from build.yaml sha256 {'b' * 64}\n  checked: one"
    warning = uncommitted_changes_warning("t/agent", [f"f{i}" for i in range(12)])
    assert warning.startswith("agent_repo t/agent has uncommitted changes (f0, f1, ") and "f9 and 2 more)" in warning


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


# --- one baseline, whichever way it is built ----------------------------------------------------------

VERO_PEX = Path("src.python.vero/vero.pex")  # runtime_package_dependencies: the real compiler
# The harbor_task's compiler: a PEX that hands its command line to the real vero PEX, which it also
# bakes (as `vero harbor build` without --runtime-pex bakes itself).
SHIM = """
import os, sys
args = sys.argv[1:]
args[args.index("--runtime-pex") + 1] = {pex!r}
os.execv({python!r}, [{python!r}, {pex!r}, *args])
"""
BENCH_YAML = """
mode: A
name: t/bench
agent_repo: agent
dataset: data
label_fields: [answer]
entrypoint: solver.core:solve
scorer: scorer/scorer.py
splits: [{split: train, access: viewable}, {split: test, access: no_access}]
budgets: [{split: train, total_run_budget: 1}]
selection_split: train
targets: [{split: test, reward_key: acc}]
"""


def _rows(split: str) -> str:
    return "".join(f'{{"id": "{split}-{i}", "question": "{i}", "answer": "{i}"}}\n' for i in range(3))


def test_pants_and_the_cli_bake_the_same_baseline_clean_and_dirty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import json
    import logging
    import re
    import shutil

    python = shutil.which("python3.11")
    if not PEX_CLI or not os.path.exists(PEX_CLI) or not VERO_PEX.is_file() or python is None:
        pytest.skip("needs VERO_PEX_CLI, the vero PEX and python3.11")  # a failure under CI=true
    vero = str(VERO_PEX.absolute())
    runner = RuleRunner(
        rules=[
            *harbor_task_rules(),
            *pex_from_targets.rules(),
            *package_pex_binary.rules(),
            *target_types_rules.rules(),
            *core_target_types_rules(),
            *archive.rules(),
            *distdir.rules(),
            *git.rules(),
            *source_files.rules(),
            *system_binaries.rules(),
            QueryRule(BuiltPackage, [HarborTaskFieldSet]),
        ],
        target_types=[HarborTaskTarget, FilesGeneratorTarget, PexBinary, PythonSourcesGeneratorTarget],
        isolated_local_store=True,
        # A Pants run takes the root .gitignore's patterns into its ignore list; RuleRunner does not
        # read .gitignore (use_gitignore=False), so it gets the same pattern as an option.
        bootstrap_args=[f"--named-caches-dir={tmp_path / 'named_caches'}", "--pants-ignore=+['*.log']"],
    )
    runner.write_files(
        {
            ".gitignore": "*.log\n",
            "shim/compile.py": SHIM.format(pex=vero, python=python),
            "shim/BUILD": "python_sources(name='lib')\npex_binary(name='bin', entry_point='compile.py')\n",
            "b/build.yaml": BENCH_YAML,
            "b/agent/solver/__init__.py": "",
            "b/agent/solver/core.py": "def solve(row):\n    return row['question']\n",
            "b/agent/README.md": "solve(row) returns the answer as a string\n",
            "b/data/train.jsonl": _rows("train"),
            "b/data/test.jsonl": _rows("test"),
            "b/scorer/scorer.py": "def score(output, row):\n    return float(output == row['answer'])\n",
            "b/BUILD": (
                "files(name='inputs', sources=['build.yaml', 'agent/**/*', 'data/*', 'scorer/*'])\n"
                "harbor_task(name='task', compiler='//shim:bin')\n"
            ),
        }
    )
    _set_options(runner, env={})
    root = Path(runner.build_root)
    identity = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgSign=false"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "baseline"]):
        subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)
    monkeypatch.chdir(root)  # Pants finds the git repo from its working directory

    def through_pants() -> tuple[str, list[str]]:
        caplog.clear()
        target = runner.get_target(Address("b", target_name="task"))
        built = runner.request(BuiltPackage, [HarborTaskFieldSet.create(target)])
        contents = {c.path: c.content for c in runner.request(DigestContents, [built.digest])}
        warnings = [r.getMessage() for r in caplog.records
                    if r.levelno == logging.WARNING and r.name == "vero_pants.rules"]
        assert not [path for path in contents if path.endswith(".log")]
        return json.loads(contents["b/task/SEAL.json"])["root"], warnings

    def through_the_cli(out: Path) -> tuple[str, list[str]]:
        run = subprocess.run([python, vero, "harbor", "build", "-c", str(root / "b/build.yaml"), "-o", str(out)],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
        match = re.search(r"seal ([0-9a-f]{64})", run.stdout)
        assert match is not None, run.stdout
        return match.group(1), [line.removeprefix("warning: ") for line in run.stderr.splitlines()]

    clean_pants, clean_pants_warnings = through_pants()
    clean_cli, clean_cli_warnings = through_the_cli(tmp_path / "clean")
    assert clean_pants == clean_cli and clean_pants_warnings == clean_cli_warnings == []

    runner.write_files(
        {
            "b/agent/solver/core.py": "def solve(row):\n    return str(row['question']).strip()\n",
            "b/agent/notes.txt": "untracked, so part of the baseline\n",
            "b/agent/debug.log": "git-ignored, so not part of it\n",
        }
    )
    dirty_pants, dirty_pants_warnings = through_pants()
    dirty_cli, dirty_cli_warnings = through_the_cli(tmp_path / "dirty")
    assert dirty_pants == dirty_cli != clean_pants
    expected = (
        "agent_repo b/agent has uncommitted changes (notes.txt, solver/core.py); the baseline is the directory "
        "as it is on disk, these changes included: commit them to make the baseline reproducible from git"
    )
    assert dirty_cli_warnings == [expected]
    assert dirty_pants_warnings == [f"b:task: {expected}"]
    baked = tmp_path / "dirty/environment/agent-seed/files"
    assert (baked / "notes.txt").is_file() and not (baked / "debug.log").exists()
