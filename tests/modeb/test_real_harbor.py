"""The real thing: the runner scores the tasks/bar baseline agent and the improved agent with
the real harbor CLI on Docker (VERO_HARBOR_BIN), and the improved agent scores higher; a
real timeout is salvaged, cleaned up by Harbor, and resumed.

Four inner tasks, two trials at a time: about 35 s per agent on a 2-core machine; the
timeout test about 60 s.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from tests.modeb.agent_repo import git, make_agent_repo
from tests.support.tools import harbor_bin, require_base_image
from vero.modeb.runner.cli import cli
from vero.modeb.runs import load_all
from vero.modeb.trials import job_dirs
from vero.session.reader import load_session
from vero.session.recover import recover_files
from vero.session.report import session_report

BAR = Path(__file__).resolve().parents[2] / "tasks" / "bar"
TASKS = ["write-greeting", "vero-examples/sum-numbers", "count-words", "sort-unique"]


def write_config(tmp_path: Path) -> Path:
    config = tmp_path / "harbor.yaml"
    config.write_text(json.dumps({
        "harbor": {"task_source": str(BAR / "inner_tasks"), "agent": "rule_agent.agent:RuleAgent",
                   "environment": "docker", "n_concurrent": 2, "timeout": 600},
        "partition": {"smoke": TASKS}}))
    return config


def score(config: Path, repo: Path, commit: str, results: Path) -> tuple[Result, list[dict[str, Any]]]:
    args = ["run", "--harbor-config", str(config), "--split", "smoke", "--repo", str(repo),
            "--commit", commit, "--results-dir", str(results), "--harbor-command", str(harbor_bin()),
            "--json"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result, [json.loads(line) for line in result.stdout.splitlines()]


def by_task(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["task"]: line for line in lines if "task" in line}


def test_improved_agent_scores_higher_than_the_baseline_with_real_harbor(tmp_path: Path) -> None:
    require_base_image()
    repo = make_agent_repo(tmp_path)
    config = write_config(tmp_path)

    _, baseline = score(config, repo.path, repo.baseline, tmp_path / "baseline")
    improved_results = tmp_path / "improved"
    _, improved = score(config, repo.path, repo.improved, improved_results)

    base_tasks, new_tasks = by_task(baseline), by_task(improved)
    assert {t: r["score"] for t, r in base_tasks.items()} == {
        "write-greeting": 1.0, "vero-examples/sum-numbers": 0.0, "count-words": 0.0, "sort-unique": 0.0}
    assert {t: r["score"] for t, r in new_tasks.items()} == {
        "write-greeting": 1.0, "vero-examples/sum-numbers": 1.0, "count-words": 1.0, "sort-unique": 0.0}
    # count-words' verifier writes {"pass", "close"}: "pass" scores, both are metrics.
    assert new_tasks["count-words"]["metrics"] == {"close": 1.0, "pass": 1.0}
    assert all(r["error"] is None and r["attempts"] == {"n_attempts": 1, "n_scored": 1, "n_clean": 1}
               for r in [*base_tasks.values(), *new_tasks.values()])
    assert baseline[-1]["aggregate"]["mean_score"] == 0.25
    assert improved[-1]["aggregate"]["mean_score"] == 0.75

    # Harbor's own record of the job: one include filter per task directory, our flags.
    [job] = job_dirs(improved_results / "jobs")
    job_config = json.loads((job / "config.json").read_text())
    assert job_config["job_name"] == job.name and job_config["n_concurrent_trials"] == 2
    assert job_config["quiet"] is True
    assert [a["name"] for a in job_config["agents"]] == ["rule_agent.agent:RuleAgent"]
    assert sorted(job_config["datasets"][0]["task_names"]) == sorted(
        ["write-greeting", "sum-numbers", "count-words", "sort-unique"])
    [record] = load_all(improved_results / "jobs")
    assert record.finished and record.exit_code == 0 and not record.timed_out
    # The candidate's code really ran in the task container: its log names the skill it used.
    [trial] = [d for d in job.iterdir() if d.name.startswith("count-words__")]
    assert json.loads((trial / "agent" / "rule-agent.json").read_text())["skill"] == "count-words"

    # The run's session archive: the format of a compiled task's, read by `vero report` and recover.
    archive = improved_results / "session.tar.gz"
    first_archive = archive.read_bytes()
    session = load_session(archive)
    assert session.manifest.producer == "runner" and session.benchmark is not None
    [evaluation] = session.evaluations
    assert evaluation.asked_by == "runner" and evaluation.record.commit == repo.improved
    assert {r.sample_id: r.score for r in evaluation.results} == {t: r["score"] for t, r in new_tasks.items()}
    report = session_report(session)
    assert report.kind == "runner" and report.evaluations[0].mean_score == 0.75
    recovered = recover_files(session, repo.improved, tmp_path / "recovered")
    assert (tmp_path / "recovered" / "rule_agent" / "skills.py").read_bytes() == \
        (repo.path / "rule_agent" / "skills.py").read_bytes()
    assert recovered.files == len(git(repo.path, "ls-files").splitlines())

    # Re-running resumes: nothing runs again, the same results (and the same archive) come back.
    again, rerun = score(config, repo.path, repo.improved, improved_results)
    assert "nothing to run" in again.stderr
    assert rerun == improved
    assert len(job_dirs(improved_results / "jobs")) == 1
    assert archive.read_bytes() == first_archive

    # `collate` over the recorded jobs dir reproduces the scores without running anything.
    collated = CliRunner().invoke(cli, ["collate", "--harbor-config", str(config), "--split", "smoke",
                                        "--jobs-dir", str(improved_results / "jobs"), "--json"])
    assert collated.exit_code == 0, collated.stderr
    assert [json.loads(line) for line in collated.stdout.splitlines()] == improved


STALL = """
import asyncio
import os

