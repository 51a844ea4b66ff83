"""The example benchmarks under tasks/: they compile, their data is reproducible, and each
oracle's change really improves on the baseline (checked here without containers)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from tests.support.benchmarks import fake_runtime_pex
from vero.compiler.compiler import build_task
from vero.compiler.seal import verify
from vero.serve.config import load_serve_config

TASKS = Path("tasks")


def _module(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _heredoc(script: Path, target: str) -> str:
    """The body the oracle writes to `target` with `cat >[>] target <<'EOF'`."""
    match = re.search(rf"cat >>? {re.escape(target)} <<'EOF'\n(.*?)\nEOF\n", script.read_text(), re.S)
    assert match, f"{script} writes no {target}"
    return match.group(1) + "\n"


@pytest.mark.parametrize("name", ["foo", "bar"])
def test_examples_compile_and_verify(tmp_path: Path, name: str) -> None:
    out = tmp_path / name
    result = build_task(TASKS / name / "build.yaml", out, fake_runtime_pex(tmp_path / "vero.pex"), {})
    assert verify(out).ok and result.n_files > 10
    subprocess.run(["bash", "-n", str(out / "solution/solve.sh")], check=True)
    assert (out / "solution/solve.sh").stat().st_mode & 0o111
    serve = load_serve_config(out / "environment/sidecar/serve.json")
    assert serve.name == f"vero/{name}"


def test_foo_dataset_is_reproducible(tmp_path: Path) -> None:
    _module(TASKS / "foo/data/generate.py", "foo_generate").generate(tmp_path)
    for split in ("train", "validation", "test"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (TASKS / f"foo/data/{split}.jsonl").read_bytes()


def test_foo_oracle_improves_on_the_baseline(tmp_path: Path) -> None:
    score = _module(TASKS / "foo/scorer/scorer.py", "foo_scorer").score
    baseline = _module(TASKS / "foo/agent/solver/core.py", "foo_baseline").solve
    oracle_file = tmp_path / "core.py"
    oracle_file.write_text(_heredoc(TASKS / "foo/solution/solve.sh", "solver/core.py"))
    oracle = _module(oracle_file, "foo_oracle").solve
    config = yaml.safe_load((TASKS / "foo/build.yaml").read_text())
    rows = [json.loads(line) for line in (TASKS / "foo/data/test.jsonl").read_text().splitlines()]

    def mean(solve: object) -> float:
        hidden = config["label_fields"]
        return sum(score(solve({k: v for k, v in r.items() if k not in hidden}), r)  # type: ignore[operator]
                   for r in rows) / len(rows)

    assert 0.0 < mean(baseline) < mean(oracle) < 1.0  # a real, partial improvement


def test_bar_oracle_teaches_skills_for_every_held_out_task(tmp_path: Path) -> None:
    repo = tmp_path / "agent"
    shutil.copytree(TASKS / "bar/agent", repo)
    skills = repo / "rule_agent/skills.py"
    tasks = (TASKS / "bar/inner_tasks").glob("*/instruction.md")
    instructions = {p.parent.name: p.read_text() for p in tasks}
    config = yaml.safe_load((TASKS / "bar/build.yaml").read_text())
    held_out = [name.split("/")[-1] for name in config["partition"]["test"]]

    def solved() -> set[str]:
        sys.path.insert(0, str(repo))
        try:
            sys.modules.pop("rule_agent.skills", None)
            sys.modules.pop("rule_agent", None)
            plan = importlib.import_module("rule_agent.skills").plan
            return {name for name, text in instructions.items() if plan(text)[0] is not None}
        finally:
            sys.path.remove(str(repo))
            sys.modules.pop("rule_agent.skills", None)
            sys.modules.pop("rule_agent", None)

    before = solved()
    assert not set(held_out) & before
    skills.write_text(skills.read_text() + _heredoc(TASKS / "bar/solution/solve.sh", "rule_agent/skills.py"))
    after = solved()
    assert set(held_out) <= after and before < after
