"""A nested harbor run that produced no trial at all is an infrastructure failure, not a score.

Real harbor, real failure: the nested harbor is pointed at a Docker socket nobody listens on
(its preflight refuses to start, exit 1, no trial), as when the host's Docker daemon is down.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.modeb.agent_repo import make_agent_repo
from tests.support.tools import harbor_bin, require_docker
from vero.core.sample_store import SampleStore
from vero.core.strategy import EvaluationContext, InfrastructureFailure
from vero.modeb.config import HarborConfig
from vero.modeb.runner.cli import cli
from vero.modeb.runs import load_all
from vero.modeb.strategy import ModeBStrategy

BAR = Path(__file__).resolve().parents[2] / "tasks" / "bar"
TASKS = ["write-greeting", "vero-examples/sum-numbers"]


def no_docker(tmp_path: Path) -> dict[str, str]:
    """The test's environment with a Docker socket nobody listens on."""
    return {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"}


def test_a_run_without_docker_raises_and_persists_nothing(tmp_path: Path) -> None:
    require_docker()   # the CLI and Compose plugin vero's preflight checks; the daemon stays unused
    config = HarborConfig(task_source="inner_tasks", agent="rule_agent.agent:RuleAgent", environment="docker",
                          harbor_command=[str(harbor_bin())], timeout=120)
    jobs = tmp_path / "jobs"
    strategy = ModeBStrategy(config, {"train": TASKS}, base_dir=BAR, jobs_dir=jobs, env=no_docker(tmp_path))
    store = SampleStore(tmp_path / "samples")
    worktree = tmp_path / "candidate"
    worktree.mkdir()
    context = EvaluationContext(commit="a" * 40, split="train", worktree=worktree, sample_ids=TASKS, store=store)

    with pytest.raises(InfrastructureFailure) as caught:
        strategy.evaluate(context)

    failure = caught.value
    assert failure.what == "the nested harbor run produced no trial (harbor exited with 1); nothing was scored"
    assert failure.where is not None and failure.where.startswith("harbor job vero-train-aaaaaaaaaaaa-")
    assert "Docker daemon is not running" in (failure.detail or "")   # harbor's own words, for the admin log
    assert failure.exit_code == 3
    assert store.done_ids(TASKS) == set() and not list(store.directory.glob("*.json"))  # no 0.0 samples
    [record] = load_all(jobs)
    assert record.exit_code == 1 and not record.timed_out


def test_the_runner_reports_it_and_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require_docker()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    repo = make_agent_repo(tmp_path)
    results = tmp_path / "results"
    args = ["run", "--harbor-config", str(BAR / "harbor.yaml"), "--split", "train", "--repo", str(repo.path),
            "--commit", repo.baseline, "--agent-path", ".", "--results-dir", str(results),
            "--harbor-command", str(harbor_bin())]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 3, result.stderr
    assert "\nerror: harbor job vero-train-" in result.stderr
    assert "the nested harbor run produced no trial (harbor exited with 1); nothing was scored" in result.stderr
    assert "harbor's stderr ends with:\nDocker daemon is not running" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert list((results / "samples").glob("*.json")) == []
