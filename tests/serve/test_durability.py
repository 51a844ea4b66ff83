"""Reliability drills against a real server process: kill -9 and SIGTERM mid-evaluation."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner

from tests.support.mode_a import IMPROVED_AGENT, ModeABench, commit_agent
from tests.support.sidecar import Sidecar, serve_config, start_sidecar
from vero.cli import cli

SLOW_AGENT = (
    "import time\n"
    "def solve(row):\n"
    "    time.sleep(0.8)\n"
    "    left, right = row['question'].split('+')\n"
    "    return {'answer': int(left) + int(right)}\n"
)


def _eval_in_background(sidecar: Sidecar, body: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(httpx.post(sidecar.url + "/eval", json=body, timeout=120))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def _wait_for_samples(sidecar: Sidecar, at_least: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = list((sidecar.admin_dir / "experiments").glob("*/samples/*.json"))
        if len(stored) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {at_least} samples stored in time:\n{sidecar.log_text()}")


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


def _budget(sidecar: Sidecar, split: str) -> dict[str, Any]:
    splits = httpx.get(sidecar.url + "/status").json()["splits"]
    return next(s["budget"] for s in splits if s["split"] == split)


def test_kill_9_mid_evaluation_loses_nothing_and_refills_nothing(bench: ModeABench, root: Path,
                                                                 tmp_path: Path) -> None:
    slow = commit_agent(bench.agent_repo, SLOW_AGENT)
    config = serve_config(root, bench)
    sidecar = start_sidecar(root, config)
    first_token = sidecar.token()
    thread, outcome = _eval_in_background(sidecar, {"split": "validation", "num_samples": 8})
    _wait_for_samples(sidecar, 2)
    sidecar.stop(signal.SIGKILL)
    thread.join(timeout=30)
    assert isinstance(outcome[0], httpx.HTTPError)
    # The candidates died with the sidecar (setpriv --pdeathsig), not left running.
    deadline = time.monotonic() + 10
    while _processes_mentioning(config["paths"]["work_dir"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_mentioning(config["paths"]["work_dir"]) == []
    assert any(Path(config["paths"]["work_dir"]).iterdir())  # the killed run left its worktree

    restarted = start_sidecar(root, config, name="restarted")
    try:
        assert restarted.token() != first_token
        budget = _budget(restarted, "validation")
        assert (budget["runs_used"], budget["samples_used"]) == (1, 8)  # spent, not refilled
        records = httpx.get(restarted.url + "/experiments", headers=restarted.admin_headers()).json()
        assert len(records) == 1 and records[0]["status"] == "interrupted"
        assert records[0]["commit"] == slow and records[0]["aggregate"]["n_samples"] == 8
        assert records[0]["aggregate"]["n_scored"] >= 2  # the stored samples survived
        assert not any(Path(config["paths"]["work_dir"]).iterdir())  # stale worktree removed at start
        again = httpx.post(restarted.url + "/eval", json={"split": "validation", "num_samples": 5},
                           timeout=120)
        assert again.status_code == 200 and again.json()["aggregate"]["mean_score"] == 1.0
        reward = tmp_path / "reward.json"
        result = CliRunner().invoke(cli, ["harbor", "finalize", "--token-file", str(restarted.token_file),
                                          "--output", str(reward)], env={"VERO_EVAL_URL": restarted.url})
        assert result.exit_code == 0, result.output
        assert json.loads(reward.read_text()) == {"test_score": 1.0}
    finally:
        restarted.stop()


def test_sigterm_mid_evaluation_shuts_down_gracefully(bench: ModeABench, root: Path) -> None:
    commit_agent(bench.agent_repo, SLOW_AGENT)
    config = serve_config(root, bench, max_concurrency=1)
    sidecar = start_sidecar(root, config)
    thread, outcome = _eval_in_background(sidecar, {"split": "validation", "num_samples": 8})
    _wait_for_samples(sidecar, 1)
    started = time.monotonic()
    status = sidecar.stop(signal.SIGTERM)
    assert time.monotonic() - started < 15
    # uvicorn re-raises the signal after its graceful shutdown.
    assert status in (0, -signal.SIGTERM), sidecar.log_text()
    thread.join(timeout=30)
    response = outcome[0]
    assert isinstance(response, httpx.Response) and response.status_code == 503, response
    assert "shutting down" in response.json()["error"]
    assert "Traceback" not in sidecar.log_text()
    restarted = start_sidecar(root, config, name="restarted")
    try:
        records = httpx.get(restarted.url + "/experiments", headers=restarted.admin_headers()).json()
        assert [r["status"] for r in records] == ["interrupted"]
        assert 1 <= records[0]["aggregate"]["n_scored"] < 8
    finally:
        restarted.stop()


def test_corrupt_ledger_stops_the_start_with_one_message(bench: ModeABench, root: Path) -> None:
    config = serve_config(root, bench)
    sidecar = start_sidecar(root, config)
    evaluated = httpx.post(sidecar.url + "/eval", json={"split": "train", "num_samples": 1}, timeout=120)
    assert evaluated.status_code == 200
    sidecar.stop()
    ledger = Path(config["paths"]["admin_dir"]) / "ledger.json"
    ledger.write_text(ledger.read_text()[:-20])
    try:
        start_sidecar(root, config, name="corrupt", wait=30)
    except AssertionError as failure:
        message = str(failure)
    else:
        raise AssertionError("the sidecar started on a corrupt ledger")
    assert "corrupt budget ledger at" in message and "Traceback" not in message
    assert "exited with 2" in message
    assert os.path.getsize(ledger) > 0  # left for inspection, not replaced


def test_a_submission_survives_kill_9_and_a_corrupt_one_is_loud(bench: ModeABench, root: Path,
                                                                tmp_path: Path) -> None:
    config = serve_config(root, bench)
    sidecar = start_sidecar(root, config)
    improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    evaluated = httpx.post(sidecar.url + "/eval", json={"split": "validation", "num_samples": 5}, timeout=120)
    assert evaluated.status_code == 200, evaluated.text
    submitted = httpx.post(sidecar.url + "/submit", json={}, timeout=60)
    assert submitted.status_code == 200, submitted.text
    sidecar.stop(signal.SIGKILL)
    restarted = start_sidecar(root, config, name="restarted")
    try:
        status = httpx.get(restarted.url + "/status").json()
        assert status["submission"] == submitted.json()["commit"] == improved
        path = restarted.admin_dir / "submission.json"
        assert [p.name for p in path.parent.iterdir() if p.name.startswith(".submission")] == []
        path.write_text(path.read_text()[:-5])   # a torn file (a disk fault; vero writes atomically)
        response = httpx.get(restarted.url + "/status")
        assert response.status_code == 500
        error = response.json()["error"]
        assert error.startswith("corrupt submission file at (top level): Invalid JSON") and "(error id E-" in error
        # Finalize goes on without it (auto_best finds the same commit) and says why.
        reward = tmp_path / "reward.json"
        result = CliRunner().invoke(cli, ["harbor", "finalize", "--token-file", str(restarted.token_file),
                                          "--output", str(reward)], env={"VERO_EVAL_URL": restarted.url})
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["candidate"] == improved and report["source"] == "auto_best"
        assert json.loads(reward.read_text()) == {"test_score": 1.0}
        assert any(e.startswith("submission ignored: corrupt submission file at") for e in report["errors"])
    finally:
        restarted.stop()
