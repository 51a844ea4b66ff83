"""A record of every `harbor run` the strategy starts, kept beside its job directory.

`<jobs dir>/<job name>.run.json` is written before harbor starts and rewritten when it
ends, so the stderr tail stays with the results and a run whose owner died (a killed
runner or sidecar) is found and stopped before the next evaluation starts.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field, ValidationError

from vero.fsutil import atomic_write_model
from vero.modeb.process import ProcessOutcome, group_alive, stop_group
from vero.models import StrictModel

RUN_SUFFIX = ".run.json"


class HarborRunRecord(StrictModel):
    """One harbor invocation: its argv and pid while running, how it ended afterwards."""

    job_name: str
    argv: list[str]
    pid: int | None = None
    started_at: float
    finished: bool = False
    exit_code: int | None = None
    timed_out: bool = False
    interrupted: bool = False
    orphaned: bool = Field(default=False, description="its owner died; stopped by a later evaluation")
    stderr_tail: str = ""
    duration_s: float | None = None

    def ended(self, outcome: ProcessOutcome) -> HarborRunRecord:
        """This record completed with a process outcome."""
        return self.model_copy(update={
            "finished": True, "exit_code": outcome.exit_code, "timed_out": outcome.timed_out,
            "interrupted": outcome.interrupted, "stderr_tail": outcome.stderr_tail,
            "duration_s": outcome.duration_s})


def record_path(jobs_dir: Path, job_name: str) -> Path:
    """Where the record of `job_name` lives."""
    return Path(jobs_dir) / f"{job_name}{RUN_SUFFIX}"


def save(jobs_dir: Path, record: HarborRunRecord) -> None:
    """Write a record atomically."""
    atomic_write_model(record_path(jobs_dir, record.job_name), record)


def load_all(jobs_dir: Path) -> list[HarborRunRecord]:
    """Every readable record in `jobs_dir`, oldest first (unreadable ones are skipped)."""
    records = []
    for path in sorted(Path(jobs_dir).glob(f"*{RUN_SUFFIX}")):
        try:
            records.append(HarborRunRecord.model_validate_json(path.read_bytes()))
        except (OSError, ValidationError):
            continue
    return sorted(records, key=lambda r: r.started_at)


def _is_that_run(pid: int, job_name: str) -> bool:
    # A recycled pid must not be killed: the process must still carry our unique job name.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return job_name.encode() in cmdline


def reap_orphans(jobs_dir: Path, grace: float) -> list[str]:
    """Stop harbor runs left running by a dead owner; returns their job names.

    Their finished trials stay on disk and are salvaged like any other.
    """
    stopped = []
    for record in load_all(jobs_dir):
        if record.finished or record.pid is None:
            continue
        if group_alive(record.pid) and _is_that_run(record.pid, record.job_name):
            stop_group(record.pid, grace)
            stopped.append(record.job_name)
        save(jobs_dir, record.model_copy(update={"finished": True, "orphaned": True,
                                                 "duration_s": time.time() - record.started_at}))
    return stopped
