"""Finalize: select the candidate commit and score it on the held-out targets.

Selection chain:
- `reward_mode: submit`: the submission; if there is none, auto_best; if that finds none, no
  candidate.
- `reward_mode: auto_best`: auto_best, where a submission (when submit is enabled and one was
  made) joins the pool of commits to re-score; if that finds none, no candidate.

auto_best drops the baseline, ranks the optimizer's finished evaluations on the selection
split by their mean score (one entry per commit, its best; ties to the earlier evaluation),
re-scores the top `auto_best_top_k` commits on the full selection split with the trusted
scorer (admin evaluations: no budget, no gate), and takes the best trusted score (ties to the
commit evaluated first). With no candidate every target floors to 0.0; a target whose
evaluation fails also floors to 0.0 and the error is reported (`errors`, and `target_errors`
by reward key next to the floor), and so is an evaluation in which every sample errored (its
score is a silent 0.0 otherwise). An evaluation that could not run at all (its nested run
produced nothing: `InfrastructureFailure`) is retried once before it counts as failed.
`score_baseline` scores the baseline on the targets too; its failure never fails finalize,
and neither does a corrupt submission file (reported, then ignored).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from vero.core.strategy import InfrastructureFailure
from vero.errors import VeroError
from vero.fsutil import atomic_write_model
from vero.models import StrictModel
from vero.serve.api import FinalizeReport, FinalizeSource, RankedCandidate
from vero.serve.sidecar import AdminScore, Sidecar

log = logging.getLogger(__name__)

FINALIZE_REPORT = "finalize.json"
BASELINE_REPORT = "baseline.json"


class BaselineScores(StrictModel):
    """baseline.json on the admin volume: the baseline's target scores (score_baseline)."""

    scores: dict[str, float]
    errors: list[str]


_lock = threading.Lock()


def _admin_score(sidecar: Sidecar, split: str, sample_ids: list[str] | None, commit: str,
                 purpose: str) -> AdminScore:
    """A trusted score; an evaluation that could not run at all is tried a second time (a nested
    run that produced nothing is usually a passing infrastructure problem)."""
    try:
        return sidecar.admin_evaluate(split, sample_ids, commit, purpose)
    except InfrastructureFailure as exc:
        log.warning("finalize: %s; trying once more", exc.what)
        try:
            return sidecar.admin_evaluate(split, sample_ids, commit, purpose)
        except InfrastructureFailure as again:
            raise InfrastructureFailure(f"{again.what} (tried twice)", where=again.where, fix=again.fix) from again


def _rank(sidecar: Sidecar, extra_commit: str | None) -> list[RankedCandidate]:
    """The optimizer's commits on the selection split, best first, baseline dropped."""
    best: dict[str, RankedCandidate] = {}
    for record in sidecar.db.all():  # oldest first: keeps the earlier entry on ties
        if (record.origin != "agent" or record.status != "done" or record.aggregate is None
                or record.split != sidecar.config.selection_split
                or record.commit == sidecar.config.baseline_commit):
            continue
        current = best.get(record.commit)
        score = record.aggregate.mean_score
        if current is None:
            best[record.commit] = RankedCandidate(commit=record.commit, selection_score=score,
                                                  first_evaluated_at=record.created_at)
        elif score > current.selection_score:
            best[record.commit] = current.model_copy(update={"selection_score": score})
    ranked = sorted(best.values(), key=lambda c: (-c.selection_score, c.first_evaluated_at))
    top = ranked[: sidecar.config.auto_best_top_k]
    if extra_commit is not None and extra_commit != sidecar.config.baseline_commit and \
            extra_commit not in {c.commit for c in top}:
        top.append(best.get(extra_commit) or RankedCandidate(commit=extra_commit, selection_score=0.0,
                                                             first_evaluated_at=time.time()))
    return top


def _auto_best(sidecar: Sidecar, pool: list[RankedCandidate], errors: list[str]) -> str | None:
    split = sidecar.config.selection_split
    for index, candidate in enumerate(pool):
        try:
            result = _admin_score(sidecar, split, None, candidate.commit, "auto_best")
            pool[index] = candidate.model_copy(update={"trusted_score": result.score})
            if result.all_errored is not None:
                errors.append(f"auto_best re-score of {candidate.commit} on {split}: {result.all_errored}")
        except VeroError as exc:
            errors.append(f"auto_best re-score of {candidate.commit} failed: {exc.what}")
            pool[index] = candidate.model_copy(update={"error": exc.what})
    scored = [c for c in pool if c.trusted_score is not None]
    if not scored:
        return None
    winner = min(scored, key=lambda c: (-(c.trusted_score or 0.0), c.first_evaluated_at))
    return winner.commit


