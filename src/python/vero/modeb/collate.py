"""Turning Harbor trials into one sample result per task (SPEC §6).

- best trial per task, deterministic: clean with rewards > rewards with an exception > no
  rewards; then the latest finish (then trial name, so ties never depend on file order);
- `aggregate_attempts="mean"` averages every scored attempt and flags a mean over fewer scored
  attempts than `n_attempts`; `n_attempts`, `n_scored`, `n_clean` and every scored attempt's
  score (`attempt_scores`) are always recorded;
- reward: `reward_key` when the trial has it, else `pass`, else `reward`, else the mean of all;
- a task without trials or without rewards is an error sample naming the task;
- trials ran but none matched a requested task: refuse, naming requested vs recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import JsonValue

from vero.core.incidents import new_error_id
from vero.core.records import AttemptCounts, SampleResult
from vero.errors import VeroError
from vero.modeb.config import CollationSettings
from vero.modeb.task_source import TaskRef
from vero.modeb.trials import Trial

log = logging.getLogger(__name__)

PASS_SCORE = 1.0   # a sample "passes" with full reward, as in Harbor's pass@k


def reward_of(rewards: dict[str, float], reward_key: str | None) -> float:
    """The score of one trial's rewards: reward_key, else `pass`, else `reward`, else the mean."""
    for key in (reward_key, "pass", "reward"):
        if key is not None and key in rewards:
            return float(rewards[key])
    return sum(rewards.values()) / len(rewards)


def best_trial(trials: Sequence[Trial]) -> Trial:
    """The deterministic best of a non-empty list of trials of one task."""
    return max(trials, key=lambda t: (t.rank, t.finished_key, t.trial_name, t.job_name, str(t.path)))


@dataclass
class TaskTrials:
    """A requested task and the trials matched to it."""

    ref: TaskRef
    trials: list[Trial] = field(default_factory=list)


@dataclass(frozen=True)
class Matching:
    """Trials grouped by requested task, plus the ones that matched nothing."""

    by_task: list[TaskTrials]
    unmatched: list[Trial]


def _trial_prefix(dir_name: str) -> str:
    # Harbor names a trial `<dir name[:32] minus trailing _ and ->__<7 chars>`.
    return dir_name[:32].rstrip("_-") + "__"


def _index(keys: Iterable[tuple[str, int]]) -> dict[str, set[int]]:
    """key -> the set of requested tasks it names (a set: one task may give the same key twice,
    e.g. a registry task whose sample id is its task name)."""
    index: dict[str, set[int]] = {}
    for key, position in keys:
        index.setdefault(key, set()).add(position)
    return index


def _only(positions: set[int] | None) -> int | None:
    return next(iter(positions)) if positions is not None and len(positions) == 1 else None


def match_trials(refs: Sequence[TaskRef], trials: Iterable[Trial]) -> Matching:
    """Assign trials to requested tasks by directory name first, then by recorded task name.

    A trial whose result.json was unreadable is matched through its config.json or, failing
    that, its trial-dir prefix when exactly one requested task has that prefix. A name that
    several requested tasks share matches none of them. Each task's trials are sorted by
    job, trial and path, so the result never depends on the order the files were read in.
    """
    groups = [TaskTrials(ref) for ref in refs]
    by_dir = _index((ref.dir_name, i) for i, ref in enumerate(refs) if ref.dir_name)
    by_name = _index((name, i) for i, ref in enumerate(refs) for name in (ref.task_name, ref.sample_id))
    by_prefix = _index([*((_trial_prefix(ref.dir_name), i) for i, ref in enumerate(refs) if ref.dir_name),
                        *((_trial_prefix(ref.task_name.rsplit("/", 1)[-1]), i) for i, ref in enumerate(refs))])
    unmatched: list[Trial] = []
    for trial in trials:
        target: int | None = None
        if trial.task_dir and trial.task_dir in by_dir:
            target = _only(by_dir[trial.task_dir])
        elif trial.task_name is not None:
            target = _only(by_dir.get(trial.task_name))
            if target is None:
                target = _only(by_name.get(trial.task_name))
            if target is None and trial.task_dir:
                target = _only(by_name.get(trial.task_dir))
        elif trial.read_error is not None:
            target = _only(by_prefix.get(trial.trial_name.rsplit("__", 1)[0] + "__"))
        if target is None:
            unmatched.append(trial)
        else:
            groups[target].trials.append(trial)
    for group in groups:
        group.trials.sort(key=lambda t: (t.job_name, t.trial_name, t.path))
    unmatched.sort(key=lambda t: (t.job_name, t.trial_name, t.path))
    return Matching(by_task=groups, unmatched=unmatched)


def refuse_if_nothing_matched(matching: Matching, *, where: str) -> None:
    """Trials ran but none belongs to a requested task: the partition and the run disagree."""
    if matching.unmatched and not any(group.trials for group in matching.by_task):
        requested = sorted(g.ref.sample_id for g in matching.by_task)
        recorded = sorted({t.task_name or t.task_dir or t.trial_name for t in matching.unmatched})
        raise VeroError(
            f"none of the {len(matching.unmatched)} recorded trial(s) matches a requested task; "
            f"requested {requested[:10]}{' ...' if len(requested) > 10 else ''}, "
            f"recorded {recorded[:10]}{' ...' if len(recorded) > 10 else ''}",
            where=where,
            fix="check that the partition, the task source and the jobs directory belong together")


