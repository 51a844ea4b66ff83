"""ModeBStrategy under faults real Harbor cannot produce on demand (see fake_harbor.py):
timeouts (salvage, whole-tree kill, SIGKILL escalation), crashes mid-run, an interrupt,
and a harbor run left behind by a killed runner. Resume re-runs exactly the error samples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from vero.core.sample_store import SampleStore
from vero.core.strategy import EvaluationContext, Progress
from vero.errors import VeroError
from vero.modeb import runs
from vero.modeb.config import HarborConfig
from vero.modeb.strategy import HarborInterrupted, ModeBStrategy

BAR = Path(__file__).resolve().parents[2] / "tasks" / "bar"
FAKE = Path(__file__).resolve().parent / "fake_harbor.py"
TASKS = ["write-greeting", "vero-examples/sum-numbers", "reverse-lines"]


class Fake:
    """A scenario file for the fake harbor, its invocation log and the evaluation plumbing."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.scenario_path = tmp_path / "scenario.json"
        self.log = tmp_path / "invocations.jsonl"
        self.child_pid_file = tmp_path / "child.pid"
        self.store = SampleStore(tmp_path / "results" / "samples")
        self.jobs = tmp_path / "results" / "jobs"
        self.worktree = tmp_path / "candidate"
        self.worktree.mkdir()

    def scenario(self, **values: Any) -> None:
        files = {"log": str(self.log), "child_pid_file": str(self.child_pid_file)}
        self.scenario_path.write_text(json.dumps({**files, **values}))

    def strategy(self, **overrides: Any) -> ModeBStrategy:
        # environment "fake": the fake needs no Docker (vero only checks Compose for "docker").
        config = HarborConfig(task_source="inner_tasks", agent="rule_agent.agent:RuleAgent",
                              environment="fake", harbor_command=[sys.executable, str(FAKE)],
                              n_concurrent=2, **overrides)
        env = {**os.environ, "FAKE_HARBOR_SCENARIO": str(self.scenario_path)}
        return ModeBStrategy(config, {"test": TASKS}, base_dir=BAR, jobs_dir=self.jobs, env=env,
                             poll_interval=0.2)

    def context(self, progress: Any = None) -> EvaluationContext:
        return EvaluationContext(commit="a" * 40, split="test", worktree=self.worktree, sample_ids=TASKS,
                                 store=self.store, progress=progress)

    def invocations(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]


def includes(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, flag in enumerate(argv) if flag == "-i"]


def dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is dead for our purposes (its parent, the fake harbor, is gone too).
    status = Path(f"/proc/{pid}/status").read_text()
    return "State:\tZ" in status


def test_timeout_salvages_finished_tasks_and_kills_the_whole_tree(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}}, fault="hang")
    started = time.monotonic()
    results = fake.strategy(timeout=3, kill_grace=5).evaluate(fake.context()).samples
    elapsed = time.monotonic() - started

    by_id = {r.sample_id: r for r in results}
    assert by_id["write-greeting"].ok and by_id["write-greeting"].score == 1.0
    # The fake works through tasks in directory order: reverse-lines was running, sum-numbers never started.
    rev = by_id["reverse-lines"].error
    assert rev is not None and rev.startswith("task 'reverse-lines': ") and "CancelledError" in rev
    assert re.search(r"; harbor timed out \(error id E-[0-9a-f]{10}\)$", rev), rev
    sums = by_id["vero-examples/sum-numbers"].error
    assert sums is not None and sums.startswith("task 'vero-examples/sum-numbers' (dir sum-numbers): ")
    assert "no trial recorded" in sums and "harbor timed out" in sums
    # The grandchild ignores SIGTERM: only the group-wide SIGKILL after the grace ends it.
    assert dead(int(fake.child_pid_file.read_text()))
    assert elapsed < 3 + 5 + 10
    [record] = runs.load_all(fake.jobs)
    assert record.finished and record.timed_out and record.exit_code is not None
    assert [r.sample_id for r in fake.store.all()] == sorted(TASKS)


def test_timeout_escalates_to_sigkill_when_harbor_ignores_sigterm(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}}, fault="hang", ignore_sigterm=True)
    started = time.monotonic()
    results = fake.strategy(timeout=2, kill_grace=2).evaluate(fake.context()).samples
    assert time.monotonic() - started < 2 + 2 + 10
    by_id = {r.sample_id: r for r in results}
    assert by_id["write-greeting"].score == 1.0
    # Killed mid-trial: no result.json, so the task has no finished trial.
    assert "no trial recorded" in (by_id["reverse-lines"].error or "")
    assert dead(int(fake.child_pid_file.read_text()))
    [record] = runs.load_all(fake.jobs)
    assert record.exit_code == -9


