"""The budget ledger: what each `(split, dataset)` has spent, checked and spent atomically.

Every operation re-reads the ledger file under an exclusive lock (a thread lock plus
`fcntl.flock` on a sibling lock file, so threads and processes exclude each other), decides,
and writes the new state atomically (temp + fsync + rename) before releasing the lock. A
rejected request writes nothing; spent units are never refunded (one exception, below); a
missing file is an empty ledger, a corrupt one is a loud error (never a silent refill).

A split without a configured `Budget` cannot be spent on (fail closed).

`peek` answers from the state this ledger last read or wrote, without the lock: a reader that
only shows the budget (/status) never waits behind a spend. The sidecar is the only writer of
its ledger, so that state is the file's. A re-read that finds the very bytes this ledger last
read or wrote is not parsed again: every spend appends an experiment id, and parsing and copying
the whole history on every spend made a spend cost grow with the session.

Each spend names the experiment it pays for, in the same atomic write, so a crash between the
spend and the experiment's next record write can be reconciled at start: the ledger says which
experiments were paid for (see `ExperimentDB.recover`).

The one exception to "never refunded": `release` gives back the charge of an evaluation that
could not run at all (its nested harbor run produced no trial, so nothing was scored or shown).
It moves the experiment from `charged_experiments` (or `free_baseline_experiment`) to
`released_experiments` in one atomic write; an id is released at most once and a released id
can never be charged again, so no crash or repeated call refills anything else.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeAlias

from pydantic import Field

from vero.core.benchmark import Budget
from vero.core.rejections import BudgetExceeded
from vero.errors import VeroError
from vero.fsutil import atomic_write_bytes, model_json
from vero.models import StrictModel, parse_model


class LedgerEntry(StrictModel):
    """Spent units of one split of one dataset."""

    split: str
    dataset_id: str
    runs_used: int = Field(default=0, ge=0)
    samples_used: int = Field(default=0, ge=0)
    free_baseline_used: bool = False
    charged_experiments: list[str] = Field(default_factory=list,
                                           description="experiments paid from this entry, oldest first")
    free_baseline_experiment: str | None = None
    released_experiments: list[str] = Field(default_factory=list,
                                            description="experiments whose charge was given back "
                                                        "(their run produced nothing), oldest first")


ChargeKind: TypeAlias = Literal["run", "free_baseline", "released"]


class LedgerState(StrictModel):
    """The ledger file."""

    version: Literal[1] = 1
    entries: list[LedgerEntry] = Field(default_factory=list)

    def find(self, split: str, dataset_id: str) -> LedgerEntry | None:
        """The entry of `(split, dataset_id)`, or None when nothing was spent on it yet."""
        for entry in self.entries:
            if entry.split == split and entry.dataset_id == dataset_id:
                return entry
        return None

    def entry(self, split: str, dataset_id: str) -> LedgerEntry:
        """The entry of `(split, dataset_id)`, added (zeroed) when missing."""
        entry = self.find(split, dataset_id)
        if entry is not None:
            return entry
        entry = LedgerEntry(split=split, dataset_id=dataset_id)
        self.entries.append(entry)
        self.entries.sort(key=lambda e: (e.split, e.dataset_id))
        return entry


def _copy(state: LedgerState) -> LedgerState:
    """A copy of `state` such that a change to either never reaches the other: the entries and
    their lists are new, and everything else in an entry is an immutable value."""
    return state.model_copy(update={"entries": [
        entry.model_copy(update={"charged_experiments": list(entry.charged_experiments),
                                 "released_experiments": list(entry.released_experiments)})
        for entry in state.entries]})


class Remaining(StrictModel):
    """Budget state of one split: spent units, what is left (None = unlimited) and the cap."""

    split: str
    budgeted: bool
    runs_used: int
    samples_used: int
    runs_remaining: int | None
    samples_remaining: int | None
    max_samples_per_run: int | None
    free_baseline_available: bool


class Ledger:
    """Budget ledger persisted at `path` (lock file: `path` + `.lock`)."""

    def __init__(self, path: Path, budgets: Sequence[Budget]) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self._budgets = {budget.split: budget for budget in budgets}
        self._thread_lock = threading.Lock()
        self._published = LedgerState()
        # The file's bytes as this ledger last read or wrote them: `_published` is their state.
        self._known: bytes | None = None
        # Fail at start, not at the first evaluation, when the file is corrupt. Under the lock no
        # write is under way, so a temp file is what a killed writer left.
        with self._locked():
            self._read()
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):
                leftover.unlink()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the flock

    def _read(self) -> LedgerState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return LedgerState()
        except OSError as exc:
            raise VeroError(f"cannot read the budget ledger: {exc.strerror}", where=str(self.path),
                            fix="check the admin volume") from None
        if raw == self._known:
            return _copy(self._published)  # callers change what they get
        state = parse_model(raw, LedgerState, what="budget ledger", where=str(self.path), problem="corrupt",
                            fix="vero refuses to start with a refilled budget: restore the ledger from a "
                                "backup; deleting it would refill every budget")
        self._publish(state, raw)
        return state

    def _write(self, state: LedgerState) -> None:
        raw = model_json(state).encode()
        atomic_write_bytes(self.path, raw, mode=0o600)
        self._publish(state, raw)

    def _publish(self, state: LedgerState, raw: bytes) -> None:
        # A copy: callers go on changing `state`, and `peek` must never see half an update.
        self._published = _copy(state)
        self._known = raw

    def _remaining(self, entry: LedgerEntry) -> Remaining:
        budget = self._budgets.get(entry.split)
        runs_left = samples_left = cap = None
        if budget is not None:
            cap = budget.max_samples_per_run
            if budget.total_run_budget is not None:
                runs_left = max(budget.total_run_budget - entry.runs_used, 0)
            if budget.total_sample_budget is not None:
                samples_left = max(budget.total_sample_budget - entry.samples_used, 0)
        return Remaining(split=entry.split, budgeted=budget is not None, runs_used=entry.runs_used,
                         samples_used=entry.samples_used, runs_remaining=runs_left,
                         samples_remaining=samples_left, max_samples_per_run=cap,
                         free_baseline_available=not entry.free_baseline_used)

    def remaining(self, split: str, dataset_id: str) -> Remaining:
        """The current budget state of `(split, dataset_id)`."""
        with self._locked():
            return self._remaining(self._read().entry(split, dataset_id))

    def peek(self, split: str, dataset_id: str) -> Remaining:
        """The budget state of `(split, dataset_id)` as of this ledger's last read or write,
        without waiting for the lock (module docstring)."""
        entry = self._published.find(split, dataset_id)
        return self._remaining(entry if entry is not None else LedgerEntry(split=split, dataset_id=dataset_id))

    def charges(self) -> dict[str, ChargeKind]:
        """Every experiment the ledger has paid for, given the free baseline evaluation, or released."""
        with self._locked():
            state = self._read()
        found: dict[str, ChargeKind] = {}
        for entry in state.entries:
            found.update(dict.fromkeys(entry.charged_experiments, "run"))
            if entry.free_baseline_experiment is not None:
                found[entry.free_baseline_experiment] = "free_baseline"
            found.update(dict.fromkeys(entry.released_experiments, "released"))
        return found

    def release(self, split: str, dataset_id: str, experiment_id: str, n_samples: int) -> Remaining:
        """Give back what `experiment_id` was charged (one run and `n_samples`, or the free baseline
        evaluation) because its run produced nothing. Idempotent; an experiment this entry never
        charged is a ValueError (nothing is ever released that was not spent)."""
        with self._locked():
            state = self._read()
            entry = state.entry(split, dataset_id)
            if experiment_id in entry.released_experiments:
                return self._remaining(entry)
            if experiment_id in entry.charged_experiments:
                entry.charged_experiments.remove(experiment_id)
                entry.runs_used -= 1
                entry.samples_used -= n_samples
                if entry.runs_used < 0 or entry.samples_used < 0:
                    raise ValueError(f"releasing {experiment_id} would make the ledger of {split!r} negative")
            elif experiment_id == entry.free_baseline_experiment:
                entry.free_baseline_used = False
                entry.free_baseline_experiment = None
            else:
                raise ValueError(f"experiment {experiment_id} was never charged on split {split!r}")
            entry.released_experiments.append(experiment_id)
            self._write(state)
            return self._remaining(entry)

    def reserve(self, split: str, dataset_id: str, n_samples: int,
                experiment_id: str | None = None) -> Remaining:
        """Spend one run and `n_samples` samples for `experiment_id`, or raise `BudgetExceeded`
        having spent nothing."""
        if n_samples < 1:
            raise ValueError("a reservation covers at least one sample")
        with self._locked():
            state = self._read()
            entry = state.entry(split, dataset_id)
            before = self._remaining(entry)
            budget = self._budgets.get(split)
            if budget is None:
                raise BudgetExceeded(f"split {split!r} has no budget configured",
                                     fix="evaluate a split listed with a budget in `vero harbor status`")
            if before.max_samples_per_run is not None and n_samples > before.max_samples_per_run:
                raise BudgetExceeded(
                    f"{n_samples} samples exceed the per-run cap of {before.max_samples_per_run} "
                    f"on split {split!r}",
                    fix=f"request at most {before.max_samples_per_run} samples per evaluation")
            if before.runs_remaining is not None and before.runs_remaining < 1:
                raise BudgetExceeded(f"the run budget of split {split!r} is exhausted "
                                     f"({entry.runs_used} of {budget.total_run_budget} used)",
                                     fix="budgets are never refilled; use the results you have")
            if before.samples_remaining is not None and n_samples > before.samples_remaining:
                raise BudgetExceeded(f"{n_samples} samples requested but only {before.samples_remaining} "
                                     "left "
                                     f"in the sample budget of split {split!r}",
                                     fix=f"request at most {before.samples_remaining} samples")
            if experiment_id is not None and experiment_id in entry.released_experiments:
                raise ValueError(f"experiment {experiment_id} was released; it is never charged again")
            entry.runs_used += 1
            entry.samples_used += n_samples
            if experiment_id is not None:
                entry.charged_experiments.append(experiment_id)
            self._write(state)
            return self._remaining(entry)

    def claim_free_baseline(self, split: str, dataset_id: str, experiment_id: str | None = None) -> bool:
        """Use the one free baseline evaluation of `(split, dataset_id)` for `experiment_id`;
        False when already used."""
        with self._locked():
            state = self._read()
            entry = state.entry(split, dataset_id)
            if entry.free_baseline_used:
                return False
            entry.free_baseline_used = True
            entry.free_baseline_experiment = experiment_id
            self._write(state)
            return True
