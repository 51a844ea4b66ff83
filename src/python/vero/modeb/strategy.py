"""The Mode B evaluation strategy: one nested `harbor run` per evaluation, then collation.

Per evaluation (SPEC §6): skip samples already finished cleanly in the store (an error sample
is re-run), stop harbor runs a dead owner left behind and adopt the tasks they finished, run
ONE `harbor run` for the rest, collate its trials and persist every result. A run that wrote no
trial at all (Docker unreachable, harbor failing at start, a timeout before the first trial)
scored nothing: it raises `InfrastructureFailure` and persists nothing.

With an `Isolation`, harbor runs `vero.modeb.isolation.agent_shim:IsolatedAgent` and the candidate's
agent runs in its own unprivileged process (see `vero.modeb.isolation.spec`); without one (the runner,
a developer's machine) harbor imports the candidate's agent into its own process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import JsonValue

from vero.core.datasets import Partition
from vero.core.records import SampleResult
from vero.core.sample_store import SampleStore
from vero.core.strategy import (
    Evaluation,
    EvaluationCancelled,
    EvaluationContext,
    InfrastructureFailure,
    Progress,
    StrategyEnv,
)
from vero.errors import VeroError
from vero.modeb import docker_access, harbor_command, runs
from vero.modeb.collate import PASS_SCORE, RunNote, best_trial, collate, match_trials, reward_of
from vero.modeb.config import CollationSettings, HarborConfig
from vero.modeb.isolation.spec import ISOLATED_AGENT, Isolation
from vero.modeb.process import ProcessOutcome, run_group
from vero.modeb.task_source import TaskRef, TaskSource
from vero.modeb.trials import Trial, job_dirs, read_job, read_trial, trial_dirs

log = logging.getLogger(__name__)

JOBS_SUBDIR = ".harbor-jobs"
# Per-store jobs dirs under a shared `jobs_root`: `<commit12>-<sha256(store dir)[:16]>`.
_STORE_JOBS = re.compile(r"^[0-9a-f]{12}-[0-9a-f]{16}$")


@dataclass(frozen=True)
class EvaluationReport:
    """What one `evaluate` did, for callers that display it (the runner CLI): the harbor job it ran
    (None when every task already had a result) and how that ended, the tasks adopted from earlier
    jobs, and the harbor runs of a dead owner it stopped."""

    job_name: str | None
    outcome: ProcessOutcome | None
    adopted: tuple[str, ...]
    reaped: tuple[str, ...]


@dataclass(frozen=True)
class HarborEvaluation(Evaluation):
    """A Mode B evaluation's results and the report of its own run."""

    report: EvaluationReport


class HarborInterrupted(KeyboardInterrupt):
    """The evaluation was interrupted; finished tasks were collated and persisted first."""


def _passes(result: SampleResult | None) -> bool:
    return result is not None and result.ok and (result.score or 0.0) >= PASS_SCORE


class _ProgressWatcher:
    """Counts finished tasks of the running job from trial result.json files (each read once)."""

    def __init__(self, job_dir: Path, refs: Sequence[TaskRef], settings: CollationSettings,
                 n_attempts: int, base: Progress) -> None:
        self.job_dir = job_dir
        self.refs = refs
        self.settings = settings
        self.n_attempts = n_attempts
        self.base = base
        self._seen: dict[str, Trial] = {}

    def snapshot(self) -> Progress:
        if self.job_dir.is_dir():
            for trial_dir in trial_dirs(self.job_dir):
                if trial_dir not in self._seen:
                    trial = read_trial(trial_dir, self.job_dir.name)
                    # Harbor writes result.json in place: a half-written one is read again next poll.
                    if trial is not None and trial.read_error is None:
                        self._seen[trial_dir] = trial
        done = passing = 0
        for group in match_trials(self.refs, self._seen.values()).by_task:
            if len(group.trials) >= self.n_attempts:
                done += 1
                best = best_trial(group.trials)
                if best.rewards:
                    passing += reward_of(best.rewards, self.settings.reward_key) >= PASS_SCORE
        return Progress(total=self.base.total, done=self.base.done + done,
                        passing=self.base.passing + passing)