def test_crash_mid_run_keeps_finished_results_and_resume_reruns_only_errors(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}}, fault="crash")
    first = {r.sample_id: r for r in fake.strategy().evaluate(fake.context()).samples}
    assert first["write-greeting"].ok
    half_written = first["reverse-lines"].error or ""
    assert "unreadable result.json" in half_written
    unfinished = first["vero-examples/sum-numbers"].error or ""
    assert "harbor exited with 1" in unfinished and "fake harbor crashed" not in unfinished
    assert "RuntimeError: fake harbor crashed mid-run" in (first["vero-examples/sum-numbers"].error_detail or "")
    run = first["vero-examples/sum-numbers"].output
    assert isinstance(run, dict) and run["exit_code"] == 1 and not run["timed_out"] and "stderr_tail" not in run
    assert fake.store.done_ids(TASKS) == {"write-greeting"}

    fake.scenario(finish={"sum-numbers": {"reward": 1.0}, "reverse-lines": {"reward": 0.0}})
    second = {r.sample_id: r for r in fake.strategy().evaluate(fake.context()).samples}

    assert {k: (r.score, r.error) for k, r in second.items()} == {
        "write-greeting": (1.0, None), "vero-examples/sum-numbers": (1.0, None), "reverse-lines": (0.0, None)}
    assert second["write-greeting"] == first["write-greeting"]       # not run again
    first_call, second_call = fake.invocations()
    assert includes(first_call["argv"]) == ["write-greeting", "sum-numbers", "reverse-lines"]
    assert includes(second_call["argv"]) == ["sum-numbers", "reverse-lines"]
    # Every evaluation gets its own job name; harbor always runs detached from any terminal input.
    assert first_call["argv"][first_call["argv"].index("--job-name") + 1] != \
        second_call["argv"][second_call["argv"].index("--job-name") + 1]
    assert first_call["stdin_is_null"] and first_call["pgid"] == first_call["pid"]
    assert first_call["env"] == {"PYTHONPATH": str(fake.worktree), "HARBOR_TELEMETRY": "0",
                                 "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    # A third evaluation has nothing left to run.
    fake.strategy().evaluate(fake.context())
    assert len(fake.invocations()) == 2


def test_unknown_or_repeated_sample_ids_are_refused_before_anything_runs(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    strategy = fake.strategy()
    with pytest.raises(VeroError, match="more than once: 'reverse-lines'"):
        strategy.refs_for("test", ["reverse-lines", "write-greeting", "reverse-lines"])
    with pytest.raises(VeroError, match="not tasks of split 'test': 'sort-unique'"):
        strategy.refs_for("test", ["sort-unique"])
    with pytest.raises(VeroError, match="split 'train' is not in the partition"):
        strategy.refs_for("train", ["write-greeting"])
    assert not fake.log.exists()


def test_interrupt_saves_finished_tasks_then_raises(tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    fake.scenario(finish={"write-greeting": {"reward": 1.0}}, fault="hang")
    seen: list[Progress] = []

    def progress(update: Progress) -> None:
        seen.append(update)
        if update.done >= 1:
            raise KeyboardInterrupt   # what Ctrl-C does to the runner while it polls

    with pytest.raises(HarborInterrupted):
        fake.strategy(kill_grace=5).evaluate(fake.context(progress))
    assert fake.store.done_ids(TASKS) == {"write-greeting"}
    assert seen[0] == Progress(total=3, done=0, passing=0)
    assert seen[1] == Progress(total=3, done=1, passing=1)
    # After the interrupt the running trial ended as cancelled: finished, not passing.
    assert seen[-1] == Progress(total=3, done=2, passing=1)
    assert dead(int(fake.child_pid_file.read_text()))
    [record] = runs.load_all(fake.jobs)
    assert record.interrupted


def test_harbor_left_running_by_a_killed_runner_is_stopped_and_its_finished_tasks_adopted(
        tmp_path: Path) -> None:
    fake = Fake(tmp_path)
    # A runner started harbor, recorded it, and was SIGKILLed: harbor (own session) kept running.
    fake.scenario(finish={"write-greeting": {"reward": 1.0}}, fault="hang")
    fake.jobs.mkdir(parents=True)
    job_name = "vero-test-aaaaaaaaaaaa-orphan"
    argv = [sys.executable, str(FAKE), "run", "-p", str(BAR / "inner_tasks"), "-i", "write-greeting",
            "-i", "sum-numbers", "-o", str(fake.jobs), "--job-name", job_name, "-y", "-q"]
    orphan = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              start_new_session=True,
                              env={**os.environ, "FAKE_HARBOR_SCENARIO": str(fake.scenario_path)})
    runs.save(fake.jobs, runs.HarborRunRecord(job_name=job_name, argv=argv, pid=orphan.pid,
                                              started_at=time.time()))
    deadline = time.monotonic() + 30
    while not fake.child_pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    orphan_child = int(fake.child_pid_file.read_text())

    fake.scenario(finish={"sum-numbers": {"reward": 1.0}, "reverse-lines": {"reward": 1.0}})
    strategy = fake.strategy(kill_grace=3)
    evaluation = strategy.evaluate(fake.context())

    assert orphan.wait(timeout=10) is not None and dead(orphan_child)
    assert evaluation.report.reaped == (job_name,)
    assert evaluation.report.adopted == ("write-greeting",)
    assert all(r.ok for r in evaluation.samples)
    new_call = fake.invocations()[-1]
    assert includes(new_call["argv"]) == ["sum-numbers", "reverse-lines"]   # write-greeting not run twice
    orphan_record = next(r for r in runs.load_all(fake.jobs) if r.job_name == job_name)
    assert orphan_record.finished and orphan_record.orphaned
