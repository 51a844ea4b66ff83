"""Experiment records: one per evaluation, persisted atomically, surviving a restart.

Layout under the database root: `<experiment id>/record.json` (an `ExperimentRecord`) and
`<experiment id>/samples/` (a `SampleStore` with one file per sample). An evaluation that was
running when the process died is marked `interrupted` at the next start, with an aggregate
over what was requested (samples that never finished count as errors).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from vero.core.records import Aggregate, SampleResult, aggregate
from vero.core.sample_store import SampleStore
from vero.errors import VeroError
from vero.fsutil import atomic_write_model
from vero.models import StrictModel

ExperimentStatus = Literal["running", "done", "failed", "interrupted"]
Origin = Literal["agent", "admin"]
RECORD = "record.json"
_ID = re.compile(r"^[0-9]{13}-[0-9a-f]{12}$")


class ExperimentRecord(StrictModel):
    """One evaluation of one commit on some samples of one split."""

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

    def _dir(self, experiment_id: str) -> Path:
        if not _ID.fullmatch(experiment_id):
            raise VeroError(f"invalid experiment id {experiment_id!r}", where=str(self.root))
        return self.root / experiment_id

    def create(self, *, origin: Origin, purpose: str, split: str, dataset_id: str, commit: str,
               requested_ref: str, sample_ids: list[str], full_split: bool, charged: bool,
               free_baseline: bool = False) -> ExperimentRecord:
        """Persist a new `running` record and return it."""
        experiment_id = f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex[:12]}"
        record = ExperimentRecord(experiment_id=experiment_id, origin=origin, purpose=purpose, split=split,
                                  dataset_id=dataset_id, commit=commit, requested_ref=requested_ref,
                                  sample_ids=sample_ids, full_split=full_split, charged=charged,
                                  free_baseline=free_baseline, created_at=time.time())
        self.save(record)
        return record

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
        path = self._dir(experiment_id) / RECORD
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return ExperimentRecord.model_validate_json(raw)
        except ValidationError as exc:
            raise VeroError(f"corrupt experiment record: {exc.errors()[0]['msg']}", where=str(path),
                            fix="inspect or restore the file; records are never rewritten silently") from None

    def all(self) -> list[ExperimentRecord]:
        """Every record, oldest first."""
        if not self.root.is_dir():
            return []
        records = []
        for child in sorted(self.root.iterdir()):
            # A directory without record.json is a crash between mkdir and the first write.
            if _ID.fullmatch(child.name) and (child / RECORD).is_file():
                record = self.get(child.name)
                if record is not None:
                    records.append(record)
        return sorted(records, key=lambda r: (r.created_at, r.experiment_id))

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

    def recover(self) -> list[str]:
        """Mark records left `running` by a killed process as `interrupted`; return their ids."""
        with self._lock:
            recovered = []
            for record in self.all():
                if record.status == "running":
                    self.fail(record, "the sidecar stopped during this evaluation", status="interrupted")
                    recovered.append(record.experiment_id)
            return recovered