class ModeBStrategy:
    """Scores a candidate's Harbor agent on the partition's tasks with a nested `harbor run`.

    Sample ids are the partition's task names as written. Harbor's job directories go to
    `jobs_dir` when given; else, with `jobs_root`, to a subdirectory of it per sample store
    (so evaluations of different commits never adopt each other's trials); else inside the
    sample store (`<store>/.harbor-jobs`). `env` is the base environment of harbor (default:
    this process's). `isolation` runs candidate code outside harbor's process.
    `clean_jobs_on_close` removes the per-store dirs under `jobs_root` in `close()`.
    """

    def __init__(self, config: HarborConfig, partition: Mapping[str, Sequence[str]], *, base_dir: Path,
                 jobs_dir: Path | None = None, jobs_root: Path | None = None,
                 env: Mapping[str, str] | None = None, isolation: Isolation | None = None,
                 clean_jobs_on_close: bool = False, poll_interval: float = 1.0) -> None:
        if jobs_dir is not None and jobs_root is not None:
            raise ValueError("pass jobs_dir or jobs_root, not both")
        program = config.harbor_command[0]
        if "/" in program and not Path(program).is_absolute():
            # harbor runs in the jobs dir: a relative program path is relative to the config's dir.
            config = config.model_copy(update={"harbor_command": [str(Path(base_dir).absolute() / program),
                                                                  *config.harbor_command[1:]]})
        self.config = config
        self.settings = CollationSettings.of(config)
        self.source = TaskSource.open(config.task_source, base_dir, config.registry_path)
        # Resolve every name up front: a typo fails before anything runs.
        self._refs: dict[str, dict[str, TaskRef]] = {}
        for split, names in partition.items():
            resolved = self.source.resolve(list(names), where=f"partition.{split}")
            self._refs[split] = {ref.sample_id: ref for ref in resolved}
        self.jobs_dir = jobs_dir
        self.jobs_root = jobs_root
        self.env = env
        self.isolation = isolation
        self.clean_jobs_on_close = clean_jobs_on_close
        self.poll_interval = poll_interval
        self._stopping = threading.Event()
        self._active = 0
        self._idle = threading.Condition()

    def stop(self) -> None:
        """Stop every running harbor (SIGTERM to its group, SIGKILL after `kill_grace`) and start no
        new one; evaluations in flight persist what finished and raise EvaluationCancelled.
        Only sets a flag, so it is safe in a signal handler."""
        self._stopping.set()

    def close(self, wait: float | None = None) -> None:
        """Stop, wait for running evaluations (at most `kill_grace` + 60 s), remove the isolation
        shim and, with `clean_jobs_on_close`, the per-store jobs dirs under `jobs_root`."""
        self.stop()
        deadline = time.monotonic() + (self.config.kill_grace + 60.0 if wait is None else wait)
        with self._idle:
            while self._active and time.monotonic() < deadline:
                self._idle.wait(timeout=max(0.0, deadline - time.monotonic()))
            busy = self._active
        if self.isolation is not None:
            self.isolation.close()
        if self.clean_jobs_on_close and self.jobs_root is not None and not busy:
            for entry in sorted(self.jobs_root.iterdir()):
                if _STORE_JOBS.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)

    def jobs_dir_for(self, context: EvaluationContext) -> Path:
        """Where the job directories of `context`'s evaluation go (see the class docstring)."""
        if self.jobs_dir is not None:
            return self.jobs_dir
        if self.jobs_root is not None:
            digest = hashlib.sha256(str(context.store.directory.absolute()).encode()).hexdigest()[:16]
            return self.jobs_root / f"{context.commit[:12]}-{digest}"
        return context.store.directory / JOBS_SUBDIR

    def refs_for(self, split: str, sample_ids: Sequence[str]) -> list[TaskRef]:
        """The resolved tasks of `sample_ids` in `split`; unknown ids are one VeroError."""
        if split not in self._refs:
            splits = ", ".join(sorted(self._refs))
            raise VeroError(f"split {split!r} is not in the partition (splits: {splits})", where="split",
                            fix="choose a split of the partition")
        known = self._refs[split]
        repeated = sorted({sample_id for sample_id in sample_ids if list(sample_ids).count(sample_id) > 1})
        if repeated:
            raise VeroError(f"sample ids requested more than once: {', '.join(map(repr, repeated))}",
                            where="sample_ids", fix="request each task once")
        unknown = [sample_id for sample_id in sample_ids if sample_id not in known]
        if unknown:
            raise VeroError(f"not tasks of split {split!r}: {', '.join(repr(u) for u in unknown)}",
                            where="sample_ids", fix="use task names as written in the partition")
        return [known[sample_id] for sample_id in sample_ids]

    def agent_inputs(self, split: str, sample_ids: Sequence[str]) -> dict[str, JsonValue] | None:
        """None: a sample is a whole Harbor task, with no input row to show."""
        return None

    def evaluate(self, context: EvaluationContext) -> HarborEvaluation:
        """Run and score every pending sample of `context`, resuming from its store."""
        with self._idle:
            self._active += 1
        try:
            return self._evaluate(context)
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def _evaluate(self, context: EvaluationContext) -> HarborEvaluation:
        refs = self.refs_for(context.split, list(context.sample_ids))
        if self._stopping.is_set():
            raise _cancelled()
        store = context.store
        jobs_dir = self.jobs_dir_for(context)
        jobs_dir.mkdir(parents=True, exist_ok=True)
        done_ids = store.done_ids([ref.sample_id for ref in refs])
        pending = [ref for ref in refs if ref.sample_id not in done_ids]
        reaped: tuple[str, ...] = ()
        adopted: set[str] = set()
        if pending:
            reaped = tuple(runs.reap_orphans(jobs_dir, self.config.kill_grace))
            adopted = self._adopt_finished(context, pending, jobs_dir)
            pending = [ref for ref in pending if ref.sample_id not in adopted]
        finished = [store.get(ref.sample_id) for ref in refs if ref not in pending]
        base = Progress(total=len(refs), done=len(finished), passing=sum(map(_passes, finished)))
        if context.progress is not None:
            context.progress(base)
        job_name: str | None = None
        outcome: ProcessOutcome | None = None
        if pending:
            job_name, outcome = self._run_pending(context, pending, jobs_dir, base)
        if outcome is not None and outcome.interrupted and self._stopping.is_set():
            raise _cancelled()
        results = self._stored(store, refs)
        if outcome is not None and outcome.interrupted:
            raise HarborInterrupted()
        return HarborEvaluation(samples=results, report=EvaluationReport(
            job_name=job_name, outcome=outcome, adopted=tuple(sorted(adopted)), reaped=reaped))

    @staticmethod
    def _stored(store: SampleStore, refs: Iterable[TaskRef]) -> list[SampleResult]:
        results = []
        for ref in refs:
            result = store.get(ref.sample_id)
            if result is None:
                raise VeroError(f"no result was persisted for {ref.label}", where=str(store.directory),
                                fix="run the evaluation again")
            results.append(result)
        return results

    def _adopt_finished(self, context: EvaluationContext, pending: Sequence[TaskRef],
                        jobs_dir: Path) -> set[str]:
        """Persist tasks that earlier jobs of this store already finished cleanly (their owner died
        before persisting them), so no task that succeeded runs twice."""
        trials = [trial for job in job_dirs(jobs_dir) for trial in read_job(job)[0]]
        if not trials:
            return set()
        results = collate(pending, trials, self.settings, split=context.split, commit=context.commit,
                          note=RunNote(job="(earlier jobs)"), fallback_start=time.time(), where=str(jobs_dir),
                          refuse=False)
        adopted = set()
        for result in results:
            enough = result.attempts is not None and result.attempts.n_scored >= self.config.n_attempts
            if result.ok and (self.settings.aggregate_attempts == "best" or enough):
                context.store.put(result)
                adopted.add(result.sample_id)
        return adopted

    def _run_pending(self, context: EvaluationContext, pending: Sequence[TaskRef], jobs_dir: Path,
                     base: Progress) -> tuple[str, ProcessOutcome]:
        env = harbor_command.harbor_env(context.worktree, self.env)
        agent = self.config.agent
        if self.isolation is not None:
            # The worktree leaves harbor's path: only the isolated process imports candidate code.
            env = self.isolation.harbor_env(self.config.agent, context.worktree, env)
            agent = ISOLATED_AGENT
        harbor_command.preflight(self.config, env)
        job_name = harbor_command.new_job_name(context.split, context.commit)
        argv = harbor_command.harbor_argv(self.config, self.source, pending, jobs_dir=jobs_dir, job_name=job_name,
                                      agent=agent)
        record = runs.HarborRunRecord(job_name=job_name, argv=argv, started_at=time.time())
        watcher = _ProgressWatcher(jobs_dir / job_name, pending, self.settings, self.config.n_attempts, base)
        shown = [base]

        def poll() -> None:
            if context.progress is not None:
                snapshot = watcher.snapshot()
                if snapshot != shown[0]:
                    shown[0] = snapshot
                    context.progress(snapshot)

        def started(pid: int) -> None:
            # Recorded as soon as it runs: a later evaluation stops it if this process dies.
            runs.save(jobs_dir, record.model_copy(update={"pid": pid}))

        outcome = run_group(argv, env=env, cwd=jobs_dir, timeout=self.config.timeout,
                            kill_grace=self.config.kill_grace, log_path=jobs_dir / f"{job_name}.log",
                            on_start=started, poll=poll, poll_interval=self.poll_interval,
                            should_stop=self._stopping.is_set)
        runs.save(jobs_dir, record.ended(outcome))
        state = "timed out" if outcome.timed_out else f"exited with {outcome.exit_code}"
        if self.clean_jobs_on_close and outcome.failed:
            # The run record goes with the nested jobs dir when the sidecar stops: the log keeps it.
            log.warning("harbor job %s %s; its stderr ends with:\n%s", job_name, state, outcome.stderr_end())
        job_dir = jobs_dir / job_name
        trials = read_job(job_dir)[0] if job_dir.is_dir() else []
        if not trials and not outcome.interrupted:
            # Nothing ran, so nothing about the candidate is known: not a score of 0 for every task.
            raise InfrastructureFailure(
                f"the nested harbor run produced no trial (harbor {state}); nothing was scored",
                detail=outcome.stderr_end(), where=f"harbor job {job_name}",
                fix="retry; if it keeps failing, check that harbor and its environment (the Docker "
                    "engine for -e docker) work")
        note = RunNote(job=job_name, exit_code=outcome.exit_code, timed_out=outcome.timed_out,
                       stderr_tail=outcome.stderr_tail)
        results = collate(pending, trials, self.settings, split=context.split, commit=context.commit,
                          note=note, fallback_start=record.started_at, where=str(job_dir))
        for result in results:
            context.store.put(result)
        return job_name, outcome


