"""`package` of a harbor_task through the whole backend: with a stand-in compiler, what the compiler
is given and where the task lands; with the real vero PEX, the same baseline as `vero harbor build`."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
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
from pants.testutil.rule_runner import QueryRule, RuleRunner
from pants.vcs import git

from vero_pants.goals.package_harbor_task import (
    HarborTaskFieldSet,
    build_summary,
    compile_description,
    uncommitted_changes_warning,
)
from vero_pants.rules import rules as harbor_task_rules
from vero_pants.target_types import HarborTaskConfigField, HarborTaskTarget
from vero_pants.testutil import FAKE_COMPILER, FAKE_COMPILER_BUILD, PEX_CLI, require_pex_cli, set_options


def _rule_runner(tmp_path: Path, *extra_bootstrap_args: str) -> RuleRunner:
    return RuleRunner(
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
            QueryRule(SourceFiles, [SourceFilesRequest]),
        ],
        target_types=[HarborTaskTarget, FilesGeneratorTarget, PexBinary, PythonSourcesGeneratorTarget],
        isolated_local_store=True,
        bootstrap_args=[f"--named-caches-dir={tmp_path / 'named_caches'}", *extra_bootstrap_args],
    )


@pytest.fixture
def rule_runner(tmp_path: Path) -> RuleRunner:
    require_pex_cli()
    runner = _rule_runner(tmp_path)
    set_options(runner, env={"API_KEY": "the-real-secret-value"})
    config = {"agent_repo": "agent", "dataset": "data", "secrets": ["API_KEY"]}
    runner.write_files(
        {
            "tool/compile.py": FAKE_COMPILER,
            "tool/BUILD": FAKE_COMPILER_BUILD,
            "t/build.yaml": json.dumps(config),
            "t/plain.yaml": json.dumps({"agent_repo": "agent", "dataset": "data"}),
            "t/invalid.yaml": json.dumps({"invalid": "build.yaml: invalid build config: mode (line 1): ..."}),
            "t/agent/main.py": "print('hi')\n",
            "t/data/train.jsonl": '{"x": 1}\n',
            "t/unrelated.txt": "not an input\n",
            "t/BUILD": (
                "files(name='agent', sources=['agent/**'])\nfiles(name='data', sources=['data/**'])\n"
                "harbor_task(name='x', compiler='//tool:bin', archive_format='tar.gz')\n"
                "harbor_task(name='nodry', config='plain.yaml', compiler='//tool:bin', dry_run=False)\n"
                "harbor_task(name='moved', config='plain.yaml', compiler='//tool:bin', output_path='out/deep/task',"
                " archive_format='zip')\n"
                "harbor_task(name='invalid', config='invalid.yaml', compiler='//tool:bin')\n"
            ),
        }
    )
    return runner


def _package(rule_runner: RuleRunner, name: str) -> dict[str, bytes]:
    target = rule_runner.get_target(Address("t", target_name=name))
    built = rule_runner.request(BuiltPackage, [HarborTaskFieldSet.create(target)])
    return {c.path: c.content for c in rule_runner.request(DigestContents, [built.digest])}


def test_package_runs_the_compiler_on_exactly_the_inputs(rule_runner: RuleRunner) -> None:
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
    assert "--no-dry-run" not in json.loads(_package(rule_runner, "x")["t/x/inputs.json"])["argv"]
    assert json.loads(_package(rule_runner, "nodry")["t/nodry/inputs.json"])["argv"][-1] == "--no-dry-run"


def test_repository_wide_base_images_reach_the_compiler(rule_runner: RuleRunner) -> None:
    assert "--base-image-main" not in json.loads(_package(rule_runner, "x")["t/x/inputs.json"])["argv"]
    set_options(rule_runner, {"API_KEY": "the-real-secret-value"}, "--harbor-tasks-base-image-main=corp/main:1",
                "--harbor-tasks-base-image-sidecar=corp/sidecar:2")
    argv = json.loads(_package(rule_runner, "x")["t/x/inputs.json"])["argv"]
    assert argv[argv.index("--base-image-main") + 1] == "corp/main:1"
    assert argv[argv.index("--base-image-sidecar") + 1] == "corp/sidecar:2"


def test_output_path_places_the_task_and_its_archive(rule_runner: RuleRunner) -> None:
    files = _package(rule_runner, "moved")
    assert set(files) == {"out/deep/task/inputs.json", "out/deep/task/environment/bin/vero.pex",
                          "out/deep/task.zip"}
    assert json.loads(files["out/deep/task/inputs.json"])["argv"][5] == "__vero_out/task"


def test_codegen_puts_the_task_where_package_does(rule_runner: RuleRunner) -> None:
    target = rule_runner.get_target(Address("t", target_name="x"))
    generated = rule_runner.request(
        SourceFiles,
        [SourceFilesRequest([target[HarborTaskConfigField]], for_sources_types=(FileSourceField,),
                            enable_codegen=True)],
    )
    assert set(generated.snapshot.files) == {"dist/t/x/inputs.json", "dist/t/x/environment/bin/vero.pex"}


def test_an_invalid_build_yaml_is_the_compilers_own_message(rule_runner: RuleRunner) -> None:
    with pytest.raises(ExecutionError) as excinfo:
        _package(rule_runner, "invalid")
    assert ("t:invalid: t/invalid.yaml is not a valid build config:\n"
            "error: build.yaml: invalid build config: mode (line 1): ...") in str(excinfo.value)


@pytest.mark.parametrize("env", [{}, {"API_KEY": ""}])
def test_missing_or_empty_secret_is_named(rule_runner: RuleRunner, env: dict[str, str]) -> None:
    set_options(rule_runner, env=env)
    with pytest.raises(ExecutionError, match=r"not set \(or empty\) in the environment: API_KEY"):
        _package(rule_runner, "x")


def test_helpers_name_what_package_writes() -> None:
    assert compile_description(Address("tasks", target_name="units"), DistDir(relpath=Path("dist")),
                               "tasks/units") == "Compiling tasks:units into dist/tasks/units"
    seal = b'{"root": "' + b"a" * 64 + b'", "build_config_sha256": "' + b"b" * 64 + b'"}'
    summary = build_summary(Address("t", target_name="x"), "dist/t/x", seal, b"checked: one\nbuilt ...\n")
    assert summary == f"t:x: dist/t/x has seal {'a' * 64}, compiled from build.yaml sha256 {'b' * 64}\n  checked: one"
    warning = uncommitted_changes_warning("t/agent", [f"f{i}" for i in range(12)])
    assert warning.startswith("agent_repo t/agent has uncommitted changes (f0, f1, ") and "f9 and 2 more)" in warning


# --- one baseline, whichever way it is built ----------------------------------------------------------

VERO_PEX = Path("src.python.vero/vero.pex")  # runtime_package_dependencies: the real compiler
# The harbor_task's compiler: a PEX that hands its command line to the real vero PEX, which it also
# bakes (as `vero harbor build` without --runtime-pex bakes itself).
SHIM = """
import os, sys
args = sys.argv[1:]
if "--runtime-pex" in args:
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
    python = shutil.which("python3.11")
    if not PEX_CLI or not os.path.exists(PEX_CLI) or not VERO_PEX.is_file() or python is None:
        pytest.skip("needs VERO_PEX_CLI, the vero PEX and python3.11")  # a failure under CI=true
    vero = str(VERO_PEX.absolute())
    # A Pants run takes the root .gitignore's patterns into its ignore list; RuleRunner does not
    # read .gitignore (use_gitignore=False), so it gets the same pattern as an option.
    runner = _rule_runner(tmp_path, "--pants-ignore=+['*.log']")
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
    set_options(runner, env={})
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
                    if r.levelno == logging.WARNING and r.name == "vero_pants.goals.package_harbor_task"]
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
