"""A real Mode B `vero harbor serve` whose nested harbor cannot reach Docker (the real harbor CLI,
pointed at a socket nobody listens on, refuses to start: no trial at all).

The optimizer gets a retryable 503, never a 0.0; the evaluation is recorded as failed and
released; the budget and the free baseline evaluation are left as they were; finalize retries
the target once, then reports it next to its 0.0 floor. A nested run that only fails at first
(the fake harbor: a passing outage cannot be produced on demand) is saved by the retry.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hardening.audit import assert_consistent
from tests.support.mode_a import shared_tmp
from tests.support.mode_b import ModeBBench, make_mode_b_bench, mode_b_serve_config
from tests.support.sidecar import Sidecar, start_sidecar
from tests.support.tools import harbor_bin, require_docker

FAKE_HARBOR = Path(__file__).resolve().parents[1] / "modeb" / "fake_harbor.py"


@pytest.fixture
def root() -> Iterator[Path]:
    with shared_tmp() as path:
        yield path


@pytest.fixture
def bench(root: Path) -> ModeBBench:
    return make_mode_b_bench(root / "bench")


def _status(sidecar: Sidecar) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(sidecar.url + "/status", timeout=30).json()
    return status


def _split(status: dict[str, Any], split: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in status["splits"] if s["split"] == split)
    return found


def test_docker_down_is_a_retryable_503_that_costs_nothing(root: Path, bench: ModeBBench) -> None:
    require_docker()
    config = mode_b_serve_config(root, bench, {"harbor_command": [str(harbor_bin())], "timeout": 120},
                                 reward_mode="submit")
    sidecar = start_sidecar(root, config, env={"DOCKER_HOST": f"unix://{root}/no-docker.sock"})
    try:
        before = _split(_status(sidecar), "train")
        assert before["budget"]["free_baseline_available"] and before["budget"]["runs_remaining"] == 3

        for commit in (bench.baseline_commit, bench.improved):   # the free evaluation, then a paid one
            response = httpx.post(sidecar.url + "/eval", json={"split": "train", "commit": commit}, timeout=300)
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"].startswith("evaluation ")
            assert re.search(r" could not run: the nested harbor run produced no trial \(harbor exited with 1\); "
                             r"nothing was scored; no budget was spent \(its charge was given back\) "
                             r"\(error id E-[0-9a-f]{10}\)$", body["error"]), body["error"]
            assert body["fix"].startswith("retry")
            assert "Docker daemon" not in response.text   # harbor's own output stays in the admin log

        after = _split(_status(sidecar), "train")
        assert after["budget"] == before["budget"] and after["evaluable"]
        records = httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers(), timeout=30).json()
        assert [(r["status"], r["charged"], r["free_baseline"], r["released"]) for r in records] == [
            ("failed", False, False, True)] * 2
        assert all("could not run: the nested harbor run produced no trial" in r["error"] for r in records)
        state = assert_consistent(sidecar.admin_dir)
        assert len(state.entry("train")["released_experiments"]) == 2
        assert "Docker daemon is not running" in sidecar.log_text()
        incidents = (sidecar.admin_dir / "incidents.jsonl").read_text()
        assert incidents.count("Docker daemon is not running") == 2  # under the error ids the optimizer got
        assert not (root / "results" / "train").exists()   # nothing was shown to the optimizer

        # Finalize: the submitted candidate's target cannot run either; retried once, then floored.
        assert httpx.post(sidecar.url + "/submit", json={"commit": bench.improved}, timeout=60).status_code == 200
        report = httpx.post(sidecar.url + "/finalize", headers=sidecar.admin_headers(), json={},
                            timeout=600).json()
        assert report["rewards"] == {"pass_rate": 0.0} and report["source"] == "submission"
        assert report["target_errors"]["pass_rate"].endswith("nothing was charged (tried twice)")
        assert [e for e in report["errors"] if e.startswith("target pass_rate on test floored to 0.0: ")]
        on_disk = json.loads((root / "admin" / "finalize.json").read_text())
        assert on_disk["target_errors"] == report["target_errors"]
        admin = httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers(), timeout=30).json()
        assert [r["purpose"] for r in admin if r["origin"] == "admin"] == ["target", "target"]
        assert_consistent(sidecar.admin_dir)
    finally:
        sidecar.stop()


def test_finalize_retries_a_target_whose_nested_run_produced_nothing(root: Path, bench: ModeBBench) -> None:
    # Fault injection (fake harbor): an outage that passes between two runs.
    scenario = root / "scenario.json"
    log = root / "invocations.jsonl"
    scenario.write_text(json.dumps({"log": str(log), "child_pid_file": str(root / "child.pid"),
                                    "unavailable_first": 1,
                                    "finish": {"count-words": {"reward": 1.0}, "sort-unique": {"reward": 0.0}}}))
    config = mode_b_serve_config(root, bench, {"harbor_command": [sys.executable, str(FAKE_HARBOR)],
                                               "environment": "fake"}, reward_mode="submit")
    sidecar = start_sidecar(root, config, env={"FAKE_HARBOR_SCENARIO": str(scenario), "PATH": os.environ["PATH"]})
    try:
        assert httpx.post(sidecar.url + "/submit", json={"commit": bench.improved}, timeout=60).status_code == 200
        report = httpx.post(sidecar.url + "/finalize", headers=sidecar.admin_headers(), json={},
                            timeout=600).json()
        assert report["rewards"] == {"pass_rate": 0.5} and report["target_errors"] == {} and report["errors"] == []
        assert len(log.read_text().splitlines()) == 2
        admin = httpx.get(sidecar.url + "/experiments", headers=sidecar.admin_headers(), timeout=30).json()
        assert [(r["status"], r["purpose"]) for r in admin] == [("failed", "target"), ("done", "target")]
        assert "trying once more" in sidecar.log_text()
    finally:
        sidecar.stop()