def _cancelled() -> EvaluationCancelled:
    return EvaluationCancelled("the sidecar is shutting down; the nested harbor run was stopped",
                               fix="evaluate again after the restart (finished tasks are kept)")


class ModeBSection(Protocol):
    """serve.json's `mode_b` section, as far as the strategy reads it (the partition comes
    validated, as the sidecar's catalog)."""

    @property
    def harbor(self) -> HarborConfig: ...


def build_strategy(section: ModeBSection, partition: Partition, env: StrategyEnv) -> ModeBStrategy:
    """The eval sidecar's Mode B strategy.

    Harbor's jobs go under the nested jobs dir (`vero.modeb.docker_access`), one subdirectory per
    evaluation, removed when the sidecar shuts down. With a harness user, candidate agents run
    isolated as that user (and the Docker socket must be closed to it); the declared secrets
    reach harbor and the candidate's process. Without one (development outside a container),
    harbor imports the candidate's agent itself.
    """
    harbor = section.harbor
    if harbor.timeout is None and env.evaluation_timeout is not None:
        harbor = harbor.model_copy(update={"timeout": env.evaluation_timeout})
    jobs_root = docker_access.nested_jobs_dir(os.environ, env.admin_dir / "harbor-jobs")
    isolation = None
    user = env.confinement.user
    if user is not None:
        if harbor.environment == "docker":
            docker_access.check_socket_closed_to(user, docker_access.docker_socket(os.environ))
        isolation = Isolation(confinement=env.confinement, scratch_root=env.work_dir,
                              forward_env=list(env.secret_env))
    else:
        log.warning("no harness user: harbor imports candidate agents into its own process")
    return ModeBStrategy(harbor, partition.splits, base_dir=Path("/"), jobs_root=jobs_root,
                         env={**os.environ, **env.secret_env}, isolation=isolation, clean_jobs_on_close=True)
