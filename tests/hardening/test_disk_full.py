"""Full-disk drills: the admin volume or the results volume is a small real tmpfs, filled up.

Each request that runs out of space fails with one clear JSON error (507, no traceback), the
ledger and the records stay valid, no half-written file replaces a good one, and once space is
freed the same sidecar works on with its books balanced.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.hardening.audit import (
    assert_consistent,
    eval_in_background,
    read_admin,
    stored_samples,
    temp_files,
    wait_for,
)
from tests.support.mode_a import IMPROVED_AGENT, ModeABench, commit_agent, is_root
from tests.support.sidecar import Sidecar, serve_config, start_sidecar

pytestmark = pytest.mark.skipif(not is_root(), reason="mounting a tmpfs needs root (CI runs as root)")

PAGE = os.sysconf("SC_PAGE_SIZE")
SLOW_AGENT = (
    "import time\n"
    "def solve(row):\n"
    "    time.sleep(0.4)\n"
    "    left, right = row['question'].split('+')\n"
    "    return {'answer': int(left) + int(right)}\n"
)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A fresh tmpfs of `size` mounted at `path` (created), unmounted afterwards."""
    path.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def fill(directory: Path, leave_pages: int = 0) -> Path:
    """Write a filler file until the filesystem is full, then give back `leave_pages` pages."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        chunk = b"\0" * (64 * PAGE)
        while True:
            try:
                if os.write(fd, chunk) == 0:
                    break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    pages = -(-filler.stat().st_size // PAGE)
    os.truncate(filler, (pages - leave_pages) * PAGE)
    return filler


def _eval(sidecar: Sidecar, **body: object) -> httpx.Response:
    return httpx.post(sidecar.url + "/eval", json=body, timeout=120)


def _assert_out_of_space(response: httpx.Response) -> str:
    assert response.status_code == 507, response.text
    body = response.json()
    assert set(body) == {"error", "fix"} and "Traceback" not in response.text
    assert "out of disk space" in body["error"] and "free space" in body["fix"]
    return str(body["error"])


def _admin_files(sidecar: Sidecar) -> dict[str, bytes]:
    admin = sidecar.admin_dir
    return {str(p.relative_to(admin)): p.read_bytes() for p in admin.rglob("*")
            if p.is_file() and admin / "repo" not in p.parents and p.name != "filler"}


@pytest.mark.parametrize(("leave_pages", "where"), [(0, "the pending record"), (1, "the ledger")])
def test_full_admin_volume_before_an_evaluation(bench: ModeABench, root: Path, leave_pages: int,
                                                where: str) -> None:
    improved = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    with tmpfs(root / "admin", "4m"):
        sidecar = start_sidecar(root, serve_config(root, bench))
        try:
            assert _eval(sidecar, split="train", num_samples=2).status_code == 200
            before = _admin_files(sidecar)
            filler = fill(sidecar.admin_dir, leave_pages)
            # With `leave_pages` = 1 the pending record fits and the ledger write is what fails.
            for body in ({"split": "train", "commit": improved, "num_samples": 3},
                         {"split": "train", "num_samples": 3}):  # HEAD: git must write a ref first
                _assert_out_of_space(_eval(sidecar, **body))
                assert _admin_files(sidecar) == before, where  # nothing charged, nothing recorded
                assert temp_files(sidecar.admin_dir) == []
                assert [p.name for p in (sidecar.admin_dir / "experiments").iterdir()] == list(
                    read_admin(sidecar.admin_dir).records)  # no empty experiment directory
            status = httpx.get(sidecar.url + "/status")
            assert status.status_code == 200
            filler.unlink()
            after = _eval(sidecar, split="train", num_samples=3)
            assert after.status_code == 200, after.text
            assert after.json()["remaining"]["runs_remaining"] == 0
            state = assert_consistent(sidecar.admin_dir)
            assert len(state.records) == 2
        finally:
            sidecar.stop()


def test_full_results_volume_keeps_the_previous_view(bench: ModeABench, root: Path) -> None:
    commit_agent(bench.agent_repo, IMPROVED_AGENT)
    with tmpfs(root / "results", "1m"):
        sidecar = start_sidecar(root, serve_config(root, bench))
        try:
            first = _eval(sidecar, split="train", num_samples=2)
            assert first.status_code == 200
            view = sidecar.results_dir / "train"
            good = {p.name: p.read_bytes() for p in view.rglob("*.json")}
            filler = fill(sidecar.results_dir)
            message = _assert_out_of_space(_eval(sidecar, split="train", num_samples=3))
            # The run itself happened and was paid: the message carries what the view would have.
            state = assert_consistent(sidecar.admin_dir)
            second = max(state.records.values(), key=lambda r: r["created_at"])
            assert (second["status"], second["charged"]) == ("done", True)
            assert second["experiment_id"] in message and "mean score 1 over 3 samples" in message
            # The previous view is intact, no staging directory or temp file is left behind.
            assert {p.name: p.read_bytes() for p in view.rglob("*.json")} == good
            assert json.loads((view / "summary.json").read_text())["experiment_id"] == \
                first.json()["experiment_id"]
            assert sorted(p.name for p in sidecar.results_dir.iterdir()) == ["filler", "train"]
            assert temp_files(sidecar.results_dir) == []
            filler.unlink()
            budget = next(s["budget"] for s in httpx.get(sidecar.url + "/status").json()["splits"]
                          if s["split"] == "validation")
            assert budget["samples_used"] == 0
            third = _eval(sidecar, split="validation", num_samples=5)
            assert third.status_code == 200, third.text
            assert (sidecar.results_dir / "validation" / "summary.json").exists()
            assert_consistent(sidecar.admin_dir)
        finally:
            sidecar.stop()


def test_admin_volume_fills_up_during_an_evaluation(bench: ModeABench, root: Path) -> None:
    slow = commit_agent(bench.agent_repo, SLOW_AGENT)
    config = serve_config(root, bench, max_concurrency=1)
    with tmpfs(root / "admin", "4m"):
        sidecar = start_sidecar(root, config)
        try:
            thread, outcome = eval_in_background(sidecar, {"split": "validation"})
            wait_for(lambda: stored_samples(sidecar.admin_dir) >= 2, "two stored samples", sidecar)
            filler = fill(sidecar.admin_dir)
            thread.join(timeout=60)
            _assert_out_of_space(outcome[0])
            # Nothing frees space when the evaluation ends: its record cannot be settled yet.
            state = assert_consistent(sidecar.admin_dir, settled=False)
            (record,) = state.records.values()
            assert (record["charged"], record["commit"]) == (True, slow)
            assert record["status"] == "running"
            assert temp_files(sidecar.admin_dir) == []
            filler.unlink()
            # The next evaluation settles what is left first, then runs normally.
            after = _eval(sidecar, split="train", num_samples=2)
            assert after.status_code == 200, after.text
            state = assert_consistent(sidecar.admin_dir)
            settled = state.records[record["experiment_id"]]
            assert settled["status"] == "failed" and "No space left on device" in settled["error"]
            assert 2 <= settled["aggregate"]["n_scored"] < 8  # the samples stored before the fill
            assert state.entry("validation")["samples_used"] == 8  # paid, never refunded
        finally:
            sidecar.stop()