def _score_targets(sidecar: Sidecar, commit: str, purpose: str, errors: list[str],
                   target_errors: dict[str, str] | None = None) -> dict[str, float]:
    rewards: dict[str, float] = {}
    cache: dict[tuple[str, tuple[str, ...] | None], float | str] = {}
    for target in sidecar.config.targets:
        key = (target.split, tuple(target.sample_ids) if target.sample_ids is not None else None)
        if key not in cache:
            try:
                result = _admin_score(sidecar, target.split, target.sample_ids, commit, purpose)
                cache[key] = result.score
                if result.all_errored is not None:
                    errors.append(f"{purpose} {target.reward_key} on {target.split}: {result.all_errored}")
            except VeroError as exc:
                cache[key] = exc.what
        outcome = cache[key]
        if isinstance(outcome, str):
            errors.append(f"{purpose} {target.reward_key} on {target.split} floored to 0.0: {outcome}")
            if target_errors is not None:
                target_errors[target.reward_key] = outcome
            outcome = 0.0
        rewards[target.reward_key] = outcome
    return rewards


def _score_baseline(sidecar: Sidecar, errors: list[str]) -> dict[str, float] | None:
    """The baseline's target scores for the report; whatever goes wrong here is only an error
    line, never a lost reward."""
    baseline_errors: list[str] = []
    baseline: dict[str, float] | None = None
    try:
        baseline = _score_targets(sidecar, sidecar.config.baseline_commit, "baseline", baseline_errors)
        atomic_write_model(Path(sidecar.config.paths.admin_dir) / BASELINE_REPORT,
                           BaselineScores(scores=baseline, errors=baseline_errors), mode=0o600)
    except Exception as exc:
        log.exception("finalize: scoring the baseline failed")
        baseline_errors.append(f"baseline scores not recorded: {type(exc).__name__}: {exc}")
    errors.extend(baseline_errors)
    return baseline


def _earlier_report(path: Path) -> FinalizeReport | None:
    try:
        return FinalizeReport.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("finalize: the earlier report %s is unreadable (%s); finalizing again", path, exc)
        return None


def finalize(sidecar: Sidecar) -> FinalizeReport:
    """Select, score, persist and return the report. Never raises for a scoring failure.

    Runs once per task: a later call returns the first report and scores nothing, so holding
    the admin token never buys a second look at held-out scores.
    """
    with _lock:
        config = sidecar.config
        earlier = _earlier_report(Path(config.paths.admin_dir) / FINALIZE_REPORT)
        if earlier is not None:
            log.warning("finalize was called again: returning the first report")
            return earlier
        errors: list[str] = []
        try:
            submission = sidecar.submission()
        except VeroError as exc:   # a torn file on the admin volume must not cost the reward
            errors.append(f"submission ignored: {exc.what} ({exc.where})")
            submission = None
        candidate: str | None = None
        source: FinalizeSource = "none"
        ranking: list[RankedCandidate] = []
        if config.reward_mode == "submit" and submission is not None:
            candidate, source = submission.commit, "submission"
        else:
            extra = submission.commit if submission is not None else None
            ranking = _rank(sidecar, extra)
            candidate = _auto_best(sidecar, ranking, errors) if ranking else None
            source = "auto_best" if candidate is not None else "none"
        target_errors: dict[str, str] = {}
        if candidate is None:
            rewards = {target.reward_key: 0.0 for target in config.targets}
        else:
            rewards = _score_targets(sidecar, candidate, "target", errors, target_errors)
        baseline = _score_baseline(sidecar, errors) if config.score_baseline else None
        report = FinalizeReport(rewards=rewards, target_errors=target_errors, candidate=candidate, source=source,
                                baseline=baseline, ranking=ranking, errors=errors, finished_at=time.time())
        atomic_write_model(Path(config.paths.admin_dir) / FINALIZE_REPORT, report, mode=0o600)
        for error in errors:
            log.warning("finalize: %s", error)
        return report
