"""What `vero report` says about a session, a trial or a whole jobs dir, as data (`--json` prints
these models; the terminal and HTML views render them).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import Field

from vero.core.benchmark import AccessTier
from vero.models import StrictModel
from vero.serve.api import RankedCandidate
from vero.session.model import AskedBy, CommitRole, TaskIdentity
from vero.session.reader import Session

SessionKind = Literal["final", "rescue", "runner"]


class EvaluationRow(StrictModel):
    """One evaluation, in time order."""

    experiment_id: str
    asked_by: AskedBy
    purpose: str
    split: str
    commit: str
    status: str
    n_samples: int
    n_errors: int
    mean_score: float | None
    created_at: float
    finished_at: float | None
    charged: bool
    free_baseline: bool
    released: bool


class SplitSummary(StrictModel):
    """Evaluations and budget of one split."""

    split: str
    access: AccessTier | None
    optimizer_evaluations: int
    finalize_evaluations: int
    runs_used: int
    samples_used: int
    run_budget: int | None
    sample_budget: int | None
    best_score: float | None
    best_commit: str | None


class CandidateRow(StrictModel):
    """One commit of the session."""

    commit: str
    roles: list[CommitRole]
    winner: bool
    evaluations: int
    best_by_split: dict[str, float]


class Selection(StrictModel):
    """Which candidate finalize chose, and why."""

    source: str
    candidate: str | None
    why: str
    ranking: list[RankedCandidate] = Field(default_factory=list)


class SessionReport(StrictModel):
    """Everything `vero report` says about one session archive."""

    archive: str
    kind: SessionKind
    task: TaskIdentity
    selection_split: str | None
    candidates: list[CandidateRow]
    splits: list[SplitSummary]
    evaluations: list[EvaluationRow]
    selection: Selection
    rewards: dict[str, float] | None
    target_errors: dict[str, str] = Field(default_factory=dict)
    baseline: dict[str, float] | None = None
    errors: list[str] = Field(default_factory=list)
    error_samples: int = 0
    incidents: int = 0


class TrialReport(StrictModel):
    """One Harbor trial: what Harbor recorded and the session archive it kept."""

    trial_dir: str
    trial_name: str
    task_name: str | None
    rewards: dict[str, float] | None
    exception: str | None
    session: SessionReport | None
    note: str | None = Field(default=None, description="why there is no session, or which archive was read")


class RewardComparison(StrictModel):
    """One reward key across the trials of a jobs dir."""

    reward_key: str
    trials: int
    mean: float
    best: float
    worst: float
    best_trial: str
    baseline_mean: float | None


class JobsReport(StrictModel):
    """A jobs dir: one row per trial and a comparison."""

    path: str
    trials: list[TrialReport]
    comparison: list[RewardComparison]
    failed_trials: int


def _kind(session: Session) -> SessionKind:
    if session.manifest.producer == "runner":
        return "runner"
    return "final" if session.finalize is not None else "rescue"


def _rows(session: Session) -> list[EvaluationRow]:
    rows = []
    for evaluation in session.evaluations:
        record = evaluation.record
        agg = record.aggregate
        rows.append(EvaluationRow(
            experiment_id=record.experiment_id, asked_by=evaluation.asked_by, purpose=record.purpose,
            split=record.split, commit=record.commit, status=record.status,
            n_samples=agg.n_samples if agg is not None else len(record.sample_ids),
            n_errors=agg.n_errors if agg is not None else 0,
            mean_score=agg.mean_score if agg is not None and record.status == "done" else None,
            created_at=record.created_at, finished_at=record.finished_at, charged=record.charged,
            free_baseline=record.free_baseline, released=record.released))
    return rows


def _best(rows: Iterable[EvaluationRow]) -> tuple[float | None, str | None]:
    scored = [row for row in rows if row.mean_score is not None]
    if not scored:
        return None, None
    best = min(scored, key=lambda row: (-(row.mean_score or 0.0), row.created_at))
    return best.mean_score, best.commit


def _splits(session: Session, rows: list[EvaluationRow]) -> list[SplitSummary]:
    access: dict[str, AccessTier] = {}
    budgets: dict[str, tuple[int | None, int | None]] = {}
    names: list[str] = []
    if session.serve is not None:
        access = {entry.split: entry.access for entry in session.serve.splits}
        budgets = {b.split: (b.total_run_budget, b.total_sample_budget) for b in session.serve.budgets}
        names = [entry.split for entry in session.serve.splits]
    used: dict[str, tuple[int, int]] = {}
    if session.ledger is not None:
        for entry in session.ledger.entries:
            runs, samples = used.get(entry.split, (0, 0))
            used[entry.split] = (runs + entry.runs_used, samples + entry.samples_used)
    names += [row.split for row in rows if row.split not in names]
    summaries = []
    for split in names:
        mine = [row for row in rows if row.split == split]
        optimizer = [row for row in mine if row.asked_by != "finalize"]
        best, best_commit = _best(optimizer)
        runs, samples = used.get(split, (0, 0))
        run_budget, sample_budget = budgets.get(split, (None, None))
        summaries.append(SplitSummary(
            split=split, access=access.get(split), optimizer_evaluations=len(optimizer),
            finalize_evaluations=len(mine) - len(optimizer), runs_used=runs, samples_used=samples,
            run_budget=run_budget, sample_budget=sample_budget, best_score=best, best_commit=best_commit))
    return summaries


def _candidates(session: Session, rows: list[EvaluationRow]) -> list[CandidateRow]:
    candidates = []
    for entry in session.commits:
        mine = [row for row in rows if row.commit == entry.commit and row.asked_by != "finalize"]
        best: dict[str, float] = {}
        for row in mine:
            if row.mean_score is not None:
                best[row.split] = max(best.get(row.split, row.mean_score), row.mean_score)
        candidates.append(CandidateRow(commit=entry.commit, roles=entry.roles, winner=entry.commit == session.winner,
                                       evaluations=len(mine), best_by_split=dict(sorted(best.items()))))
    first: dict[str, float] = {}
    for row in rows:  # time order: the first evaluation of each commit
        first.setdefault(row.commit, row.created_at)
    return sorted(candidates, key=lambda c: ("baseline" not in c.roles, first.get(c.commit, float("inf")), c.commit))


def _selection(session: Session) -> Selection:
    kind = _kind(session)
    if kind == "runner":
        return Selection(source="none", candidate=None,
                         why="a runner session scores one commit: there is no selection")
    report = session.finalize
    if report is None:
        return Selection(source="none", candidate=None,
                         why="finalize had not run when this archive was taken (the rescue archive is taken "
                             "right after the agent phase); see verifier/session.tar.gz for the final one")
    split = session.serve.selection_split if session.serve is not None else "the selection split"
    if report.source == "submission":
        why = "the optimizer's submission (reward_mode submit scores the submitted commit)"
    elif report.source == "auto_best":
        winner = next((c for c in report.ranking if c.commit == report.candidate), None)
        trusted = f"{winner.trusted_score:g}" if winner is not None and winner.trusted_score is not None else "?"
        why = (f"auto_best: the top {len(report.ranking)} candidate(s) on {split} were re-scored on the whole "
               f"split by the trusted scorer; {(report.candidate or '')[:12]} had the best trusted score "
               f"({trusted})")
    else:
        why = (f"no candidate: no commit other than the baseline finished an evaluation on {split} "
               "(or every re-score failed), so every target floors to 0.0")
    return Selection(source=report.source, candidate=report.candidate, why=why, ranking=report.ranking)


def _errors(session: Session, rows: list[EvaluationRow]) -> list[str]:
    errors = list(session.finalize.errors) if session.finalize is not None else []
    for evaluation in session.evaluations:
        record = evaluation.record
        if record.status in ("failed", "interrupted"):
            errors.append(f"evaluation {record.experiment_id} ({record.split}, {record.commit[:12]}) "
                          f"{record.status}: {record.error}")
    for row in rows:
        if row.n_samples and row.n_errors == row.n_samples and row.status == "done":
            errors.append(f"evaluation {row.experiment_id} ({row.split}, {row.commit[:12]}): every sample errored")
    return errors


def session_report(session: Session) -> SessionReport:
    """The report of one session archive."""
    rows = _rows(session)
    finalize = session.finalize
    return SessionReport(
        archive=str(session.path), kind=_kind(session), task=session.task,
        selection_split=session.serve.selection_split if session.serve is not None else None,
        candidates=_candidates(session, rows), splits=_splits(session, rows), evaluations=rows,
        selection=_selection(session), rewards=finalize.rewards if finalize is not None else None,
        target_errors=finalize.target_errors if finalize is not None else {},
        baseline=finalize.baseline if finalize is not None else None, errors=_errors(session, rows),
        error_samples=sum(1 for e in session.evaluations for r in e.results if not r.ok),
        incidents=len(session.incidents))


def compare(trials: list[TrialReport]) -> list[RewardComparison]:
    """Per reward key: mean, best and worst over the trials that have a reward, and the baseline."""
    keys = sorted({key for trial in trials for key in (trial.rewards or {})})
    comparison = []
    for key in keys:
        scored = [(trial.trial_name, (trial.rewards or {})[key]) for trial in trials if key in (trial.rewards or {})]
        baselines = [trial.session.baseline[key] for trial in trials
                     if trial.session is not None and trial.session.baseline and key in trial.session.baseline]
        best = max(scored, key=lambda item: item[1])
        comparison.append(RewardComparison(
            reward_key=key, trials=len(scored), mean=sum(v for _, v in scored) / len(scored), best=best[1],
            worst=min(v for _, v in scored), best_trial=best[0],
            baseline_mean=sum(baselines) / len(baselines) if baselines else None))
    return comparison
