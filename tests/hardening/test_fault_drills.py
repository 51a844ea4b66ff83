"""Fault drills against real sidecar processes: kill -9 during /eval and during /finalize, and
concurrent evaluations racing for the last unit of budget. Each drill checks that nothing is
lost, nothing is counted twice (`assert_consistent`), and that the next run recovers."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hardening.audit import assert_consistent, eval_in_background, read_admin, stored_samples, wait_for
from tests.support.mode_a import IMPROVED_AGENT, SCORER, ModeABench, commit_agent
from tests.support.sidecar import Sidecar, python_env, serve_config, start_sidecar, vero_argv

SLOW_AGENT = (
    "import time\n"
    "def solve(row):\n"
    "    time.sleep(0.5)\n"
    "    left, right = row['question'].split('+')\n"
    "    return {'answer': int(left) + int(right)}\n"
)
# Trusted scoring of the held-out split is slow, so finalize can be killed half-way for real.
SLOW_HELD_OUT_SCORER = "import time\n" + SCORER.replace(
    "def score(output, row):\n",
    "def score(output, row):\n    if row['id'].startswith('test-'):\n        time.sleep(0.6)\n")


def _records(sidecar: Sidecar) -> list[dict[str, Any]]:
    response = httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers())
    assert response.status_code == 200
    return list(response.json())


def test_kill_9_during_eval_then_the_same_request_again(bench: ModeABench, root: Path) -> None:
    commit_agent(bench.agent_repo, SLOW_AGENT)
    config = serve_config(root, bench)
    sidecar = start_sidecar(root, config)
    viewed = httpx.post(sidecar.url + "/eval", json={"split": "train", "num_samples": 2}, timeout=120)
    assert viewed.status_code == 200
    view = sidecar.results_dir / "train"
    good_view = {p.relative_to(view): p.read_bytes() for p in view.rglob("*") if p.is_file()}

    thread, outcome = eval_in_background(sidecar, {"split": "train"})
    wait_for(lambda: stored_samples(sidecar.admin_dir, split="train") >= 4, "two more samples", sidecar)
    sidecar.stop(signal.SIGKILL)
    thread.join(timeout=30)
    assert isinstance(outcome[0], httpx.HTTPError)
    # The killed run never replaced the optimizer's previous view, not even partly.
    assert {p.relative_to(view): p.read_bytes() for p in view.rglob("*") if p.is_file()} == good_view
    assert [p.name for p in sidecar.results_dir.iterdir()] == ["train"]

    restarted = start_sidecar(root, config, name="restarted")
    try:
        state = assert_consistent(restarted.admin_dir)
        killed = max(state.records.values(), key=lambda r: r["created_at"])
        assert (killed["status"], killed["charged"]) == ("interrupted", True)
        assert 2 <= killed["aggregate"]["n_scored"] < 6
        assert state.entry("train")["runs_used"] == 2  # both paid, neither refunded
        # The budget is gone: the same request is refused, and refused for free.
        refused = httpx.post(restarted.url + "/eval", json={"split": "train"}, timeout=120)
        assert refused.status_code == 429
        assert read_admin(restarted.admin_dir) == state
        # Recovery of a split with budget left: the whole validation split, paid once.
        again = httpx.post(restarted.url + "/eval", json={"split": "validation"}, timeout=120)
        assert again.status_code == 200 and again.json()["aggregate"]["mean_score"] == 1.0
        final = assert_consistent(restarted.admin_dir)
        assert len(final.records) == 3 and final.entry("validation")["samples_used"] == 8
    finally:
        restarted.stop()


def _finalize_cli(sidecar: Sidecar, reward: Path) -> subprocess.Popen[str]:
    argv = vero_argv("harbor", "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward),
                     "--reward-key", "test_score")
    return subprocess.Popen(argv,
                            env={**python_env(), "VERO_EVAL_URL": sidecar.url}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_kill_9_during_finalize_then_finalize_again(bench: ModeABench, root: Path, tmp_path: Path) -> None:
    bench.scorer.write_text(SLOW_HELD_OUT_SCORER)
    improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    config = serve_config(root, bench)
    sidecar = start_sidecar(root, config)
    evaluated = httpx.post(sidecar.url + "/eval", json={"split": "validation", "num_samples": 5}, timeout=120)
    assert evaluated.status_code == 200
    before = read_admin(sidecar.admin_dir)

    reward = tmp_path / "verifier" / "reward.json"
    verifier = _finalize_cli(sidecar, reward)
    wait_for(lambda: stored_samples(sidecar.admin_dir, origin="admin", split="test") >= 1,
             "finalize to score held-out samples", sidecar)
    sidecar.stop(signal.SIGKILL)
    _, stderr = verifier.communicate(timeout=60)
    # The verifier still leaves a reward file: the 0.0 floor, and says why.
    assert verifier.returncode == 1 and "cannot reach the eval sidecar" in stderr
    assert json.loads(reward.read_text()) == {"test_score": 0.0}
    assert not (sidecar.admin_dir / "finalize.json").exists()

    restarted = start_sidecar(root, config, name="restarted")
    try:
        state = assert_consistent(restarted.admin_dir)
        assert state.ledger == before.ledger  # finalize never touches the budget
        admin = [r for r in state.records.values() if r["origin"] == "admin"]
        assert {(r["purpose"], r["split"], r["status"]) for r in admin} == {
            ("auto_best", "validation", "done"), ("target", "test", "interrupted")}
        agent = [r for r in state.records.values() if r["origin"] == "agent"]
        assert agent == list(before.records.values())

        verifier = _finalize_cli(restarted, reward)
        stdout, stderr = verifier.communicate(timeout=120)
        assert verifier.returncode == 0, stderr
        assert json.loads(reward.read_text()) == {"test_score": 1.0}
        report = json.loads(stdout)
        assert report["candidate"] == improved and report["source"] == "auto_best"
        # One candidate, ranked once: the interrupted re-scores did not count as evaluations.
        assert [(c["commit"], c["selection_score"], c["trusted_score"]) for c in report["ranking"]] == [
            (improved, 1.0, 1.0)]
        persisted = json.loads((restarted.admin_dir / "finalize.json").read_text())
        assert persisted["rewards"] == {"test_score": 1.0}
        after = assert_consistent(restarted.admin_dir)
        assert after.ledger == before.ledger
        assert len([r for r in after.records.values() if r["origin"] == "admin"]) == 4
    finally:
        restarted.stop()


def _race(sidecar: Sidecar, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(bodies))
    responses: list[httpx.Response | None] = [None] * len(bodies)

    def send(index: int) -> None:
        barrier.wait()
        responses[index] = httpx.post(sidecar.url + "/eval", json=bodies[index], timeout=300)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in responses)
    return [r for r in responses if r is not None]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_twenty_evals_race_for_the_last_unit(bench: ModeABench, root: Path, split: str) -> None:
    commit_agent(bench.agent_repo, IMPROVED_AGENT)
    # train: one run left of 2; validation: 5 samples left of 10 (5 per evaluation).
    budgets = [{"split": "train", "total_run_budget": 2},
               {"split": "validation", "total_sample_budget": 10, "max_samples_per_run": 8}]
    sidecar = start_sidecar(root, serve_config(root, bench, budgets=budgets))
    try:
        body = {"split": split, "num_samples": 5}
        assert httpx.post(sidecar.url + "/eval", json=body, timeout=120).status_code == 200
        responses = _race(sidecar, [body] * 20)
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] + [429] * 19, [r.text[:200] for r in responses]
        assert all("budget" in r.json()["error"] for r in responses if r.status_code == 429)
        state = assert_consistent(sidecar.admin_dir)
        assert len(state.records) == 2 and all(r["status"] == "done" for r in state.records.values())
        assert (state.entry(split)["runs_used"], state.entry(split)["samples_used"]) == (2, 10)
        assert len(_records(sidecar)) == 2
        assert not [p for p in (sidecar.admin_dir / "experiments").iterdir()
                    if p.name not in state.records]  # refused requests left no directory
    finally:
        sidecar.stop()


def test_racing_baseline_evals_get_one_free_run(bench: ModeABench, root: Path) -> None:
    budgets = [{"split": "train", "total_run_budget": 1}]
    sidecar = start_sidecar(root, serve_config(root, bench, budgets=budgets))
    try:
        body = {"split": "train", "commit": bench.baseline_commit, "num_samples": 2}
        responses = _race(sidecar, [body] * 10)
        ok = [r.json() for r in responses if r.status_code == 200]
        assert sorted(r.status_code for r in responses) == [200, 200] + [429] * 8
        assert sorted(r["free_baseline"] for r in ok) == [False, True]  # one free, one paid
        state = assert_consistent(sidecar.admin_dir)
        entry = state.entry("train")
        assert (entry["runs_used"], entry["free_baseline_used"]) == (1, True)
        assert len(state.records) == 2
    finally:
        sidecar.stop()
