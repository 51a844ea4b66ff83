"""Build Harbor jobs directories for collation tests.

Every trial `result.json` starts from `data/trial-result.json`, a file recorded from a real
`harbor run` (Harbor 0.24.0, tasks/bar/inner_tasks/write-greeting), and changes only the
fields a scenario needs, so fixtures keep Harbor's real schema. The layout follows
reference/harbor.md: `<jobs>/<job>/{config.json,result.json}` and one dir per trial
named `<task dir[:32]>__<7 chars>` holding config.json and (once finished) result.json.
"""

from __future__ import annotations

import copy
import json
import random
import string
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
TEMPLATE: dict[str, Any] = json.loads((DATA / "trial-result.json").read_text())
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def iso(moment: datetime) -> str:
    """Harbor's trial timestamps: ISO-8601 UTC with a Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_job(jobs_dir: Path, job_name: str, tasks_root: Path | None = None) -> Path:
    """A job dir with Harbor's job-level config.json and result.json."""
    job = jobs_dir / job_name
    job.mkdir(parents=True)
    config = {"job_name": job_name, "jobs_dir": str(jobs_dir), "n_concurrent_trials": 2, "quiet": True,
              "agents": [{"name": "rule_agent.agent:RuleAgent"}],
              "datasets": [{"path": str(tasks_root or jobs_dir / "tasks")}]}
    (job / "config.json").write_text(json.dumps(config, indent=4))
    (job / "result.json").write_text(json.dumps({"id": "job", "started_at": "2026-01-01T12:00:00",
                                                 "finished_at": None, "n_total_trials": 0, "stats": {}}))
    return job


def _suffix(rng: random.Random) -> str:
    return "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(7))


def trial_name_for(task_dir: str, rng: random.Random) -> str:
    """Harbor's trial-dir name rule."""
    return f"{task_dir[:32].rstrip('_-')}__{_suffix(rng)}"


def write_trial(job: Path, task_dir: str, *, task_name: str | None = None,
                rewards: dict[str, Any] | None = None, exception: str | None = None,
                message: str = "boom", finished: datetime | None = None, trial_name: str | None = None,
                tasks_root: Path | None = None, seed: int | None = None) -> Path:
    """One finished trial. `rewards=None` means the verifier produced none (verifier_result null)."""
    rng = random.Random(seed if seed is not None else f"{job.name}/{task_dir}/{finished}/{trial_name}")
    name = trial_name or trial_name_for(task_dir, rng)
    trial_dir = job / name
    trial_dir.mkdir(parents=True)
    task_path = str((tasks_root or job.parent / "tasks") / task_dir)
    end = finished or T0 + timedelta(minutes=1)
    data = copy.deepcopy(TEMPLATE)
    data.update({
        "task_name": task_name or task_dir,
        "trial_name": name,
        "trial_uri": f"file://{trial_dir}",
        "task_id": {"path": task_path},
        "source": job.parent.name,
        "started_at": iso(end - timedelta(seconds=20)),
        "finished_at": iso(end),
        "verifier_result": None if rewards is None else {"rewards": rewards},
        "exception_info": None if exception is None else {
            "exception_type": exception, "exception_message": message,
            "exception_traceback": f"Traceback (most recent call last):\n{exception}: {message}\n",
            "occurred_at": iso(end - timedelta(seconds=1))},
    })
    data["config"]["task"]["path"] = task_path
    data["config"]["trial_name"] = name
    data["config"]["trials_dir"] = str(job)
    (trial_dir / "config.json").write_text(json.dumps(data["config"], indent=4))
    (trial_dir / "result.json").write_text(json.dumps(data, indent=4))
    return trial_dir


def write_unfinished_trial(job: Path, task_dir: str, *, tasks_root: Path | None = None) -> Path:
    """A trial that started (config.json) but never finished (no result.json)."""
    rng = random.Random(f"unfinished/{job.name}/{task_dir}")
    trial_dir = job / trial_name_for(task_dir, rng)
    trial_dir.mkdir(parents=True)
    config = copy.deepcopy(TEMPLATE["config"])
    config["task"]["path"] = str((tasks_root or job.parent / "tasks") / task_dir)
    (trial_dir / "config.json").write_text(json.dumps(config))
    return trial_dir


def make_task(root: Path, dir_name: str, task_name: str | None = None) -> Path:
    """A minimal valid Harbor task dir (what TaskSource checks), for resolution tests."""
    task = root / dir_name
    (task / "environment").mkdir(parents=True)
    (task / "tests").mkdir()
    header = f'[task]\nname = "{task_name}"\n\n' if task_name else ""
    (task / "task.toml").write_text(header + "[agent]\ntimeout_sec = 60.0\n")
    (task / "instruction.md").write_text(f"Solve {dir_name}.\n")
    (task / "environment" / "Dockerfile").write_text("FROM vero/base:bookworm\n")
    (task / "tests" / "test.sh").write_text("#!/bin/bash\necho 1 > /logs/verifier/reward.txt\n")
    return task
