"""Experiment records: one per evaluation, persisted atomically, surviving a restart.

Layout under the database root: `<experiment id>/record.json` (an `ExperimentRecord`) and
`<experiment id>/samples/` (a `SampleStore` with one file per sample). An evaluation that was
running when the process died is marked `interrupted` at the next start, with an aggregate
over what was requested (samples that never finished count as errors).

A paid evaluation is written as `pending` *before* the ledger spends on it (the spend names
the experiment id), then `running`. So a crash at any point leaves a consistent pair: a
pending record the ledger paid for becomes `interrupted` (charged) at start; one the ledger
never paid for was never answered nor run, and is removed; a request the ledger refuses
removes its pending record at once. No paid run is ever without a record.

An evaluation that could not run at all (`InfrastructureFailure`) has its charge released by
the ledger first, then its record becomes `failed` with `released` set (never ranked). A crash
between the two is settled the same way at start, from the ledger's `released` entry.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from vero.core.ledger import ChargeKind
from vero.core.records import Aggregate, SampleResult, aggregate
from vero.core.sample_store import SampleStore
from vero.errors import VeroError
from vero.fsutil import atomic_write_model, fsync_dir, remove_unfinished_writes
from vero.models import StrictModel, parse_model

log = logging.getLogger(__name__)

ExperimentStatus = Literal["pending", "running", "done", "failed", "interrupted"]
Origin = Literal["agent", "admin"]
RECORD = "record.json"
_ID = re.compile(r"^[0-9]{13}-[0-9a-f]{12}$")


class ExperimentRecord(StrictModel):
    """One evaluation of one commit on some samples of one split (immutable: `model_copy` it)."""

    model_config = ConfigDict(frozen=True)

    experiment_id: str
    origin: Origin
    purpose: str = Field(description="why it ran: eval, auto_best, target, baseline, ...")
    split: str
    dataset_id: str
    commit: str
    requested_ref: str
    sample_ids: list[str]
    full_split: bool
    charged: bool = Field(description="the run was paid from the budget")
    free_baseline: bool = False
    released: bool = Field(default=False, description="its charge was given back: it could not run at "
                                                      "all and disclosed nothing")
    status: ExperimentStatus = "running"
    created_at: float
    finished_at: float | None = None
    aggregate: Aggregate | None = None
    error: str | None = None


class ExperimentDB:
    """Experiment records under `root`, one directory per experiment."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        # Parsed records by id, with the (inode, mtime, size) they were read at: every admission
        # scans the history, which must not mean parsing every record again.
        self._parsed: dict[str, tuple[tuple[int, int, int], ExperimentRecord]] = {}

    def _dir(self, experiment_id: str) -> Path:
        if not _ID.fullmatch(experiment_id):
            raise VeroError(f"invalid experiment id {experiment_id!r}", where=str(self.root))
        return self.root / experiment_id

    def create(self, *, origin: Origin, purpose: str, split: str, dataset_id: str, commit: str,
               requested_ref: str, sample_ids: list[str], full_split: bool, charged: bool,
               free_baseline: bool = False,
               status: Literal["pending", "running"] = "running") -> ExperimentRecord:
        """Persist a new `running` (or `pending`: not paid yet) record and return it.

        If the write fails (e.g. a full disk) nothing is left behind.
        """
        experiment_id = f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex[:12]}"
        record = ExperimentRecord(experiment_id=experiment_id, origin=origin, purpose=purpose, split=split,
                                  dataset_id=dataset_id, commit=commit, requested_ref=requested_ref,
                                  sample_ids=sample_ids, full_split=full_split, charged=charged,
                                  free_baseline=free_baseline, status=status, created_at=time.time())
        try:
            self.save(record)
        except BaseException:
            self._remove(experiment_id)
            raise
        return record

    def start(self, record: ExperimentRecord, *, charged: bool, free_baseline: bool) -> ExperimentRecord:
        """Mark a `pending` record `running` once the ledger has paid for it."""
        running = record.model_copy(update={"status": "running", "charged": charged,
                                            "free_baseline": free_baseline})
        self.save(running)
        return running

    def settle(self, record: ExperimentRecord, error: str, *, status: Literal["failed", "interrupted"],
               charge: ChargeKind | None) -> ExperimentRecord | None:
        """The final state of an evaluation that ended abnormally; None when nothing is left of it.

        `charge` is what the ledger says about this experiment. A `pending` record the ledger
        never paid for is removed (the request leaves no trace); one whose charge the ledger
        released (it could not run at all) becomes `failed`, uncharged and `released`, whatever
        `status` says; any other paid one, and a `running` one, is marked `status` with `error`.
        Finished records are left as they are.
        """
        if record.status not in ("pending", "running"):
            return record
        if charge == "released":
            released = record.model_copy(update={"charged": False, "free_baseline": False, "released": True})
            return self.fail(released, error, status="failed")
        if record.status == "pending":
            if charge is None:
                self._remove(record.experiment_id)
                return None
            record = record.model_copy(update={"charged": charge == "run",
                                               "free_baseline": charge == "free_baseline"})
        return self.fail(record, error, status=status)

    def _remove(self, experiment_id: str) -> None:
        # Only what `create` makes: the record and its directory (rmdir refuses anything more).
        directory = self._dir(experiment_id)
        if not directory.is_dir():
            return
        (directory / RECORD).unlink(missing_ok=True)
        directory.rmdir()
        fsync_dir(self.root)

    def save(self, record: ExperimentRecord) -> None:
        """Write `record` atomically (admin-only mode)."""
        directory = self._dir(record.experiment_id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_model(directory / RECORD, record, mode=0o600)

    def store(self, experiment_id: str) -> SampleStore:
        """The sample results of one experiment."""
        return SampleStore(self._dir(experiment_id) / "samples")

    def get(self, experiment_id: str) -> ExperimentRecord | None:
        """One record, or None. A corrupt record is a loud error."""
        path = os.path.join(self._dir(experiment_id), RECORD)
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                version = (info.st_ino, info.st_mtime_ns, info.st_size)  # a rename brings a new inode
                cached = self._parsed.get(experiment_id)
                if cached is not None and cached[0] == version:
                    return cached[1]
                raw = handle.read()
        except FileNotFoundError:
            self._parsed.pop(experiment_id, None)
            return None
        record = parse_model(raw, ExperimentRecord, what="experiment record", where=str(path), problem="corrupt",
                             fix="inspect or restore the file; records are never rewritten silently")
        self._parsed[experiment_id] = (version, record)
        return record

    def all(self) -> list[ExperimentRecord]:
        """Every record, oldest first."""
        try:
            with os.scandir(self.root) as entries:
                names = [entry.name for entry in entries if _ID.fullmatch(entry.name)]
        except FileNotFoundError:
            return []
        # A directory without record.json (a crash between mkdir and the first write) gives None.
        records = [record for record in map(self.get, names) if record is not None]
        return sorted(records, key=lambda r: (r.created_at, r.experiment_id))

    def _remove_unwritten(self) -> None:
        """Remove what writes cut short by a crash left: temp files of atomic writes, and the
        directories of records whose first write never landed (no record.json)."""
        if not self.root.is_dir():
            return
        for child in sorted(self.root.iterdir()):
            if not (_ID.fullmatch(child.name) and child.is_dir()):
                continue
            remove_unfinished_writes(child)
            remove_unfinished_writes(child / "samples")
            if not (child / RECORD).exists():
                try:
                    self._remove(child.name)
                except OSError as exc:  # not only create's files in it: leave it to the admin
                    log.warning("left %s in place: %s", child, exc.strerror)

    def finish(self, record: ExperimentRecord, results: list[SampleResult]) -> ExperimentRecord:
        """Mark `record` done with the aggregate of `results`."""
        done = record.model_copy(update={"status": "done", "finished_at": time.time(),
                                         "aggregate": aggregate(results)})
        self.save(done)
        return done

    def fail(self, record: ExperimentRecord, error: str,
             status: ExperimentStatus = "failed") -> ExperimentRecord:
        """Mark `record` failed (or interrupted) with the aggregate of whatever finished."""
        partial = self.partial_aggregate(record)
        failed = record.model_copy(update={"status": status, "finished_at": time.time(),
                                           "aggregate": partial, "error": error})
        self.save(failed)
        return failed

    def partial_aggregate(self, record: ExperimentRecord) -> Aggregate:
        """Aggregate over the requested samples; a sample without a stored result is an error."""
        store = self.store(record.experiment_id)
        results = []
        for sample_id in record.sample_ids:
            stored = store.get(sample_id)
            results.append(stored if stored is not None else SampleResult(
                sample_id=sample_id, split=record.split, commit=record.commit, error="never finished",
                started_at=record.created_at, duration_s=0.0))
        return aggregate(results)

    def recover(self, charges: Mapping[str, ChargeKind] | None = None) -> list[str]:
        """Settle what a killed process left (call at start); return the ids it settled.

        `charges` are the experiments the ledger paid for (`Ledger.charges()`). A `running`
        record becomes `interrupted`; so does a `pending` one the ledger paid for (with the
        charge it got); a `pending` one the ledger never paid for is removed; one whose charge
        the ledger released (the stop came between the release and the record) becomes `failed`.
        """
        charges = charges or {}
        with self._lock:
            self._remove_unwritten()
            recovered = []
            for record in self.all():
                if record.status not in ("pending", "running"):
                    continue
                charge = charges.get(record.experiment_id)
                when = "before this evaluation started" if record.status == "pending" else \
                    "during this evaluation"
                error = f"the sidecar stopped {when}"
                if charge == "released":
                    error = "it could not run: its run produced nothing (the budget was given back)"
                if self.settle(record, error, status="interrupted", charge=charge) is None:
                    log.warning("removed experiment %s: the sidecar stopped before it was paid for",
                                record.experiment_id)
                else:
                    recovered.append(record.experiment_id)
            return recovered
