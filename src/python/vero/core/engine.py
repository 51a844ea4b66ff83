"""The evaluation engine: every rule between a request and a strategy run.

Order for an optimizer ("agent") request, each step rejecting before anything is spent:
dataset and split known -> tier gate -> samples resolved -> k-anonymity floor -> commit
validated and copied into the trusted repo -> [under one lock: no differencing against
earlier evaluations of a non_viewable split -> `pending` experiment record] -> budget, the
spend naming the experiment (the first evaluation of the baseline commit on a split is free;
a refusal removes the pending record) -> record `running` -> clean worktree -> strategy ->
record done. Admin requests (finalize) skip the gate, the differencing check and the budget.
From the commit import to the admitted record, at most IMPORT_SLOTS evaluations run at once.

An evaluation that ends abnormally is settled: failed or interrupted, or removed if it was
never paid for. When even that write fails (a full disk) the record is settled again before
the next evaluation, and at the next start in any case (`ExperimentDB.recover`). One that could
not run at all (`InfrastructureFailure`: nothing was scored, nothing disclosed) first has its
charge released by the ledger, then is recorded `failed` and `released`; the caller gets a
retryable error naming the experiment.

Sample selection: `sample_ids` picks exactly those (unique, all in the split);
`num_samples` = N picks the first N samples in split order (deterministic, so repeated
evaluations of a subset compare like with like); neither means the whole split.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from vero.core.benchmark import AccessTier
from vero.core.checkouts import SharedCheckouts
from vero.core.datasets import SplitCatalog
from vero.core.experiments import ExperimentDB, ExperimentRecord, Origin
from vero.core.gitops import TrustedRepo
from vero.core.ledger import Ledger, Remaining
from vero.core.records import SampleResult
from vero.core.rejections import BadInput, Forbidden, UnknownSplit
from vero.core.strategy import (
    EvaluationCancelled,
    EvaluationContext,
    EvaluationStrategy,
    InfrastructureFailure,
    ProgressCallback,
)
from vero.core.tiers import TierPolicy
from vero.errors import VeroError
from vero.models import StrictModel

log = logging.getLogger(__name__)

DEFAULT_REF = "HEAD"
# How many evaluations may be between "commit import" and "admitted" at once. That stretch is
# Python work under the GIL (and a fetch it waits for); more of them at once than there are cores
# only take turns at the GIL with the event loop, which then answers /status late. A burst of
# 25 evaluations delayed /status by 250-350 ms with 64 at once and by 50-70 ms with 2.
IMPORT_SLOTS = 2
# An agent evaluation in these states has disclosed, or may still disclose, its aggregate.
DISCLOSING = ("pending", "running", "done")


class EvalRequest(StrictModel):
    """An evaluation request (the body of POST /eval)."""

    split: str = Field(min_length=1, max_length=200)
    commit: str | None = Field(default=None, max_length=300,
                               description="SHA or ref; default HEAD of the agent repo")
    sample_ids: list[str] | None = Field(default=None, max_length=100_000)
    num_samples: int | None = None
    dataset_id: str | None = Field(default=None, max_length=200)


@dataclass(frozen=True)
class EvalOutcome:
    """A finished evaluation: its record, results in request order, and the budget left."""

    record: ExperimentRecord
    results: list[SampleResult]
    tier: AccessTier
    remaining: Remaining | None


class SplitStatus(StrictModel):
    """What the optimizer may know about one split."""

    split: str
    tier: AccessTier
    evaluable: bool
    n_samples: int
    budget: Remaining | None


class Engine:
    """Applies the rules and runs the strategy. Thread-safe: the ledger and repo lock themselves."""

    def __init__(self, *, catalog: SplitCatalog, policy: TierPolicy, ledger: Ledger, db: ExperimentDB,
                 strategy: EvaluationStrategy, repo: TrustedRepo, agent_repo: Path, work_dir: Path,
                 baseline_commit: str, read_only_paths: Sequence[str] = (),
                 checkouts: SharedCheckouts | None = None) -> None:
        self.catalog = catalog
        self.policy = policy
        self.ledger = ledger
        self.db = db
        self.strategy = strategy
        self.repo = repo
        self.agent_repo = Path(agent_repo)
        self.work_dir = Path(work_dir)
        self.baseline_commit = baseline_commit
        self.read_only_paths = tuple(read_only_paths)
        # None: every evaluation writes its own checkout (candidates may be able to write it).
        self.checkouts = checkouts
        # The catalog never changes while the sidecar runs.
        self._split_sizes = {split: len(catalog.sample_ids(split)) for split in catalog.split_names()}
        self._read_only_passed: set[str] = set()
        # One sidecar process serves an admin volume, so a thread lock makes the differencing
        # check and the pending record it admits one step.
        self._admission = threading.Lock()
        # The sample sets of the agent's disclosing evaluations, per (split, dataset): read from
        # the records once, then kept by admission and settlement (both in this process), so an
        # admission does not read every record of the session again. Guarded by `_admission`.
        self._disclosed: dict[tuple[str, str], dict[str, frozenset[str]]] = {}
        self._import_slots = threading.BoundedSemaphore(IMPORT_SLOTS)
        self._unsettled: dict[str, tuple[str, Literal["failed", "interrupted"]]] = {}
        self._unsettled_lock = threading.Lock()

    def resolve_samples(self, split: str, sample_ids: Sequence[str] | None,
                        num_samples: int | None) -> tuple[list[str], bool]:
        """The sample ids to evaluate and whether they are the whole split (see module doc)."""
        if split not in self.catalog.split_names():
            raise UnknownSplit(f"unknown split {split!r}",
                               fix=f"use one of: {', '.join(self.catalog.split_names())}")
        everything = self.catalog.sample_ids(split)
        if sample_ids is not None and num_samples is not None:
            raise BadInput("give sample_ids or num_samples, not both",
                           fix="drop one of them (neither means the whole split)")
        if sample_ids is not None:
            if not sample_ids:
                raise BadInput("sample_ids is empty", fix="list at least one sample id, or omit it")
            if len(set(sample_ids)) != len(sample_ids):
                raise BadInput("sample_ids has duplicates", fix="list each sample once")
            known = set(everything)
            missing = [sid for sid in sample_ids if sid not in known]
            if missing:
                shown = ", ".join(repr(m[:60]) for m in missing[:5])
                raise BadInput(f"{len(missing)} sample id(s) are not in split {split!r}: {shown}",
                               fix=f"ids of this split are out of range; it has {len(everything)} samples")
            return list(sample_ids), len(sample_ids) == len(everything)
        if num_samples is not None:
            if isinstance(num_samples, bool) or not 1 <= num_samples <= len(everything):
                raise BadInput(f"num_samples={num_samples} is out of range for split {split!r}",
                               fix=f"use 1..{len(everything)}")
            return everything[:num_samples], num_samples == len(everything)
        return everything, True

    def _check_dataset(self, dataset_id: str | None) -> None:
        if dataset_id is not None and dataset_id != self.catalog.dataset_id:
            raise UnknownSplit(f"unknown dataset {dataset_id[:80]!r}",
                               fix=f"omit dataset_id or use {self.catalog.dataset_id}")

    def evaluate(self, request: EvalRequest, *, origin: Origin = "agent", purpose: str = "eval",
                 progress: ProgressCallback | None = None) -> EvalOutcome:
        """Check, charge and run one evaluation; raises a `Rejected` error before spending anything."""
        self._check_dataset(request.dataset_id)
        split, dataset_id = request.split, self.catalog.dataset_id
        if origin == "agent" and split in self.catalog.split_names():
            # Before the sample ids are looked at: a no_access split answers the same whatever they
            # name, so held-out ids cannot be enumerated.
            self.policy.check_tier(split)
        sample_ids, full = self.resolve_samples(split, request.sample_ids, request.num_samples)
        if origin == "agent":
            self.policy.check_agent_request(split, len(sample_ids), len(self.catalog.sample_ids(split)))
        ref = request.commit if request.commit is not None else DEFAULT_REF
        with self._import_slots:  # waiting here holds no GIL (IMPORT_SLOTS)
            commit = self.repo.import_commit(self.agent_repo, ref)
            if origin == "agent":
                self.check_read_only_paths(commit)
            self._settle_leftovers()
            if origin == "agent":
                record = self._admit(purpose=purpose, split=split, dataset_id=dataset_id, commit=commit,
                                     ref=ref, sample_ids=sample_ids, full=full)
            else:
                record = self.db.create(origin=origin, purpose=purpose, split=split, dataset_id=dataset_id,
                                        commit=commit, requested_ref=ref, sample_ids=sample_ids, full_split=full,
                                        charged=False)
        record, results = self._run(record, progress)
        # The sidecar is the ledger's only writer: its last write is the file's state.
        remaining = self.ledger.peek(split, dataset_id) if origin == "agent" else None
        return EvalOutcome(record=record, results=results, tier=self.policy.tier(split), remaining=remaining)

    def check_read_only_paths(self, commit: str) -> None:
        """Refuse a candidate that changes a read-only path relative to the baseline.

        The lock in the optimizer's work tree (seed.sh) is advisory; this check is what holds.
        A commit never changes, so one that passed is not compared again.
        """
        if commit in self._read_only_passed:
            return
        changed = self.repo.changed_paths(self.baseline_commit, commit, self.read_only_paths)
        if changed:
            shown = ", ".join(changed[:10]) + (" ..." if len(changed) > 10 else "")
            raise Forbidden(f"commit {commit[:12]} changes read-only path(s): {shown}",
                            fix=f"restore them from the baseline (git checkout {self.baseline_commit[:12]} -- "
                                "<path>) and commit again; read-only paths must stay as the baseline has them")
        self._read_only_passed.add(commit)

    def _admit(self, *, purpose: str, split: str, dataset_id: str, commit: str, ref: str,
               sample_ids: list[str], full: bool) -> ExperimentRecord:
        """Check differencing, then pay: pending record -> ledger spend naming it -> running."""
        with self._admission:
            disclosed = self._disclosed_sets(split, dataset_id)
            self.policy.check_disclosure(split, sample_ids, list(disclosed.values()),
                                         self.catalog.sample_ids(split))
            record = self.db.create(origin="agent", purpose=purpose, split=split, dataset_id=dataset_id,
                                    commit=commit, requested_ref=ref, sample_ids=sample_ids, full_split=full,
                                    charged=False, status="pending")
            disclosed[record.experiment_id] = frozenset(sample_ids)
        try:
            free = commit == self.baseline_commit and self.ledger.claim_free_baseline(
                split, dataset_id, record.experiment_id)
            if not free:
                self.ledger.reserve(split, dataset_id, len(sample_ids), record.experiment_id)
            return self.db.start(record, charged=not free, free_baseline=free)
        except BaseException as exc:
            self._settle(record, f"could not start: {exc}", "failed")
            raise

    def _disclosed_sets(self, split: str, dataset_id: str) -> dict[str, frozenset[str]]:
        """Experiment id -> sample set of the agent's disclosing evaluations of `(split, dataset_id)`
        (call under `_admission`)."""
        key = (split, dataset_id)
        if key not in self._disclosed:
            self._disclosed[key] = {r.experiment_id: frozenset(r.sample_ids) for r in self.db.all()
                                    if r.origin == "agent" and r.split == split and r.dataset_id == dataset_id
                                    and r.status in DISCLOSING}
        return self._disclosed[key]

    def _run(self, record: ExperimentRecord, progress: ProgressCallback | None,
             ) -> tuple[ExperimentRecord, list[SampleResult]]:
        try:
            checkout = (self.checkouts.checkout(record.commit) if self.checkouts is not None
                        else self.repo.worktree(record.commit, self.work_dir))
            with checkout as worktree:
                results = self.strategy.evaluate(EvaluationContext(
                    commit=record.commit, split=record.split, worktree=worktree,
                    sample_ids=record.sample_ids, store=self.db.store(record.experiment_id),
                    progress=progress)).samples
            return self.db.finish(record, results), results
        except EvaluationCancelled as exc:
            self._settle(record, exc.what, "interrupted")
            raise
        except InfrastructureFailure as exc:
            released = self._release(record)
            self._settle(record, f"could not run: {exc.what}" + (f"\n{exc.detail}" if exc.detail else ""), "failed")
            if not (record.charged or record.free_baseline):
                spent = "nothing was charged"
            elif released:
                spent = "no budget was spent (its charge was given back)"
            else:
                spent = "its charge could not be given back (see the sidecar log)"
            raise InfrastructureFailure(f"evaluation {record.experiment_id} could not run: {exc.what}; {spent}",
                                        where=exc.where, fix=exc.fix, detail=exc.detail or "") from exc
        except VeroError as exc:
            self._settle(record, exc.what + (f"\n{exc.detail}" if exc.detail else ""), "failed")
            raise
        except Exception as exc:
            self._settle(record, f"{type(exc).__name__}: {exc}", "failed")
            raise VeroError(f"evaluation {record.experiment_id} failed inside the eval sidecar",
                            fix="see the sidecar log", detail=f"{type(exc).__name__}: {exc}") from exc

    def _release(self, record: ExperimentRecord) -> bool:
        """Give back the charge of an agent evaluation that could not run; False when the ledger
        cannot be written (the run then stays paid: a release never happens without its write)."""
        if not (record.charged or record.free_baseline):
            return True
        try:
            self.ledger.release(record.split, record.dataset_id, record.experiment_id, len(record.sample_ids))
        except (OSError, VeroError) as exc:
            log.error("cannot release the charge of experiment %s: %s", record.experiment_id, exc)
            return False
        return True

    def _settle(self, record: ExperimentRecord, error: str, status: Literal["failed", "interrupted"]) -> None:
        """Write the end of an abnormal evaluation; if that fails too, retry before the next one."""
        try:
            # The ledger knows what a pending record was paid, and whether a charge was released.
            charge = self.ledger.charges().get(record.experiment_id)
            settled = self.db.settle(record, error, status=status, charge=charge)
            if settled is None or settled.status not in DISCLOSING:
                with self._admission:
                    self._disclosed.get((record.split, record.dataset_id), {}).pop(record.experiment_id, None)
        except (OSError, VeroError) as exc:
            log.warning("cannot settle experiment %s yet (%s); retrying before the next evaluation",
                        record.experiment_id, exc)
            with self._unsettled_lock:
                self._unsettled[record.experiment_id] = (error, status)
            return
        with self._unsettled_lock:
            self._unsettled.pop(record.experiment_id, None)

    def _settle_leftovers(self) -> None:
        with self._unsettled_lock:
            leftovers = dict(self._unsettled)
        for experiment_id, (error, status) in leftovers.items():
            record = self.db.get(experiment_id)
            if record is None:
                with self._unsettled_lock:
                    self._unsettled.pop(experiment_id, None)
                continue
            self._settle(record, error, status)

    def split_status(self, split: str) -> SplitStatus:
        """Tier, evaluability, size and budget of one split, as the optimizer may see them.

        From memory only (`Ledger.peek`, the split sizes taken at start): /status never waits
        for the ledger lock, a file or a worker thread.
        """
        tier = self.policy.tier(split)
        allowed = self.policy.agent_may_evaluate(split)
        budget = self.ledger.peek(split, self.catalog.dataset_id) if allowed else None
        evaluable = budget is not None and (
            budget.budgeted and budget.runs_remaining != 0 and budget.samples_remaining != 0
            or budget.free_baseline_available)
        return SplitStatus(split=split, tier=tier, evaluable=evaluable, n_samples=self._split_sizes[split],
                           budget=budget)
