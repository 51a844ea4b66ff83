"""Mistakes that used to pass the build and end as a silent 0.0 fail the build instead.

Each build here runs the real `vero` PEX as a command (`python3.11 vero.pex harbor build`), which
also bakes itself: the scorer check runs with exactly the packages the sidecar image will have.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.benchmarks import FOO_DIR, write_agent, write_mode_b
from tests.support.tools import runtime_pex
from vero.compiler.probes import runtime_interpreter
from vero.compiler.seal import verify

FOO = Path("tasks/foo").absolute() if Path("tasks/foo/build.yaml").is_file() else FOO_DIR


def _vero(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["python3.11", str(runtime_pex()), *args], capture_output=True, text=True, timeout=600,
                          check=False)


def _foo(tmp_path: Path) -> Path:
    bench = tmp_path / "foo"
    shutil.copytree(FOO, bench, ignore=shutil.ignore_patterns("BUILD", "__pycache__"))
    return bench


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def _misspelled_entrypoint(bench: Path) -> None:
    _edit(bench / "build.yaml", "entrypoint: solver.core:solve", "entrypoint: solver.core:solv")


def _scorer_raises_on_every_row(bench: Path) -> None:
    _edit(bench / "scorer/scorer.py", 'row["answer"]', 'row["answr"]')


def _scorer_imports_what_the_image_lacks(bench: Path) -> None:
    _edit(bench / "scorer/scorer.py", "from __future__ import annotations\n",
          "from __future__ import annotations\n\nimport numpy\n")


def _entrypoint_raises_on_every_row(bench: Path) -> None:
    _edit(bench / "agent/solver/core.py", '    question = str(row.get("question", "")).strip()\n',
          '    question = str(row["qestion"]).strip()\n')


def _entrypoint_import_fails(bench: Path) -> None:
    _edit(bench / "agent/solver/core.py", "import re\n", "import re\n\nimport pint\n")


# (mistake, where the message points, what it says, what the fix says)
MISTAKES: list[tuple[Callable[[Path], None], str, str, str]] = [
    (_misspelled_entrypoint, "build.yaml",
     "entrypoint (line 11): 'solver.core:solv': the baseline's solver/core.py defines no 'solv' "
     "(did you mean 'solve'?)", "set entrypoint to solver.core:solve in build.yaml"),
    (_scorer_raises_on_every_row, "scorer/scorer.py:10",
     "scorer: score(output, row) raised KeyError: 'answr' on row 'test-000' of split 'test'",
     "`row` is the full dataset row, labels included (its fields: answer, id, question)"),
    (_scorer_imports_what_the_image_lacks, "scorer/scorer.py:5",
     "scorer: cannot be loaded with the runtime PEX's packages under python3.11: "
     "ModuleNotFoundError: No module named 'numpy'",
     "the eval sidecar has only the Python standard library and the runtime PEX's packages"),
    (_entrypoint_raises_on_every_row, "agent/solver/core.py:12",
     "dry run: the baseline failed on every one of the first 3 row(s) of split 'train' "
     "(train-000, train-001, train-002); row 'train-000': KeyError: 'qestion'",
     "`--no-dry-run` (harbor_task: `dry_run=False`) skips this run"),
    (_entrypoint_import_fails, "agent/solver/core.py:7",
     "entrypoint (line 11): 'solver.core:solve': importing solver.core from the baseline under python3.11 "
     "failed: ModuleNotFoundError: No module named 'pint'", "fix the baseline so that `import solver.core` works"),
]


@pytest.mark.parametrize(("mistake", "where", "what", "fix"), MISTAKES, ids=[m[0].__name__.strip("_")
                                                                            for m in MISTAKES])
def test_a_mistake_fails_the_build_with_one_message(tmp_path: Path, mistake: Callable[[Path], None], where: str,
                                                    what: str, fix: str) -> None:
    bench = _foo(tmp_path)
    mistake(bench)
    out = tmp_path / "out"
    run = _vero("harbor", "build", "-c", str(bench / "build.yaml"), "-o", str(out))
    assert run.returncode == 2, run.stdout + run.stderr
    head, _, fix_line = run.stderr.strip().partition("\n  fix: ")
    assert head.startswith(f"error: {bench / where}: {what}"), head
    assert fix in fix_line and "\n" not in fix_line, run.stderr
    assert "Traceback" not in run.stderr and not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".vero-build-" in p.name]


def test_no_dry_run_skips_the_run_and_says_so_but_not_the_checks(tmp_path: Path) -> None:
    bench = _foo(tmp_path)
    _entrypoint_raises_on_every_row(bench)
    run = _vero("harbor", "build", "-c", str(bench / "build.yaml"), "-o", str(tmp_path / "out"), "--no-dry-run")
    assert run.returncode == 0, run.stderr
    assert "warning: dry run skipped (--no-dry-run): the baseline was not run on any row" in run.stderr
    assert "checked: dry run" not in run.stdout and "checked: scorer imports" in run.stdout
    assert verify(tmp_path / "out").ok
    _misspelled_entrypoint(bench)
    again = _vero("harbor", "build", "-c", str(bench / "build.yaml"), "-o", str(tmp_path / "out2"), "--no-dry-run")
    assert again.returncode == 2 and "defines no 'solv'" in again.stderr


def test_a_clean_build_reports_its_checks_and_the_checks_leave_no_trace(tmp_path: Path) -> None:
    bench = _foo(tmp_path)
    # Candidate code that writes at import and on every call: into the checks' scratch copies only.
    _edit(bench / "agent/solver/core.py", "import re\n",
          "import re\n\nopen('written-at-import.txt', 'w').close()\n")
    out = tmp_path / "out"
    run = _vero("harbor", "build", "-c", str(bench / "build.yaml"), "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[:3] == [
        "checked: entrypoint solver.core:solve imports from the baseline under python3.11",
        "checked: scorer imports with the runtime PEX under python3.11 and scores row 'test-000' of split 'test' "
        "with its own label: 1",
        "checked: dry run: the baseline ran on the first 3 row(s) of split 'train' (train-000, train-001, "
        "train-002): mean score 0.333333, 0 error(s)"]
    assert verify(out).ok
    assert not list(out.rglob("written-at-import.txt")) and not list(bench.rglob("written-at-import.txt"))
    assert not list(out.rglob("__pycache__"))


def test_some_failing_rows_and_a_scorer_that_ignores_the_label_are_warnings(tmp_path: Path) -> None:
    bench = _foo(tmp_path)
    _edit(bench / "agent/solver/core.py", "    if match:\n", "    if 'minus' in question:\n"
          "        raise ValueError('minus is not supported')\n    if match:\n")
    _edit(bench / "scorer/scorer.py", 'str(row["answer"])', 'str(row["question"])')
    run = _vero("harbor", "build", "-c", str(bench / "build.yaml"), "-o", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    warnings = [line for line in run.stderr.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: scorer: row 'test-000' of split 'test' scores 0 with its own label as the output ('146'); a "
        f"correct output should score high: check which field score() compares ({bench / 'scorer/scorer.py'})",
        "warning: dry run: the baseline failed on row 'train-001' of split 'train': ValueError: minus is not "
        "supported"]


def test_mode_b_agent_class_is_checked_without_importing_harbor(tmp_path: Path) -> None:
    config = write_mode_b(tmp_path / "bench", harbor={"agent": "solver.agent:Agnet"})
    run = _vero("harbor", "build", "-c", str(config), "-o", str(tmp_path / "out"))
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: {config}: harbor (line ")
    assert "agent 'solver.agent:Agnet': the baseline's solver/agent.py defines no 'Agnet' (did you mean " \
           "'Agent'?)" in run.stderr
    # Bound by an import (the agent module needs harbor, which the build host lacks): accepted.
    write_agent(tmp_path / "bench/agent", {"solver/agent.py": "from harbor.agents.base import BaseAgent as Agnet\n"})
    run = _vero("harbor", "build", "-c", str(config), "-o", str(tmp_path / "out"))
    assert run.returncode == 0, run.stderr
    assert "checked: harbor.agent solver.agent:Agnet is defined in the baseline" in run.stdout
    serve = json.loads((tmp_path / "out/environment/sidecar/serve.json").read_text())
    assert serve["mode_b"]["harbor"]["agent"] == "solver.agent:Agnet"


def test_the_runtime_interpreter_is_never_a_venvs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A venv-mode PEX (vero's own) puts its venv first on PATH: candidate code must not see the
    # venv's packages, which the image does not have.
    venv = tmp_path / "venv"
    subprocess.run(["python3.11", "-m", "venv", "--without-pip", str(venv)], check=True)
    monkeypatch.setenv("PATH", f"{venv / 'bin'}:{os.environ['PATH']}")
    python = runtime_interpreter()
    assert python.name == "python3.11" and not Path(python.executable).is_relative_to(venv)
    probe = subprocess.run([python.executable, "-c", "import sys; print(sys.prefix == sys.base_prefix)"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "True"
