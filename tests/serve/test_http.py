"""The sidecar over real HTTP: a server process on a loopback port, the full optimizer flow."""

from __future__ import annotations

import fcntl
import http.server
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from tests.support.mode_a import IMPROVED_AGENT, PARTIAL_AGENT, ModeABench, commit_agent, is_root
from tests.support.sidecar import Sidecar, serve_config, start_sidecar
from vero.cli import cli


@pytest.fixture
def sidecar(bench: ModeABench, root: Path) -> Any:
    running = start_sidecar(root, serve_config(root, bench))
    yield running
    running.stop()


def _post(sidecar: Sidecar, path: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(sidecar.url + path, json=body, timeout=120, **kwargs)


def _cli(sidecar: Sidecar | None, *args: str) -> Any:
    env = {"VERO_EVAL_URL": sidecar.url if sidecar else ""}
    return CliRunner().invoke(cli, ["harbor", *args], env=env)


def test_optimizer_flow_budgets_tiers_and_finalize(sidecar: Sidecar, bench: ModeABench,
                                                   tmp_path: Path) -> None:
    status = httpx.get(sidecar.url + "/status").json()
    tiers = {s["split"]: (s["tier"], s["evaluable"]) for s in status["splits"]}
    assert tiers == {"train": ("viewable", True), "validation": ("non_viewable", True),
                     "test": ("no_access", False)}
    assert status["baseline_commit"] == bench.baseline_commit and status["free_baseline_available"]
    assert status["submission"] is None and status["submit_enabled"]

    # The baseline's first evaluation is free; a viewable split shows per-sample files.
    free = _post(sidecar, "/eval", {"split": "train", "commit": bench.baseline_commit})
    assert free.status_code == 200, free.text
    assert free.json()["free_baseline"] and free.json()["aggregate"]["mean_score"] == 0.0
    assert free.json()["remaining"]["runs_remaining"] == 2
    view = sidecar.results_dir / "train"
    samples = sorted((view / "samples").iterdir())
    assert len(samples) == 6
    sample = json.loads(samples[0].read_text())
    assert sample["input"] == {"id": "train-0", "question": "0+1"} and "answer" not in sample["input"]
    assert json.loads((view / "summary.json").read_text())["aggregate"]["n_samples"] == 6

    improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    hidden = _post(sidecar, "/eval", {"split": "validation", "num_samples": 5})
    assert hidden.status_code == 200, hidden.text
    body = hidden.json()
    assert body["commit"] == improved and body["aggregate"]["mean_score"] == 1.0
    assert "samples" not in body and "results" not in body
    assert body["remaining"]["samples_remaining"] == 35
    assert sorted(p.name for p in (sidecar.results_dir / "validation").iterdir()) == ["summary.json"]

    # Two paid runs on train, then 429; the rejected request spends nothing.
    for _ in range(2):
        assert _post(sidecar, "/eval", {"split": "train", "num_samples": 1}).status_code == 200
    exhausted = _post(sidecar, "/eval", {"split": "train", "num_samples": 1})
    assert exhausted.status_code == 429 and "exhausted" in exhausted.json()["error"]
    train = next(s for s in httpx.get(sidecar.url + "/status").json()["splits"] if s["split"] == "train")
    assert train["budget"]["runs_used"] == 2 and not train["evaluable"]
    # The previous view was replaced, not merged: one sample now.
    assert len(list((view / "samples").iterdir())) == 1

    assert _post(sidecar, "/eval", {"split": "test"}).status_code == 403
    submitted = _post(sidecar, "/submit", {"commit": "main"})
    assert submitted.status_code == 200 and submitted.json()["commit"] == improved

    assert httpx.get(sidecar.url + "/experiments").status_code == 403
    wrong = {"Authorization": "Bearer nope"}
    assert httpx.get(sidecar.url + "/experiments", headers=wrong).status_code == 403
    experiments = httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers()).json()
    assert [e["split"] for e in experiments] == ["train", "validation", "train", "train"]
    assert httpx.post(sidecar.url + "/finalize").status_code == 403

    reward = tmp_path / "verifier" / "reward.json"
    result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
    assert result.exit_code == 0, result.output
    assert json.loads(reward.read_text()) == {"test_score": 1.0}
    report = json.loads(result.stdout)
    assert report["candidate"] == improved and report["source"] == "auto_best"
    # The submission joined the auto_best pool; the trusted re-score ran on the full split.
    assert [c["commit"] for c in report["ranking"]] == [improved]
    rescored = [e for e in httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers()).json()
                if e["origin"] == "admin"]
    assert {(e["purpose"], e["split"], len(e["sample_ids"])) for e in rescored} == {
        ("auto_best", "validation", 8), ("target", "test", 6)}


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"split": "nope"}, 400, "unknown split"),
    ({"split": "train", "dataset_id": "0" * 64}, 400, "unknown dataset"),
    ({"split": "test"}, 403, "no_access"),
    ({"split": "validation", "num_samples": 2}, 403, "at least 5"),
    ({"split": "train", "num_samples": 2, "sample_ids": ["train-0"]}, 422, "not both"),
    ({"split": "train", "num_samples": 0}, 422, "out of range"),
    ({"split": "train", "sample_ids": ["train-99"]}, 422, "not in split"),
    ({"split": "train", "commit": "--upload-pack=touch /tmp/x"}, 422, "invalid commit"),
    ({"split": "train", "commit": "no-such-branch"}, 422, "cannot read 'no-such-branch'"),
    ({"split": "train", "num_samples": "3"}, 422, "num_samples"),
    ({"split": "train", "num_samples": True}, 422, "num_samples"),
    ({"split": "train", "extra": 1}, 422, "extra"),
    ({}, 422, "split"),
    ([], 422, "valid dictionary"),
    ({"split": "validation", "num_samples": 9}, 422, "out of range"),
])
def test_bad_requests_get_clear_errors_and_cost_nothing(sidecar: Sidecar, body: Any, status: int,
                                                        message: str) -> None:
    response = _post(sidecar, "/eval", body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    budgets = {s["split"]: s["budget"] for s in httpx.get(sidecar.url + "/status").json()["splits"]}
    assert budgets["train"]["runs_used"] == 0 and budgets["validation"]["samples_used"] == 0


def test_malformed_http_never_500s(sidecar: Sidecar) -> None:
    cases = [
        httpx.post(sidecar.url + "/eval", content=b"{not json", headers={"content-type": "application/json"}),
        httpx.post(sidecar.url + "/eval", content=b"\xff\xfe", headers={"content-type": "application/json"}),
        httpx.post(sidecar.url + "/eval", content=b"x" * (5 * 1024 * 1024)),
        httpx.get(sidecar.url + "/eval"),
        httpx.get(sidecar.url + "/nope"),
        httpx.post(sidecar.url + "/submit", content=b'{"commit": 5}',
                   headers={"content-type": "application/json"}),
        httpx.post(sidecar.url + "/finalize", headers={"Authorization": "Basic abc"}),
    ]
    assert [r.status_code for r in cases] == [422, 422, 413, 405, 404, 422, 403]
    assert all(isinstance(r.json()["error"], str) for r in cases)


def test_submit_disabled_is_409_and_submit_mode_uses_the_submission(bench: ModeABench, root: Path,
                                                                     tmp_path: Path) -> None:
    disabled = start_sidecar(root, serve_config(root, bench, submit_enabled=False), name="disabled")
    try:
        response = _post(disabled, "/submit", {})
        assert response.status_code == 409 and "disabled" in response.json()["error"]
    finally:
        disabled.stop()
    partial = commit_agent(bench.agent_repo, PARTIAL_AGENT)
    config = serve_config(root, bench, reward_mode="submit", score_baseline=True,
                          targets=[{"split": "test", "reward_key": "test_score"},
                                   {"split": "validation", "reward_key": "val_score"},
                                   {"split": "test", "reward_key": "first_two",
                                    "sample_ids": ["test-0", "test-1"]}],
                          paths={**serve_config(root, bench)["paths"], "admin_dir": str(root / "admin2"),
                                 "trusted_repo": str(root / "admin2" / "repo")})
    sidecar = start_sidecar(root, config, name="submit")
    try:
        assert _post(sidecar, "/submit", {}).json()["commit"] == partial  # default: HEAD
        commit_agent(bench.agent_repo, IMPROVED_AGENT)  # committed later: the submission stays
        reward = tmp_path / "reward.json"
        result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
        assert result.exit_code == 0, result.output
        # test-0..5 have operands 0..5: the partial agent is right on even first operands only.
        assert json.loads(reward.read_text()) == {"test_score": 0.5, "val_score": 0.5, "first_two": 0.5}
        assert json.loads((tmp_path / "baseline.json").read_text()) == {
            "test_score": 0.0, "val_score": 0.0, "first_two": 0.0}
        assert json.loads(result.stdout)["source"] == "submission"
    finally:
        sidecar.stop()


def test_no_candidate_floors_every_reward(sidecar: Sidecar, bench: ModeABench, tmp_path: Path) -> None:
    # Only the baseline was evaluated: auto_best drops it, so there is no candidate.
    baseline = _post(sidecar, "/eval", {"split": "validation", "commit": bench.baseline_commit})
    assert baseline.status_code == 200
    reward = tmp_path / "reward.json"
    result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward),
                  "--reward-key", "test_score")
    assert result.exit_code == 0, result.output
    assert json.loads(reward.read_text()) == {"test_score": 0.0}
    assert json.loads(result.stdout)["source"] == "none"


