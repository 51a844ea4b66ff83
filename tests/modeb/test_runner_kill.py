"""Drill: the runner is SIGKILLed at each of its writes, from recording the harbor run to the last
sample result of the collation. The next run recovers: every task scored exactly once, no task
that finished is run by harbor again, no temp file is left, and the results are those of an
uninterrupted run, and the killed run's checkout is removed.

Fault injection: no signal sent from outside can land between two writes a few microseconds
apart, so the runner is started through a launcher that makes its N-th `os.replace` (every
atomic write ends in one) a SIGKILL of its own process. Harbor is the fake of fake_harbor.py
(a finished run in well under a second, so the drill can walk every write); the runner, its
files and its processes are real.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.modeb.agent_repo import git, make_agent_repo
from vero.modeb.runner import cli as runner_cli
from vero.modeb.runs import load_all

BAR = Path(__file__).resolve().parents[2] / "tasks" / "bar"
FAKE = Path(__file__).resolve().parent / "fake_harbor.py"
TASKS = ["write-greeting", "vero-examples/sum-numbers", "reverse-lines"]
FINISH = {"write-greeting": {"reward": 1.0}, "sum-numbers": {"reward": 0.0}, "reverse-lines": {"reward": 1.0}}

KILL_AT_WRITE = """
import os, signal
state = {{"writes": 0}}
real_replace = os.replace
def replace(*args, **kwargs):
    state["writes"] += 1
    if state["writes"] == {target}:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_replace(*args, **kwargs)
os.replace = replace
from {module} import main
main()
"""
# Imported above, so the test depends on the runner that the child process runs.
PLAIN = f"from {runner_cli.__name__} import main; main()"


def runner(code: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def wait_for_harbor_of(jobs: Path) -> None:
    """A runner killed between starting harbor and recording it leaves harbor running unrecorded
    (it has its own session): let it finish, as a user would before running again."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = subprocess.run(["pgrep", "-f", "--", f"-o {jobs} "], capture_output=True, text=True, check=False)
        if not found.stdout.strip():
            return
        time.sleep(0.1)
    raise AssertionError(f"harbor of {jobs} still running after 60 s")


def temp_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.name.startswith(".") and path.name != ".lock"
            and path.is_file()]


def scores(stdout: str) -> dict[str, Any]:
    return {line["task"]: line["score"] for line in map(json.loads, stdout.splitlines()) if "task" in line}


class Bench:
    """The tasks/bar agent repo, a three-task split, and the fake harbor that logs its runs."""

    def __init__(self, tmp_path: Path) -> None:
        self.repo = make_agent_repo(tmp_path)
        self.config = tmp_path / "harbor.yaml"
        self.config.write_text(json.dumps({
            "harbor": {"task_source": str(BAR / "inner_tasks"), "agent": "rule_agent.agent:RuleAgent",
                       "environment": "fake", "n_concurrent": 2},
            "partition": {"smoke": TASKS}}))
        self.log = tmp_path / "invocations.jsonl"
        scenario = tmp_path / "scenario.json"
        scenario.write_text(json.dumps({"finish": FINISH, "log": str(self.log)}))
        self.scratch = tmp_path / "tmp"
        self.scratch.mkdir()
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
                    "FAKE_HARBOR_SCENARIO": str(scenario), "TMPDIR": str(self.scratch)}

    def args(self, results: Path, commit: str | None = None, *extra: str) -> list[str]:
        return ["run", "--harbor-config", str(self.config), "--split", "smoke", "--repo", str(self.repo.path),
                "--commit", commit or self.repo.improved, "--results-dir", str(results),
                "--harbor-command", f"{sys.executable} {FAKE}", "--json", *extra]

    def harbor_runs(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0


def test_a_results_dir_is_never_resumed_for_another_candidate(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    results = tmp_path / "results"
    first = runner(PLAIN, bench.args(results), bench.env)
    assert first.returncode == 0, first.stderr
    runs = bench.harbor_runs()
    for commit, extra, differs in ((bench.repo.baseline, (), f"commit '{bench.repo.improved}', not "
                                    f"'{bench.repo.baseline}'"),
                                   (None, ("--model", "other/model"), "model None, not 'other/model'")):
        other = runner(PLAIN, bench.args(results, commit, *extra), bench.env)
        assert other.returncode == 2 and "holds the results of another candidate" in other.stderr, other.stderr
        assert differs in other.stderr and "Traceback" not in other.stderr
    assert bench.harbor_runs() == runs   # refused before anything ran
    again = runner(PLAIN, bench.args(results), bench.env)
    assert again.returncode == 0 and "nothing to run" in again.stderr, again.stderr


def test_a_kill_at_any_write_of_the_runner_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    bench = Bench(tmp_path)
    repo, log, scratch, env, args = bench.repo, bench.log, bench.scratch, bench.env, bench.args
    clean = runner(PLAIN, args(tmp_path / "clean"), env)
    assert clean.returncode == 0, clean.stderr
    expected = scores(clean.stdout)
    assert expected == {"write-greeting": 1.0, "vero-examples/sum-numbers": 0.0, "reverse-lines": 1.0}

    for target in itertools.count(1):
        results = tmp_path / f"kill-{target}"
        log.unlink()
        doomed = runner(KILL_AT_WRITE.format(target=target, module=runner_cli.__name__), args(results), env)
        if doomed.returncode == 0:   # fewer writes than `target`: the run went through them all
            assert scores(doomed.stdout) == expected
            break
        assert doomed.returncode == -9, doomed.stderr
        wait_for_harbor_of((results / "jobs").resolve())

        again = runner(PLAIN, args(results), env)
        assert again.returncode == 0, again.stderr
        assert scores(again.stdout) == expected
        # Every task ran in harbor exactly once over both runs: finished ones were adopted.
        runs = [json.loads(line)["argv"] for line in log.read_text().splitlines()]
        included = [argv[i + 1] for argv in runs for i, flag in enumerate(argv) if flag == "-i"]
        assert sorted(included) == sorted(["write-greeting", "sum-numbers", "reverse-lines"]), runs
        samples = sorted(path.name for path in (results / "samples").iterdir())
        assert len(samples) == 3, samples
        assert temp_files(results) == []
        assert all(record.finished for record in load_all(results / "jobs"))
        # The killed runner's checkout is gone too: no directory, no git worktree entry.
        assert not (results / ".candidate-checkout").exists() and list(scratch.iterdir()) == []
        assert git(repo.path, "worktree", "list", "--porcelain").count("worktree ") == 1
        # A third run has nothing to do.
        third = runner(PLAIN, args(results), env)
        assert third.returncode == 0 and "nothing to run" in third.stderr, third.stderr
        assert scores(third.stdout) == expected
    # the results dir's owner, run record (started), run record (ended), three sample results, the
    # session archive
    assert target == 8
