"""Reading Harbor's per-trial `result.json` files from a jobs directory.

The per-trial files are the robust interface (Harbor's stdout is rich tables). A file that
cannot be read or parsed still counts as a trial without rewards, carrying the reason.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from vero.models import describe

RESULT_FILE = "result.json"
CONFIG_FILE = "config.json"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class _Lenient(BaseModel):
    # Harbor's result.json is external data with many fields we do not use; unlike our own
    # boundary models these ignore unknown keys so a newer Harbor still parses.
    model_config = ConfigDict(extra="ignore")


class _TaskPath(_Lenient):
    path: str | None = None


class _TrialTaskConfig(_Lenient):
    task: _TaskPath | None = None


class _VerifierResult(_Lenient):
    rewards: dict[str, float] | None = None


class _ExceptionInfo(_Lenient):
    exception_type: str = "Exception"
    exception_message: str = ""


class _TrialResultFile(_Lenient):
    task_name: str
    trial_name: str
    task_id: _TaskPath | None = None
    config: _TrialTaskConfig | None = None
    verifier_result: _VerifierResult | None = None
    exception_info: _ExceptionInfo | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Trial:
    """One finished Harbor trial (one attempt of one task) as collation sees it."""

    job_name: str
    trial_name: str
    path: str
    task_name: str | None
    task_dir: str | None
    rewards: dict[str, float] | None
    exception_type: str | None
    exception_message: str | None
    started_at: datetime | None
    finished_at: datetime | None
    read_error: str | None = None

    @property
    def scored(self) -> bool:
        """The verifier produced rewards."""
        return bool(self.rewards)

    @property
    def clean(self) -> bool:
        """Scored, with no exception recorded."""
        return self.scored and self.exception_type is None

    @property
    def rank(self) -> int:
        """Best-trial order: clean with rewards (2) > rewards with an exception (1) > no rewards (0)."""
        return 2 if self.clean else 1 if self.scored else 0

    @property
    def finished_key(self) -> datetime:
        """`finished_at` for ordering; an unknown finish sorts first."""
        return self.finished_at or _EPOCH

    @property
    def ref(self) -> str:
        """`<job>/<trial>`: unique within a jobs directory."""
        return f"{self.job_name}/{self.trial_name}"

    def describe_failure(self, with_message: bool = True) -> str:
        """Why this trial has no usable rewards, in one line; the exception's message (harbor's or
        the candidate's words) only `with_message`."""
        if self.read_error:
            return f"trial {self.ref}: {self.read_error}"
        if self.exception_type:
            message = " ".join((self.exception_message or "").split())[:300] if with_message else ""
            return f"trial {self.ref}: {self.exception_type}: {message}" if message else \
                f"trial {self.ref}: {self.exception_type}"
        return f"trial {self.ref}: the verifier produced no rewards"


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=timezone.utc)


def _basename(path: str | None) -> str | None:
    # Plain string work: this runs once per trial, and pathlib is slow at 30,000 trials.
    if not path:
        return None
    return path.rstrip("/").rpartition("/")[2] or None


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _task_dir_from_config(trial_dir: str) -> str | None:
    """The task dir name from the trial's config.json (written when the trial starts)."""
    try:
        config = _TrialTaskConfig.model_validate_json(_read(os.path.join(trial_dir, CONFIG_FILE)))
    except (OSError, ValidationError):
        return None
    return _basename(config.task.path) if config.task else None


def _unreadable(trial_dir: str, job_name: str, reason: str) -> Trial:
    return Trial(job_name=job_name, trial_name=os.path.basename(trial_dir), path=trial_dir, task_name=None,
                 task_dir=_task_dir_from_config(trial_dir), rewards=None, exception_type=None,
                 exception_message=None, started_at=None, finished_at=None,
                 read_error=f"unreadable {RESULT_FILE}: {reason}")


def parse_trial(raw: bytes, trial_dir: str, job_name: str) -> Trial:
    """Parse one trial `result.json`; problems become a `read_error`, never an exception."""
    try:
        data = _TrialResultFile.model_validate_json(raw)
    except ValidationError as exc:
        return _unreadable(trial_dir, job_name, describe(exc))
    rewards = data.verifier_result.rewards if data.verifier_result else None
    if rewards is not None and not all(math.isfinite(value) for value in rewards.values()):
        return _unreadable(trial_dir, job_name, "a reward is not a finite number")
    task_path = (data.task_id.path if data.task_id else None) or (
        data.config.task.path if data.config and data.config.task else None)
    exc_info = data.exception_info
    return Trial(job_name=job_name, trial_name=data.trial_name, path=trial_dir, task_name=data.task_name,
                 task_dir=_basename(task_path), rewards=dict(rewards) if rewards else None,
                 exception_type=exc_info.exception_type if exc_info else None,
                 exception_message=exc_info.exception_message if exc_info else None,
                 started_at=_aware(data.started_at), finished_at=_aware(data.finished_at))


def read_trial(trial_dir: str | Path, job_name: str) -> Trial | None:
    """The trial in `trial_dir`, or None while it has no result.json (not finished)."""
    trial_dir = os.fspath(trial_dir)
    try:
        raw = _read(os.path.join(trial_dir, RESULT_FILE))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unreadable(trial_dir, job_name, exc.strerror or str(exc))
    return parse_trial(raw, trial_dir, job_name)


def is_job_dir(path: Path) -> bool:
    """A Harbor job directory has its own config.json next to the trial dirs."""
    return (path / CONFIG_FILE).is_file() and not (path.parent / CONFIG_FILE).is_file()


def job_dirs(path: Path) -> list[Path]:
    """`path` itself when it is one job dir, else every job dir directly inside it (sorted)."""
    path = Path(path)
    if is_job_dir(path):
        return [path]
    if not path.is_dir():
        return []
    return sorted(child for child in path.iterdir() if child.is_dir() and (child / CONFIG_FILE).is_file())


def trial_dirs(job_dir: str | Path) -> Iterator[str]:
    """The subdirectories of one job (its trials), sorted by name."""
    with os.scandir(job_dir) as entries:
        names = sorted(entry.path for entry in entries if entry.is_dir())
    yield from names


def read_job(job_dir: Path) -> tuple[list[Trial], int]:
    """Every finished trial of one job, and how many trials started but have not finished."""
    finished: list[Trial] = []
    unfinished = 0
    for trial_dir in trial_dirs(job_dir):
        trial = read_trial(trial_dir, job_dir.name)
        if trial is not None:
            finished.append(trial)
        elif os.path.exists(os.path.join(trial_dir, CONFIG_FILE)):
            unfinished += 1
    return finished, unfinished


def read_jobs(path: Path) -> list[Trial]:
    """Every finished trial under a job dir or a jobs dir."""
    return [trial for job in job_dirs(path) for trial in read_job(job)[0]]
