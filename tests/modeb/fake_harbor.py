"""A fake `harbor` executable, used ONLY for faults real Harbor cannot be made to produce on
demand: a run that hangs past the timeout with a grandchild that ignores SIGTERM, or that
ignores SIGTERM itself (SIGKILL escalation), a crash in the middle of a run (half-written
result.json, an unfinished trial, a traceback), a harbor left running by a runner that
was killed, and an infrastructure failure that passes (the first runs fail before any trial,
as harbor does while Docker is down, then the engine is back). Scoring, resume and an
ordinary timeout are tested with the real harbor CLI (test_real_harbor.py).

Stdlib only; run as `python fake_harbor.py run <harbor run flags>`. The scenario comes from
the JSON file named by FAKE_HARBOR_SCENARIO:
  {"finish": {"<task dir>": {"reward": 1.0}, ...}   tasks that finish (in -i order) before the fault
   "fault": "none" | "crash" | "hang",
   "ignore_sigterm": false,                           hang: ignore SIGTERM (forces SIGKILL)
   "log": "<file>",                                   one JSON line per invocation (argv, env, stdin)
   "child_pid_file": "<file>",                        hang: pid of a grandchild that ignores SIGTERM
   "unavailable_first": 0}                            this many invocations fail before any trial
"""

from __future__ import annotations

import fnmatch
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tomllib


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _flags(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    single: dict[str, str] = {}
    includes: list[str] = []
    i = 0
    while i < len(argv):
        flag = argv[i]
        if flag in ("-y", "-q", "run"):
            i += 1
            continue
        value = argv[i + 1]
        if flag == "-i":
            includes.append(value)
        else:
            single[flag] = value
        i += 2
    return single, includes


def _task_name(task_dir: Path) -> str:
    data = tomllib.loads((task_dir / "task.toml").read_text())
    name = data.get("task", {}).get("name")
    return name if isinstance(name, str) else task_dir.name


class FakeRun:
    def __init__(self, argv: list[str], scenario: dict[str, Any]) -> None:
        flags, includes = _flags(argv)
        self.scenario = scenario
        self.dataset = Path(flags["-p"])
        self.job = Path(flags["-o"]) / flags["--job-name"]
        self.tasks = [d for d in sorted(self.dataset.iterdir())
                      if (d / "task.toml").is_file() and any(fnmatch.fnmatch(d.name, p) for p in includes)]
        self.counter = 0
        self.running: Path | None = None

    def start_job(self) -> None:
        self.job.mkdir(parents=True)
        (self.job / "config.json").write_text(json.dumps({"job_name": self.job.name,
                                                          "datasets": [{"path": str(self.dataset)}]}))

    def start_trial(self, task: Path) -> Path:
        self.counter += 1
        trial = self.job / f"{task.name[:32].rstrip('_-')}__fake{self.counter:03d}"
        trial.mkdir()
        config = {"task": {"path": str(task)}, "trial_name": trial.name}
        (trial / "config.json").write_text(json.dumps(config))
        self.running = trial
        return trial

    def result(self, trial: Path, task: Path, rewards: dict[str, float] | None,
               exception: str | None = None) -> str:
        return json.dumps({
            "task_name": _task_name(task), "trial_name": trial.name, "trial_uri": f"file://{trial}",
            "task_id": {"path": str(task)}, "source": self.dataset.name, "task_checksum": "0" * 64,
            "config": {"task": {"path": str(task)}}, "agent_info": {"name": "fake", "version": "0"},
            "verifier_result": None if rewards is None else {"rewards": rewards},
            "exception_info": None if exception is None else {
                "exception_type": exception, "exception_message": "", "exception_traceback": "",
                "occurred_at": _now()},
            "started_at": _now(), "finished_at": _now()}, indent=4)

    def finish_trial(self, trial: Path, task: Path, rewards: dict[str, float] | None,
                     exception: str | None = None) -> None:
        (trial / "result.json").write_text(self.result(trial, task, rewards, exception))
        self.running = None

    def cancel(self, signum: int, frame: object) -> None:
        # Like Harbor: SIGTERM cancels the running trial, which still gets a result.json.
        if self.running is not None:
            task = Path(json.loads((self.running / "config.json").read_text())["task"]["path"])
            self.finish_trial(self.running, task, None, "CancelledError")
        sys.exit(130)


def main() -> None:
    scenario = json.loads(Path(os.environ["FAKE_HARBOR_SCENARIO"]).read_text())
    argv = sys.argv[1:]
    stdin_is_null = os.fstat(0).st_rdev == os.stat("/dev/null").st_rdev and stat.S_ISCHR(os.fstat(0).st_mode)
    with open(scenario["log"], "a") as log:
        log.write(json.dumps({"argv": argv, "stdin_is_null": stdin_is_null, "pgid": os.getpgid(0),
                              "pid": os.getpid(), "env": {k: os.environ.get(k) for k in (
                                  "PYTHONPATH", "HARBOR_TELEMETRY", "LITELLM_LOCAL_MODEL_COST_MAP")},
                              "isolation": os.environ.get("VERO_ISOLATION")}) + "\n")
    invocation = len(Path(scenario["log"]).read_text().splitlines())
    if invocation <= scenario.get("unavailable_first", 0):
        # Harbor's own preflight words when the Docker daemon is down: no job dir, exit 1.
        sys.stderr.write("Docker daemon is not running. Please start Docker and try again.\n")
        sys.exit(1)
    run = FakeRun(argv, scenario)
    run.start_job()
    finish: dict[str, dict[str, float]] = scenario.get("finish", {})
    pending = []
    for task in run.tasks:
        if task.name in finish:
            trial = run.start_trial(task)
            run.finish_trial(trial, task, finish[task.name])
        else:
            pending.append(task)
    fault = scenario.get("fault", "none")
    if fault == "crash":
        if pending:
            half = run.start_trial(pending[0])
            text = run.result(half, pending[0], {"reward": 1.0})
            (half / "result.json").write_text(text[: len(text) // 2])
        if len(pending) > 1:
            run.start_trial(pending[1])
        sys.stderr.write("Traceback (most recent call last):\n  ...\n"
                         "RuntimeError: fake harbor crashed mid-run\n")
        sys.stderr.flush()
        os._exit(1)
    if fault == "hang":
        child = subprocess.Popen([sys.executable, "-c",
                                  "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                                  "time.sleep(600)"])
        Path(scenario["child_pid_file"]).write_text(str(child.pid))
        if pending:
            run.start_trial(pending[0])
        if scenario.get("ignore_sigterm"):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, run.cancel)
        print("hanging", flush=True)
        while True:
            time.sleep(0.1)
    for task in pending:
        trial = run.start_trial(task)
        run.finish_trial(trial, task, None, "RewardFileNotFoundError")


if __name__ == "__main__":
    main()