def test_auto_best_ranks_and_rescores(sidecar: Sidecar, bench: ModeABench, tmp_path: Path) -> None:
    partial = commit_agent(bench.agent_repo, PARTIAL_AGENT)
    improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    # On the first 5 samples the partial agent scores 3/5, the improved one 5/5.
    for commit in (partial, improved):
        response = _post(sidecar, "/eval", {"split": "validation", "num_samples": 5, "commit": commit})
        assert response.status_code == 200
    reward = tmp_path / "reward.json"
    result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(c["commit"], c["selection_score"], c["trusted_score"]) for c in report["ranking"]] == [
        (improved, 1.0, 1.0), (partial, 0.6, 0.5)]
    assert report["candidate"] == improved and json.loads(reward.read_text()) == {"test_score": 1.0}


def _right_when(condition: str, note: str = "") -> str:
    """An agent that answers right only for rows whose first operand satisfies `condition`."""
    return ("def solve(row):\n"
            f"    # {note}\n"
            "    left, right = row['question'].split('+')\n"
            f"    if not ({condition.format(left='int(left)')}):\n"
            "        return {'answer': -1}\n"
            "    return {'answer': int(left) + int(right)}\n")


def test_auto_best_picks_by_the_trusted_score_ties_to_the_earlier_and_cuts_to_the_top_3(
        sidecar: Sidecar, bench: ModeABench, tmp_path: Path) -> None:
    # Selection evaluations see validation-0..4 (first operands 0..4); the re-score sees all 8.
    candidates = {
        "partial": _right_when("{left} % 2 == 0"),                # 3/5, cut: 4th by selection
        "overfit": _right_when("{left} < 5"),                     # 5/5, but 5/8 on the full split
        "general": _right_when("{left} != 0"),                    # 4/5, 7/8
        "general_again": _right_when("{left} != 0", "same again"),  # 4/5, 7/8, evaluated later
    }
    commits = {}
    for name, source in candidates.items():
        commits[name] = commit_agent(bench.agent_repo, source, name)
        response = _post(sidecar, "/eval", {"split": "validation", "num_samples": 5, "commit": commits[name]})
        assert response.status_code == 200, response.text
    reward = tmp_path / "reward.json"
    result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [(c["commit"], c["selection_score"], c["trusted_score"]) for c in report["ranking"]] == [
        (commits["overfit"], 1.0, 0.625), (commits["general"], 0.8, 0.875),
        (commits["general_again"], 0.8, 0.875)]
    assert report["candidate"] == commits["general"] and report["source"] == "auto_best"
    # test-0..5: the general agent is wrong on test-0 only.
    assert json.loads(reward.read_text()) == {"test_score": 5 / 6}