@dataclass(frozen=True)
class RunNote:
    """What is known about the harbor run that produced (or failed to produce) the trials."""

    job: str
    exit_code: int | None = None
    timed_out: bool = False
    stderr_tail: str = ""

    def explain(self) -> str:
        """A suffix for the error of a task that has no trial (no word of harbor's own output)."""
        parts = [f"no trial recorded in job {self.job}"]
        if self.timed_out:
            parts.append("harbor timed out")
        if self.exit_code not in (None, 0):
            parts.append(f"harbor exited with {self.exit_code}")
        return "; ".join(parts)

    def detail(self) -> str | None:
        """Harbor's stderr tail when it failed or timed out: for the admin, never the optimizer."""
        failed = self.timed_out or self.exit_code not in (None, 0)
        if not failed or not self.stderr_tail.strip():
            return None
        return f"harbor's stderr ends with:\n{self.stderr_tail[-2000:]}"


def _span(trials: Sequence[Trial], fallback_start: float) -> tuple[float, float]:
    starts = [t.started_at for t in trials if t.started_at is not None]
    ends = [t.finished_at for t in trials if t.finished_at is not None]
    if not starts:
        return fallback_start, 0.0
    start: datetime = min(starts)
    end = max(ends) if ends else start
    return start.timestamp(), max(0.0, (end - start).total_seconds())


def collate_task(group: TaskTrials, settings: CollationSettings, *, split: str, commit: str,
                 note: RunNote, fallback_start: float) -> SampleResult:
    """One SampleResult for one task from its trials, following SPEC §6."""
    ref, trials = group.ref, group.trials
    scored = [t for t in trials if t.scored]
    counts = AttemptCounts(n_attempts=len(trials), n_scored=len(scored),
                           n_clean=sum(1 for t in trials if t.clean))
    started_at, duration = _span(trials, fallback_start)

    attempt_scores = [reward_of(t.rewards or {}, settings.reward_key) for t in scored] if trials else None

    def result(*, score: float | None = None, metrics: dict[str, float] | None = None,
               output: dict[str, JsonValue] | None = None, error: str | None = None,
               error_detail: str | None = None, warning: str | None = None) -> SampleResult:
        if error is not None:
            error = f"{error} (error id {new_error_id()})"
        return SampleResult(sample_id=ref.sample_id, split=split, commit=commit, task_name=ref.task_name,
                            attempts=counts, started_at=started_at, duration_s=duration, score=score,
                            metrics=metrics or {}, output=output, error=error, error_detail=error_detail,
                            attempt_scores=attempt_scores, warning=warning)

    if not trials:
        # What harbor printed may name other tasks and host paths: it is the sample's detail only.
        run: dict[str, JsonValue] = {"job": note.job, "exit_code": note.exit_code, "timed_out": note.timed_out}
        return result(output=run, error=f"task {ref.label}: {note.explain()}", error_detail=note.detail())
    best = best_trial(trials)
    trial_refs: list[JsonValue] = [ref for ref in sorted(t.ref for t in trials)]
    output: dict[str, JsonValue] = {"best_trial": best.ref, "trials": trial_refs,
                                    "exception": best.exception_type}
    if not scored:
        last = max(trials, key=lambda t: (t.finished_key, t.trial_name, t.job_name))
        why = "; harbor timed out" if note.timed_out else ""
        return result(output=output, error=f"task {ref.label}: none of {len(trials)} trial(s) produced "
                                           f"rewards; last {last.describe_failure(with_message=False)}{why}",
                      error_detail=last.describe_failure())
    if settings.aggregate_attempts == "best":
        rewards = best.rewards or {}
        return result(score=reward_of(rewards, settings.reward_key), metrics=dict(sorted(rewards.items())),
                      output=output)
    values: dict[str, list[float]] = {}
    for trial in scored:
        for key, value in (trial.rewards or {}).items():
            values.setdefault(key, []).append(value)
    score = sum(attempt_scores or []) / len(scored)
    metrics = {key: sum(vals) / len(vals) for key, vals in sorted(values.items())}
    warning = None
    if len(scored) < settings.n_attempts:
        # A mean over fewer attempts is noisier and not comparable with the other tasks' means.
        warning = (f"mean over {len(scored)} scored attempt(s) of the {settings.n_attempts} configured "
                   f"({len(trials)} finished)")
        log.warning("task %s: %s", ref.label, warning)
    return result(score=score, metrics=metrics, output=output, warning=warning)


def collate(refs: Sequence[TaskRef], trials: Iterable[Trial], settings: CollationSettings, *, split: str,
            commit: str, note: RunNote, fallback_start: float, where: str,
            refuse: bool = True) -> list[SampleResult]:
    """One SampleResult per requested task, in request order.

    With `refuse`, trials that all miss the requested tasks are a VeroError (SPEC §6); the
    strategy turns it off when it looks for finished tasks among earlier jobs.
    """
    matching = match_trials(refs, trials)
    if refuse:
        refuse_if_nothing_matched(matching, where=where)
    return [collate_task(group, settings, split=split, commit=commit, note=note,
                         fallback_start=fallback_start)
            for group in matching.by_task]