_run = RuleAgent.run


async def _stalling_run(self, instruction, environment, context):
    # The test's switch (a host file named by VERO_TEST_STALL) holds the trial open.
    if os.path.exists(os.environ.get("VERO_TEST_STALL", "/nonexistent")):
        await asyncio.sleep(600)
    await _run(self, instruction, environment, context)


RuleAgent.run = _stalling_run
"""


def test_real_harbor_timeout_is_salvaged_cleaned_up_and_resumed(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    require_base_image()
    repo = make_agent_repo(tmp_path)
    # A candidate that stalls while a host file exists: the timeout always lands mid-trial,
    # however fast the machine, and the same commit scores once the file is gone.
    with (repo.path / "rule_agent" / "agent.py").open("a") as agent:
        agent.write(STALL)
    git(repo.path, "commit", "--quiet", "--all", "-m", "stall on request")
    stalling = git(repo.path, "rev-parse", "HEAD")
    stall = tmp_path / "stall"
    stall.touch()
    monkeypatch.setenv("VERO_TEST_STALL", str(stall))
    config = write_config(tmp_path)
    results = tmp_path / "results"
    args = ["run", "--harbor-config", str(config), "--split", "smoke", "--sample-id", "write-greeting",
            "--repo", str(repo.path), "--commit", stalling, "--results-dir", str(results),
            "--harbor-command", str(harbor_bin()), "--json"]

    timed_out = CliRunner().invoke(cli, [*args, "--timeout", "30"], catch_exceptions=False)
    assert timed_out.exit_code == 0, timed_out.stderr
    [first] = [json.loads(line) for line in timed_out.stdout.splitlines()][:1]
    assert first["score"] is None
    assert re.fullmatch(r"task 'write-greeting': .*; harbor timed out \(error id E-[0-9a-f]{10}\)", first["error"])
    [record] = load_all(results / "jobs")
    assert record.timed_out and record.exit_code == 130   # Harbor's own SIGTERM exit
    # Harbor tore down what it started: no container of this job's trials is left.
    [job] = job_dirs(results / "jobs")
    for trial in (d for d in job.iterdir() if d.is_dir()):
        project = f"{trial.name.lower()}__env"
        query = ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"]
        leftover = subprocess.run(query, capture_output=True, text=True, check=True)
        assert leftover.stdout.strip() == "", project

    # The error sample is re-run (in a new job) and, no longer stalled, scores.
    stall.unlink()
    resumed = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout.splitlines()[0])["score"] == 1.0
    assert len(job_dirs(results / "jobs")) == 2