def test_a_baseline_report_that_cannot_be_written_costs_no_reward(bench: ModeABench, root: Path,
                                                                   tmp_path: Path) -> None:
    config = serve_config(root, bench, score_baseline=True)
    sidecar = start_sidecar(root, config, name="baseline-unwritable")
    try:
        (sidecar.admin_dir / "baseline.json").mkdir()   # the atomic rename onto it must fail
        improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
        assert _post(sidecar, "/eval", {"split": "validation", "num_samples": 5}).status_code == 200
        reward = tmp_path / "reward.json"
        result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert report["candidate"] == improved and json.loads(reward.read_text()) == {"test_score": 1.0}
        assert report["baseline"] == {"test_score": 0.0}
        assert any("baseline scores not recorded" in error for error in report["errors"]), report["errors"]
    finally:
        sidecar.stop()


BROKEN_AGENT = "def solve(row):\n    raise NotImplementedError('not yet')\n"


def test_an_evaluation_in_which_every_sample_errored_says_so_everywhere(bench: ModeABench, root: Path,
                                                                       tmp_path: Path) -> None:
    sidecar = start_sidecar(root, serve_config(root, bench, reward_mode="submit", score_baseline=True),
                            name="all-errored")
    try:
        broken = commit_agent(bench.agent_repo, BROKEN_AGENT)
        viewable = _cli(sidecar, "eval", "--split", "train", "--num-samples", "2")
        assert viewable.exit_code == 0, viewable.output
        reply = json.loads(viewable.stdout)
        assert reply["all_errored"] and reply["aggregate"]["n_errors"] == 2
        assert reply["warning"] == ("every sample errored (2 of 2): nothing was scored; each sample's error is in "
                                    f"{sidecar.results_dir / 'train'}/samples/")
        assert viewable.stderr == f"warning: {reply['warning']}\n"
        hidden = _post(sidecar, "/eval", {"split": "validation", "num_samples": 5}).json()
        assert hidden["all_errored"] and "a non_viewable split shows no per-sample errors" in hidden["warning"]
        # An evaluation that scored something is not marked.
        commit_agent(bench.agent_repo, PARTIAL_AGENT)
        partial = _post(sidecar, "/eval", {"split": "validation", "num_samples": 5}).json()
        assert not partial["all_errored"] and partial["warning"] is None
        assert _post(sidecar, "/submit", {"commit": broken}).status_code == 200
        reward = tmp_path / "verifier" / "reward.json"
        result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
        assert result.exit_code == 0, result.output
        assert json.loads(reward.read_text()) == {"test_score": 0.0}
        errors = json.loads((reward.parent / "finalize.json").read_text())["errors"]
        assert errors == ["target test_score on test: every sample errored (6 of 6); first, 'test-0': "
                          "NotImplementedError: not yet"]
        # The verifier's output (test.sh's stdout and stderr) carries the same line.
        assert f"warning: {errors[0]}" in result.stderr
    finally:
        sidecar.stop()


