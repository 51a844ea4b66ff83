"""`vero report` (archive, trial dir, jobs dir; terminal, --json, --html) and `vero harbor recover`
(--winner, --commit, --patch) on a real finished session."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.session.conftest import Finished
from tests.support.mode_a import IMPROVED_AGENT, git
from tests.support.sidecar import python_env, vero_argv
from vero.session.recover import MARKER


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(vero_argv(*args), env=python_env(), capture_output=True, text=True, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _trial(jobs: Path, name: str, archive: Path | None, rewards: dict[str, float] | None,
           exception: str | None = None, rescue: bool = False) -> Path:
    """A trial dir laid out as Harbor leaves it (result.json, verifier/ or artifacts/)."""
    trial = jobs / "job-1" / name
    trial.mkdir(parents=True)
    info = {"exception_type": exception, "exception_message": "boom\nmore"} if exception else None
    (trial / "result.json").write_text(json.dumps({"trial_name": name, "task_name": "test/arith",
                                                   "verifier_result": {"rewards": rewards} if rewards else None,
                                                   "exception_info": info}))
    if archive is not None:
        target = trial / ("artifacts/session-rescue.tar.gz" if rescue else "verifier/session.tar.gz")
        target.parent.mkdir()
        shutil.copy(archive, target)
    return trial


def test_report_names_the_winner_its_score_and_why(archive: Path, finished: Finished) -> None:
    result = _cli("report", str(archive))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "final archive (after finalize)" in out and finished.improved in out
    assert "winner" in out and "reward test_score = 1" in out
    assert "auto_best" in out and "re-scored" in out
    assert "train" in out and "2 / 5" in out  # runs spent of the train budget
    data = json.loads(_cli("report", str(archive), "--json").stdout)
    assert data["kind"] == "final" and data["selection"]["candidate"] == finished.improved
    assert data["rewards"] == {"test_score": 1.0}
    assert data["error_samples"] > 0 and data["incidents"] == 1
    winner = [c for c in data["candidates"] if c["winner"]]
    assert [c["commit"] for c in winner] == [finished.improved] and winner[0]["roles"] == ["evaluated", "submitted"]
    asked = {(e["asked_by"], e["purpose"]) for e in data["evaluations"]}
    assert ("optimizer", "eval") in asked and ("finalize", "auto_best") in asked


def test_html_is_one_self_contained_page_with_plots(archive: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = _cli("report", str(archive), "--html", str(page))
    assert result.returncode == 0, result.stderr
    html = page.read_text()
    assert html.count("<svg") == 3  # scores over time, budget burn, the re-score
    for title in ("Score of each evaluation over time", "Budget burn", "The re-score that picked the winner"):
        assert title in html
    assert "src=" not in html and "href=\"http" not in html and "<link" not in html


def test_a_jobs_dir_gives_one_row_per_trial_and_a_comparison(archive: Path, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    _trial(jobs, "foo__aaa", archive, {"test_score": 1.0})
    _trial(jobs, "foo__bbb", archive, {"test_score": 0.5}, rescue=True)
    _trial(jobs, "foo__ccc", None, None, exception="RuntimeError")
    broken = _trial(jobs, "foo__ddd", archive, {"test_score": 0.25})
    (broken / "verifier/session.tar.gz").write_bytes(archive.read_bytes()[:300])
    (jobs / "job-1" / "result.json").write_text(json.dumps({"id": "job"}))  # the job's own result: no trial
    data = json.loads(_cli("report", str(jobs), "--json").stdout)
    assert [t["trial_name"] for t in data["trials"]] == ["foo__aaa", "foo__bbb", "foo__ccc", "foo__ddd"]
    kinds = [t["session"]["kind"] if t["session"] else None for t in data["trials"]]
    assert kinds == ["final", "final", None, None]
    assert data["trials"][2]["exception"] == "RuntimeError: boom" and data["failed_trials"] == 1
    assert "corrupt or truncated" in data["trials"][3]["note"]
    [comparison] = data["comparison"]
    assert comparison == {"reward_key": "test_score", "trials": 3, "mean": pytest.approx(1.75 / 3), "best": 1.0,
                          "worst": 0.25, "best_trial": "foo__aaa", "baseline_mean": None}
    page = tmp_path / "jobs.html"
    terminal = _cli("report", str(jobs), "--html", str(page))
    assert terminal.returncode == 0 and "comparison" in terminal.stdout and "foo__ccc" in terminal.stdout
    assert "Rewards per trial" in page.read_text()
    single = _cli("report", str(jobs / "job-1" / "foo__ccc"))
    assert single.returncode == 0 and "no session archive in this trial" in single.stdout


def test_recover_the_winner_a_commit_and_the_patch(archive: Path, finished: Finished, tmp_path: Path) -> None:
    out = tmp_path / "winner"
    result = _cli("harbor", "recover", str(archive), "--winner", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert (out / "agent.py").read_text() == IMPROVED_AGENT
    assert json.loads((out / MARKER).read_text())["commit"] == finished.improved
    # Again into its own output: replaced. Into someone else's directory: refused, untouched.
    assert _cli("harbor", "recover", str(archive), "--commit", finished.leaky[:10], "-o", str(out)).returncode == 0
    assert "RuntimeError('leaking '" in (out / "agent.py").read_text()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    refused = _cli("harbor", "recover", str(archive), "--winner", "-o", str(mine))
    assert refused.returncode == 2 and "did not write" in refused.stderr
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if ".recover-" in p.name or ".old-" in p.name]
    # The patch applies to the baseline and gives the winner's files.
    patch = tmp_path / "winner.patch"
    assert _cli("harbor", "recover", str(archive), "--winner", "--patch", "-o", str(patch)).returncode == 0
    base = tmp_path / "base"
    shutil.copytree(finished.bench.baseline_dir / "files", base)
    git(base, "init", "-q")
    git(base, "apply", str(patch))
    assert (base / "agent.py").read_text() == IMPROVED_AGENT
    again = _cli("harbor", "recover", str(archive), "--winner", "--patch", "-o", str(patch))
    assert again.returncode == 2 and "exists" in again.stderr


def test_recover_refuses_what_the_session_does_not_have(archive: Path, finished: Finished, tmp_path: Path) -> None:
    both = _cli("harbor", "recover", str(archive), "--winner", "--commit", "abc", "-o", str(tmp_path / "x"))
    assert both.returncode == 2 and "exactly one of --winner and --commit" in both.stderr
    unknown = _cli("harbor", "recover", str(archive), "--commit", "0" * 40, "-o", str(tmp_path / "x"))
    assert unknown.returncode == 2 and "is not a commit of this session" in unknown.stderr
    early = tmp_path / "rescue.tar.gz"
    early.write_bytes(finished.rescue)
    trial = _trial(tmp_path / "jobs", "t__1", early, None, rescue=True)
    # A trial dir is accepted too; its rescue archive was taken before finalize: no winner yet.
    no_winner = _cli("harbor", "recover", str(trial), "--winner", "-o", str(tmp_path / "x"))
    assert no_winner.returncode == 2 and "finalize had not run" in no_winner.stderr
    assert finished.improved[:12] in no_winner.stderr  # the fix lists the session's commits
    by_commit = _cli("harbor", "recover", str(trial), "--commit", finished.improved, "-o", str(tmp_path / "w"))
    assert by_commit.returncode == 0
    assert (tmp_path / "w" / "agent.py").read_text() == IMPROVED_AGENT
    report = json.loads(_cli("report", str(trial), "--json").stdout)
    assert report["session"]["kind"] == "rescue" and report["session"]["rewards"] is None
    assert not (tmp_path / "x").exists()
