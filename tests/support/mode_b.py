"""A Mode B benchmark for a real `vero harbor serve` on the host: the tasks/bar agent as the
optimizer's repo (deterministic baseline commit, then the improvement), its inner tasks, and a
serve.json whose nested harbor is the real CLI (or the fake one, for faults)."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.sidecar import free_port
from vero.baseline import make_baseline_commit

ROOT = Path(__file__).resolve().parents[2]
BAR = ROOT / "tasks" / "bar"
PATCH = ROOT / "tests" / "modeb" / "data" / "improve-agent.patch"
PARTITION = {"train": ["write-greeting", "vero-examples/sum-numbers"], "validation": ["reverse-lines"],
             "test": ["vero-examples/count-words", "sort-unique"]}
_GIT = ["git", "-c", "user.name=optimizer", "-c", "user.email=o@example.invalid", "-c", "commit.gpgSign=false"]


@dataclass(frozen=True)
class ModeBBench:
    """The optimizer's repo (baseline commit, then `improved`) and the sidecar's baseline dir."""

    agent_repo: Path
    baseline_dir: Path
    baseline_commit: str
    improved: str


def make_mode_b_bench(root: Path) -> ModeBBench:
    """tasks/bar's agent as the baseline, and the improvement an optimizer would commit."""
    files = root / "baseline" / "files"
    shutil.copytree(BAR / "agent", files, ignore=shutil.ignore_patterns("__pycache__"))
    scratch = root / "baseline-scratch"
    shutil.copytree(files, scratch)
    sha = make_baseline_commit(scratch)
    shutil.rmtree(scratch)
    (root / "baseline" / "BASELINE.json").write_text(json.dumps({"commit": sha}))
    repo = root / "agent"
    shutil.copytree(files, repo)
    assert make_baseline_commit(repo) == sha
    subprocess.run(["git", "apply", str(PATCH)], cwd=repo, check=True, capture_output=True)
    subprocess.run([*_GIT, "commit", "-q", "--all", "-m", "improve"], cwd=repo, check=True, capture_output=True)
    improved = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                              text=True).stdout.strip()
    return ModeBBench(agent_repo=repo, baseline_dir=root / "baseline", baseline_commit=sha, improved=improved)


def mode_b_serve_config(root: Path, bench: ModeBBench, harbor: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A Mode B serve.json with every path under `root`; `harbor` is the HarborConfig (the inner
    tasks default to tasks/bar's). No harness user: harbor imports the candidate's agent itself."""
    config: dict[str, Any] = {
        "version": 1, "mode": "B", "name": "test/bar", "host": "127.0.0.1", "port": free_port(),
        "paths": {"agent_repo": str(bench.agent_repo), "results_dir": str(root / "results"),
                  "admin_dir": str(root / "admin"), "token_file": str(root / "token" / "admin-token"),
                  "baseline_dir": str(bench.baseline_dir), "trusted_repo": str(root / "admin" / "repo"),
                  "work_dir": str(root / "work")},
        "baseline_commit": bench.baseline_commit,
        "splits": [{"split": "train", "access": "viewable"}, {"split": "validation", "access": "viewable"}],
        "budgets": [{"split": "train", "total_run_budget": 3}, {"split": "validation", "total_run_budget": 3}],
        "reward_mode": "auto_best", "selection_split": "validation",
        "targets": [{"split": "test", "reward_key": "pass_rate"}],
        "submit_enabled": True, "score_baseline": False, "k_anonymity_floor": 1, "timeout": 600,
        "harness_user": None,
        "mode_b": {"harbor": {"task_source": str(BAR / "inner_tasks"), "agent": "rule_agent.agent:RuleAgent",
                              "environment": "docker", "n_concurrent": 2, **harbor},
                   "partition": PARTITION},
    }
    config.update(overrides)
    return config