def test_client_commands(sidecar: Sidecar, bench: ModeABench) -> None:
    commit_agent(bench.agent_repo, IMPROVED_AGENT)
    status = _cli(sidecar, "status")
    assert status.exit_code == 0 and json.loads(status.stdout)["name"] == "test/arith"
    evaluated = _cli(sidecar, "eval", "--split", "train", "--sample-id", "train-1", "--sample-id", "train-2")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.stdout)["aggregate"]["n_samples"] == 2
    refused = _cli(sidecar, "eval", "--split", "test")
    assert refused.exit_code == 1 and "403: split 'test' is no_access" in refused.stderr
    submitted = _cli(sidecar, "submit", "--commit", "main")
    assert submitted.exit_code == 0 and json.loads(submitted.stdout)["requested_ref"] == "main"
    unset = _cli(None, "status")
    assert unset.exit_code == 2 and "VERO_EVAL_URL is not set" in unset.stderr


def test_finalize_writes_floors_when_the_sidecar_is_unreachable(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("t\n")
    reward = tmp_path / "out" / "reward.json"
    result = CliRunner().invoke(cli, ["harbor", "finalize", "--token-file", str(token),
                                      "--output", str(reward), "--reward-key", "a", "--reward-key", "b"],
                                env={"VERO_EVAL_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 1 and "cannot reach the eval sidecar" in result.stderr
    assert json.loads(reward.read_text()) == {"a": 0.0, "b": 0.0}
    unset = CliRunner().invoke(cli, ["harbor", "finalize", "--token-file", str(tmp_path / "missing"),
                                     "--output", str(reward)], env={"VERO_EVAL_URL": ""})
    assert unset.exit_code != 0 and json.loads(reward.read_text()) == {"reward": 0.0}
    (tmp_path / "file").write_text("")
    unwritable = CliRunner().invoke(cli, ["harbor", "finalize", "--token-file", str(token),
                                          "--output", str(tmp_path / "file" / "reward.json")],
                                    env={"VERO_EVAL_URL": "http://127.0.0.1:9"})
    assert unwritable.exit_code == 1 and "cannot write reward.json" in unwritable.stderr
    assert "Traceback" not in unwritable.output


class _Foreign(http.server.BaseHTTPRequestHandler):
    """Another server at VERO_EVAL_URL: JSON, but none of the sidecar's replies."""

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        status, body = (418, b'{"detail": "teapot"}') if self.path == "/submit" else (200, b'{"hello": 1}')
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def foreign() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Foreign)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_client_parses_every_reply_into_the_api_models(foreign: str, tmp_path: Path) -> None:
    env = {"VERO_EVAL_URL": foreign}
    status = CliRunner().invoke(cli, ["harbor", "status"], env=env)
    assert status.exit_code == 1 and "Traceback" not in status.output
    assert status.stderr.startswith("error: GET /status: the sidecar's reply is not a valid StatusResponse (")
    evaluated = CliRunner().invoke(cli, ["harbor", "eval", "--split", "train"], env=env)
    assert evaluated.exit_code == 1 and "is not a valid EvalResponse" in evaluated.stderr
    # A refusal that is not the sidecar's ErrorReply still shows what the server said.
    refused = CliRunner().invoke(cli, ["harbor", "submit"], env=env)
    assert refused.exit_code == 1 and 'POST /submit: 418: {"detail": "teapot"}' in refused.stderr
    # The request is checked against the API model before anything is sent.
    empty = CliRunner().invoke(cli, ["harbor", "eval", "--split", ""], env=env)
    assert empty.exit_code == 2 and "invalid evaluation request: split: String should have at least 1" in empty.stderr
    token = tmp_path / "token"
    token.write_text("t\n")
    reward = tmp_path / "reward.json"
    final = CliRunner().invoke(cli, ["harbor", "finalize", "--token-file", str(token), "--output", str(reward),
                                     "--reward-key", "k"], env=env)
    assert final.exit_code == 1 and "is not a valid FinalizeReport" in final.stderr
    assert json.loads(reward.read_text()) == {"k": 0.0}


@pytest.mark.skipif(not is_root(), reason="token ownership checks need root (CI runs as root)")
def test_token_is_root_only(sidecar: Sidecar) -> None:
    info = sidecar.token_file.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, 0o600)
    assert len(sidecar.token()) >= 40


# --- behaviours of the seed that had no test -------------------------------------------------------


def _split_status(sidecar: Sidecar, split: str) -> dict[str, Any]:
    status: dict[str, Any] = next(s for s in httpx.get(sidecar.url + "/status").json()["splits"]
                                  if s["split"] == split)
    return status


def test_status_shows_the_free_baseline_and_the_submission_flipping(sidecar: Sidecar, bench: ModeABench) -> None:
    status = httpx.get(sidecar.url + "/status").json()
    assert status["free_baseline_available"] and status["submission"] is None
    assert _split_status(sidecar, "train")["budget"]["free_baseline_available"]
    assert _split_status(sidecar, "validation")["budget"]["free_baseline_available"]

    # The free evaluation of one split is used up there only.
    assert _post(sidecar, "/eval", {"split": "train", "commit": bench.baseline_commit}).json()["free_baseline"]
    train = _split_status(sidecar, "train")
    assert not train["budget"]["free_baseline_available"] and train["budget"]["runs_used"] == 0
    assert _split_status(sidecar, "validation")["budget"]["free_baseline_available"]
    assert httpx.get(sidecar.url + "/status").json()["free_baseline_available"]
    paid = _post(sidecar, "/eval", {"split": "train", "commit": bench.baseline_commit}).json()
    assert not paid["free_baseline"] and paid["remaining"]["runs_used"] == 1
    assert _post(sidecar, "/eval", {"split": "validation", "commit": bench.baseline_commit}).json()["free_baseline"]
    assert not httpx.get(sidecar.url + "/status").json()["free_baseline_available"]

    # The submission shows up, and a later one replaces it.
    improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    assert _post(sidecar, "/submit", {"commit": bench.baseline_commit}).status_code == 200
    assert httpx.get(sidecar.url + "/status").json()["submission"] == bench.baseline_commit
    assert _post(sidecar, "/submit", {}).json()["commit"] == improved
    assert httpx.get(sidecar.url + "/status").json()["submission"] == improved


def test_status_answers_while_an_evaluation_waits_for_the_ledger_lock(sidecar: Sidecar, bench: ModeABench) -> None:
    """/status and /health answer from memory: another process holding the ledger's lock stops
    an evaluation at its spend, not them, and /status shows the budget as last written."""
    commit_agent(bench.agent_repo, IMPROVED_AGENT)
    assert _post(sidecar, "/eval", {"split": "train", "num_samples": 2}).status_code == 200
    lock = os.open(sidecar.admin_dir / "ledger.json.lock", os.O_RDWR)
    waiting = threading.Thread(target=_post, args=(sidecar, "/eval", {"split": "train", "num_samples": 2}))
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting.start()
        time.sleep(1.0)  # the evaluation is past its import, waiting for the lock
        started = time.monotonic()
        for _ in range(5):
            assert httpx.get(sidecar.url + "/health", timeout=5).status_code == 200
            assert _split_status(sidecar, "train")["budget"]["runs_used"] == 1
        assert time.monotonic() - started < 5
        assert waiting.is_alive()
    finally:
        os.close(lock)
    waiting.join(timeout=120)
    assert _split_status(sidecar, "train")["budget"]["runs_used"] == 2


def test_submit_mode_without_a_submission_falls_back_to_auto_best(bench: ModeABench, root: Path,
                                                                   tmp_path: Path) -> None:
    sidecar = start_sidecar(root, serve_config(root, bench, reward_mode="submit"))
    try:
        assert httpx.get(sidecar.url + "/status").json()["reward_mode"] == "submit"
        # Nothing evaluated, nothing submitted: no candidate, every target floors to 0.0.
        nothing = tmp_path / "nothing" / "reward.json"
        result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(nothing))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["source"] == "none" and json.loads(nothing.read_text()) == {"test_score": 0.0}
    finally:
        sidecar.stop()
    # A fresh admin volume: an evaluated candidate but no submission, so auto_best picks it.
    config = serve_config(root, bench, reward_mode="submit",
                          paths={**serve_config(root, bench)["paths"], "admin_dir": str(root / "admin2"),
                                 "trusted_repo": str(root / "admin2" / "repo")})
    sidecar = start_sidecar(root, config, name="fallback")
    try:
        improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
        assert _post(sidecar, "/eval", {"split": "validation", "num_samples": 5}).status_code == 200
        reward = tmp_path / "fallback" / "reward.json"
        result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert (report["source"], report["candidate"]) == ("auto_best", improved)
        assert [c["commit"] for c in report["ranking"]] == [improved]
        assert json.loads(reward.read_text()) == {"test_score": 1.0}
    finally:
        sidecar.stop()


def test_without_score_baseline_the_baseline_is_not_scored(sidecar: Sidecar, bench: ModeABench,
                                                           tmp_path: Path) -> None:
    assert sidecar.config["score_baseline"] is False
    commit_agent(bench.agent_repo, IMPROVED_AGENT)
    assert _post(sidecar, "/eval", {"split": "validation", "num_samples": 5}).status_code == 200
    reward = tmp_path / "reward.json"
    result = _cli(sidecar, "finalize", "--token-file", str(sidecar.token_file), "--output", str(reward))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["baseline"] is None and not (tmp_path / "baseline.json").exists()
    admin = httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers()).json()
    assert not [e for e in admin if e["purpose"] == "baseline"]
    assert not (sidecar.admin_dir / "baseline.json").exists()
