"""Bench: Mode B collation of a large synthetic Harbor jobs dir, against the I/O + JSON floor.

Synthesizes a jobs dir of N tasks x K attempts (default 10,000 x 3 = 30,000 trial dirs, each
with Harbor-shaped config.json and result.json; some trials raise, lack rewards or are
corrupt), then times, in the same run and on the same warm files:
  floor:     glob every trial result.json, read it and json.loads it (a minimal loop);
  collation: vero's read_jobs() + collate() for all N tasks (what the runner does).
and prints collation / floor. Run: ./pants run bench/collate.py -- [--tasks N] [--attempts K]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.results import record
from vero.modeb.collate import RunNote, collate
from vero.modeb.config import CollationSettings
from vero.modeb.task_source import TaskRef
from vero.modeb.trials import read_jobs


def _trial(task: str, trial_name: str, job: Path, index: int, attempt: int) -> dict[str, Any]:
    # The shape of a real Harbor 0.24 trial result.json (see tests/modeb/data/trial-result.json).
    kind = (index * 7 + attempt) % 10
    rewards = None if kind == 9 else {"reward": float((index + attempt) % 2), "close": 1.0}
    exception = None if kind < 8 else {
        "exception_type": "AgentTimeoutError" if kind == 8 else "RewardFileNotFoundError",
        "exception_message": "synthetic", "exception_traceback": "Traceback ...", "occurred_at":
        "2026-01-01T12:00:59.000000Z"}
    task_path = f"/bench/tasks/{task}"
    return {
        "id": f"00000000-0000-0000-0000-{index:06d}{attempt:06d}", "task_name": f"bench/{task}",
        "trial_name": trial_name, "trial_uri": f"file://{job / trial_name}", "task_id": {"path": task_path},
        "source": "tasks", "task_checksum": "ab" * 32,
        "config": {"task": {"path": task_path, "git_url": None, "git_commit_id": None, "name": None,
                            "ref": None, "overwrite": False, "download_dir": None, "source": "tasks"},
                   "trial_name": trial_name, "trials_dir": str(job), "timeout_multiplier": 1.0,
                   "agent": {"name": "rule_agent.agent:RuleAgent", "import_path": None, "model_name": None,
                             "kwargs": {}, "env": {}},
                   "environment": {"type": "docker", "force_build": False, "delete": True, "kwargs": {}},
                   "verifier": {"override_timeout_sec": None, "max_timeout_sec": None, "disable": False},
                   "job_id": "11111111-1111-1111-1111-111111111111"},
        "agent_info": {"name": "rule-agent", "version": "1.0.0", "model_info": None},
        "agent_result": {"n_input_tokens": None, "n_cache_tokens": None, "n_output_tokens": None,
                         "cost_usd": None, "model_usage": None, "rollout_details": None,
                         "metadata": {"skill": "x"}},
        "verifier_result": None if rewards is None else {"rewards": rewards},
        "verifier_environment_mode": "shared", "exception_info": exception,
        "started_at": "2026-01-01T12:00:00.000000Z", "finished_at": f"2026-01-01T12:0{attempt}:30.000000Z",
        "environment_setup": {"started_at": "2026-01-01T12:00:00.000000Z",
                              "finished_at": "2026-01-01T12:00:05.000000Z"},
        "agent_setup": None, "agent_execution": None, "verifier": None, "step_results": None,
    }


def synthesize(jobs_dir: Path, n_tasks: int, n_attempts: int) -> list[TaskRef]:
    """Write one job with `n_tasks` x `n_attempts` trials; every 997th result.json is truncated."""
    job = jobs_dir / "vero-bench-job"
    job.mkdir(parents=True)
    (job / "config.json").write_text(json.dumps({"job_name": job.name, "jobs_dir": str(jobs_dir)}))
    refs = []
    for index in range(n_tasks):
        task = f"task-{index:05d}"
        refs.append(TaskRef(sample_id=task, dir_name=task, task_name=f"bench/{task}"))
        for attempt in range(n_attempts):
            trial_name = f"{task}__a{attempt}{index:05d}"
            trial_dir = job / trial_name
            trial_dir.mkdir()
            data = _trial(task, trial_name, job, index, attempt)
            (trial_dir / "config.json").write_text(json.dumps(data["config"], indent=4))
            text = json.dumps(data, indent=4)
            if (index * n_attempts + attempt) % 997 == 0:
                text = text[: len(text) // 2]
            (trial_dir / "result.json").write_text(text)
    return refs


def floor(jobs_dir: Path) -> int:
    """The minimal loop: find, read and parse every trial result.json."""
    parsed = 0
    for path in sorted(jobs_dir.glob("*/*/result.json")):
        with contextlib.suppress(ValueError):   # the truncated files
            json.loads(path.read_bytes())
        parsed += 1
    return parsed


def collation(jobs_dir: Path, refs: list[TaskRef]) -> int:
    """What the runner does after harbor exits: read every trial, collate every task."""
    settings = CollationSettings(aggregate_attempts="mean")
    results = collate(refs, read_jobs(jobs_dir), settings, split="bench", commit="0" * 40,
                      note=RunNote(job="vero-bench-job"), fallback_start=0.0, where="bench")
    return len(results)


def interleaved(repeat: int, first: Callable[[], int], second: Callable[[], int]) -> tuple[float, float]:
    """Fastest of `repeat` timings of each, alternating them so machine noise hits both alike."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for slot, func in enumerate((first, second)):
            started = time.perf_counter()
            func()
            best[slot] = min(best[slot], time.perf_counter() - started)
    return best[0], best[1]


def main() -> None:
    """Synthesize, warm up, time both loops, print the ratio."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--attempts", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="vero-bench-collate-"))
    try:
        jobs_dir = workdir / "jobs"
        started = time.perf_counter()
        refs = synthesize(jobs_dir, args.tasks, args.attempts)
        took = time.perf_counter() - started
        print(f"synthesized {args.tasks} tasks x {args.attempts} attempts in {took:.1f}s")
        # One untimed pass of each warms the page cache: both then read from memory.
        n_files, n_samples = floor(jobs_dir), collation(jobs_dir, refs)
        floor_s, collate_s = interleaved(args.repeat, lambda: floor(jobs_dir),
                                         lambda: collation(jobs_dir, refs))
        best = f"(best of {args.repeat})"
        print(f"floor (glob + read + json.loads): {n_files} files in {floor_s:.3f}s {best}")
        print(f"collation (read_jobs + collate):  {n_samples} samples in {collate_s:.3f}s {best}")
        print(f"ratio collation/floor: {collate_s / floor_s:.2f}")
        record("collate", f"collation vs read+parse floor, {args.tasks} tasks x {args.attempts} attempts",
               collate_s / floor_s, f"{collate_s:.2f} vs {floor_s:.2f} s")
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
