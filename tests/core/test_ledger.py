"""The budget ledger: atomic check-and-spend under threads and processes, persistence, crashes."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from vero.core.benchmark import Budget
from vero.core.ledger import Ledger
from vero.core.rejections import BudgetExceeded
from vero.errors import VeroError

DS = "d" * 64


def _race(ledger: Ledger, n: int, samples: int = 1) -> tuple[int, int]:
    barrier = threading.Barrier(n)
    granted: list[int] = []
    rejected: list[int] = []

    def attempt() -> None:
        barrier.wait()
        try:
            ledger.reserve("train", DS, samples)
            granted.append(1)
        except BudgetExceeded:
            rejected.append(1)

    threads = [threading.Thread(target=attempt) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(granted), len(rejected)


def test_fifty_threads_against_ten_runs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.json", [Budget(split="train", total_run_budget=10)])
    assert _race(ledger, 50) == (10, 40)
    state = json.loads((tmp_path / "ledger.json").read_text())
    assert state["entries"][0]["runs_used"] == 10


def test_fifty_threads_on_separate_ledger_objects_against_ten_samples(tmp_path: Path) -> None:
    # Separate objects share no thread lock: only the file lock keeps them apart.
    budgets = [Budget(split="train", total_sample_budget=10)]
    ledgers = [Ledger(tmp_path / "ledger.json", budgets) for _ in range(50)]
    barrier = threading.Barrier(50)
    granted: list[int] = []

    def attempt(ledger: Ledger) -> None:
        barrier.wait()
        try:
            ledger.reserve("train", DS, 1)
            granted.append(1)
        except BudgetExceeded:
            pass

    threads = [threading.Thread(target=attempt, args=(ledger,)) for ledger in ledgers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(granted) == 10
    assert ledgers[0].remaining("train", DS).samples_remaining == 0


def _reserve_in_process(path: str, start: multiprocessing.synchronize.Event) -> bool:
    ledger = Ledger(Path(path), [Budget(split="train", total_run_budget=10)])
    start.wait()
    try:
        ledger.reserve("train", DS, 1)
    except BudgetExceeded:
        return False
    return True


def test_fifty_processes_against_ten_runs(tmp_path: Path) -> None:
    path = str(tmp_path / "ledger.json")
    ctx = multiprocessing.get_context("fork")
    with ctx.Manager() as manager:
        start = manager.Event()
        with ctx.Pool(50) as pool:
            pending = [pool.apply_async(_reserve_in_process, (path, start)) for _ in range(50)]
            start.set()
            outcomes = [p.get(timeout=60) for p in pending]
    assert outcomes.count(True) == 10
    assert Ledger(Path(path), [Budget(split="train", total_run_budget=10)]).remaining(
        "train", DS).runs_used == 10


def test_rejected_requests_cost_nothing_and_caps_apply(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.json", [Budget(split="train", total_sample_budget=10, total_run_budget=3,
                                                 max_samples_per_run=6)])
    assert ledger.reserve("train", DS, 6).samples_remaining == 4
    with pytest.raises(BudgetExceeded, match="per-run cap of 6"):
        ledger.reserve("train", DS, 7)
    with pytest.raises(BudgetExceeded, match="only 4 left"):
        ledger.reserve("train", DS, 5)
    after = ledger.remaining("train", DS)
    assert (after.runs_used, after.samples_used) == (1, 6)
    ledger.reserve("train", DS, 4)
    with pytest.raises(BudgetExceeded):
        ledger.reserve("train", DS, 1)
    assert ledger.remaining("train", DS).runs_remaining == 1


def test_unbudgeted_split_is_closed_and_datasets_are_separate(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.json", [Budget(split="train", total_run_budget=1)])
    with pytest.raises(BudgetExceeded, match="no budget configured"):
        ledger.reserve("val", DS, 1)
    ledger.reserve("train", DS, 1)
    ledger.reserve("train", "e" * 64, 1)  # another dataset has its own counters
    with pytest.raises(BudgetExceeded, match="exhausted"):
        ledger.reserve("train", DS, 1)


def test_reloaded_after_restart_never_refilled(tmp_path: Path) -> None:
    budgets = [Budget(split="train", total_run_budget=2)]
    Ledger(tmp_path / "l.json", budgets).reserve("train", DS, 1)
    again = Ledger(tmp_path / "l.json", budgets)
    assert again.remaining("train", DS).runs_remaining == 1
    assert oct((tmp_path / "l.json").stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("content", [b"{not json", b'{"version": 1, "entries": [{"split": "train"}]}', b""])
def test_corrupt_ledger_is_loud(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "l.json").write_bytes(content)
    with pytest.raises(VeroError, match="corrupt") as info:
        Ledger(tmp_path / "l.json", [Budget(split="train", total_run_budget=2)])
    assert "refill" in info.value.render()
    assert (tmp_path / "l.json").read_bytes() == content  # left for the admin to inspect


def test_free_baseline_is_claimed_exactly_once(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.json", [])
    claims: list[bool] = []
    threads = [threading.Thread(target=lambda: claims.append(ledger.claim_free_baseline("val", DS)))
               for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert claims.count(True) == 1
    assert not Ledger(tmp_path / "l.json", []).remaining("val", DS).free_baseline_available


def test_crash_between_write_and_rename_keeps_the_old_state(tmp_path: Path) -> None:
    budgets = [Budget(split="train", total_run_budget=5)]
    Ledger(tmp_path / "l.json", budgets).reserve("train", DS, 1)
    before = (tmp_path / "l.json").read_bytes()
    # Fault injection: a real crash cannot be timed between fsync and rename, so the child
    # replaces os.replace with a SIGKILL of itself.
    child = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from vero.core.benchmark import Budget
        from vero.core.ledger import Ledger
        ledger = Ledger(Path({str(tmp_path / "l.json")!r}), [Budget(split="train", total_run_budget=5)])
        os.replace = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        ledger.reserve("train", {DS!r}, 1)
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == -9, proc.stderr
    assert (tmp_path / "l.json").read_bytes() == before
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the write did happen
    ledger = Ledger(tmp_path / "l.json", budgets)
    assert ledger.remaining("train", DS).runs_used == 1
    ledger.reserve("train", DS, 1)  # the lock died with the child
    assert ledger.remaining("train", DS).runs_used == 2


def test_release_gives_back_exactly_one_charge_once(tmp_path: Path) -> None:
    budgets = [Budget(split="train", total_run_budget=3, total_sample_budget=10)]
    ledger = Ledger(tmp_path / "l.json", budgets)
    ledger.reserve("train", DS, 4, "e-kept")
    ledger.reserve("train", DS, 3, "e-nothing-ran")
    after = ledger.release("train", DS, "e-nothing-ran", 3)
    assert (after.runs_used, after.samples_used, after.runs_remaining, after.samples_remaining) == (1, 4, 2, 6)
    # Idempotent, recorded by id, and the charges say what happened to each experiment.
    assert ledger.release("train", DS, "e-nothing-ran", 3) == after
    assert ledger.charges() == {"e-kept": "run", "e-nothing-ran": "released"}
    state = json.loads((tmp_path / "l.json").read_text())["entries"][0]
    assert state["charged_experiments"] == ["e-kept"] and state["released_experiments"] == ["e-nothing-ran"]
    # Nothing that was never spent can be released, and a released id is never charged again.
    with pytest.raises(ValueError, match="never charged"):
        ledger.release("train", DS, "e-unknown", 1)
    with pytest.raises(ValueError, match="never charged again"):
        ledger.reserve("train", DS, 1, "e-nothing-ran")
    reopened = Ledger(tmp_path / "l.json", budgets).remaining("train", DS)
    assert (reopened.runs_used, reopened.samples_used) == (1, 4)


def test_releasing_the_free_baseline_makes_it_available_again(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.json", [])
    assert ledger.claim_free_baseline("val", DS, "e-free")
    ledger.release("val", DS, "e-free", 5)
    remaining = ledger.remaining("val", DS)
    assert remaining.free_baseline_available and remaining.samples_used == 0
    assert ledger.charges() == {"e-free": "released"}
    assert ledger.claim_free_baseline("val", DS, "e-free-again")
    assert ledger.charges() == {"e-free": "released", "e-free-again": "free_baseline"}


def test_a_ledger_written_before_releases_existed_still_loads(tmp_path: Path) -> None:
    (tmp_path / "l.json").write_text(json.dumps({"version": 1, "entries": [
        {"split": "train", "dataset_id": DS, "runs_used": 1, "samples_used": 2, "free_baseline_used": False,
         "charged_experiments": ["e1"], "free_baseline_experiment": None}]}))
    ledger = Ledger(tmp_path / "l.json", [Budget(split="train", total_run_budget=3)])
    assert ledger.charges() == {"e1": "run"} and ledger.remaining("train", DS).runs_remaining == 2


def test_an_operation_that_fails_halfway_changes_nothing(tmp_path: Path) -> None:
    """A release refused after it began changing its copy of the state: neither the file nor what
    this ledger answers from (a re-read of the same bytes is not parsed again) may keep the change."""
    ledger = Ledger(tmp_path / "l.json", [Budget(split="train", total_run_budget=3)])
    ledger.reserve("train", DS, 1, "e1")
    before = (tmp_path / "l.json").read_bytes()
    with pytest.raises(ValueError, match="negative"):
        ledger.release("train", DS, "e1", 5)
    assert (tmp_path / "l.json").read_bytes() == before
    assert ledger.charges() == {"e1": "run"}
    assert ledger.remaining("train", DS).runs_used == ledger.peek("train", DS).runs_used == 1
    assert ledger.reserve("train", DS, 1, "e2").runs_used == 2


def test_a_change_by_another_ledger_object_is_read(tmp_path: Path) -> None:
    budgets = [Budget(split="train", total_run_budget=3)]
    first, second = Ledger(tmp_path / "l.json", budgets), Ledger(tmp_path / "l.json", budgets)
    first.reserve("train", DS, 1, "e1")
    second.reserve("train", DS, 1, "e2")
    assert first.charges() == {"e1": "run", "e2": "run"}
    assert first.reserve("train", DS, 1, "e3").runs_remaining == 0
    with pytest.raises(BudgetExceeded):
        second.reserve("train", DS, 1, "e4")
