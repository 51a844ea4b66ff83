"""Experiment records survive a restart; a killed evaluation is marked interrupted."""

from __future__ import annotations

from pathlib import Path

import pytest

from vero.core.experiments import ExperimentDB
from vero.core.records import SampleResult
from vero.errors import VeroError


def _create(db: ExperimentDB, split: str = "train") -> str:
    return db.create(origin="agent", purpose="eval", split=split, dataset_id="d" * 64, commit="c" * 40,
                     requested_ref="main", sample_ids=["a", "b", "c"], full_split=True,
                     charged=True).experiment_id


def _result(sample_id: str, score: float | None, error: str | None = None) -> SampleResult:
    return SampleResult(sample_id=sample_id, split="train", commit="c" * 40, score=score, error=error,
                        started_at=0.0, duration_s=0.0)


def test_records_survive_restart_in_creation_order(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path)
    first = _create(db)
    second = _create(db, "val")
    record = db.get(first)
    assert record is not None
    db.finish(record, [_result("a", 1.0), _result("b", 0.0), _result("c", None, "boom")])
    reopened = ExperimentDB(tmp_path)
    records = reopened.all()
    assert [r.experiment_id for r in records] == [first, second]
    assert records[0].status == "done" and records[0].aggregate is not None
    assert records[0].aggregate.mean_score == pytest.approx(1 / 3)
    assert records[0].aggregate.n_errors == 1
    assert records[1].status == "running"
    assert oct((tmp_path / first / "record.json").stat().st_mode & 0o777) == "0o600"


def test_recover_marks_running_records_interrupted(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path)
    running = _create(db)
    db.store(running).put(_result("a", 1.0))
    (tmp_path / "0000000000000-000000000000").mkdir()  # crash between mkdir and the first write
    assert ExperimentDB(tmp_path).recover() == [running]
    record = ExperimentDB(tmp_path).get(running)
    assert record is not None and record.status == "interrupted"
    assert record.aggregate is not None
    assert (record.aggregate.n_samples, record.aggregate.n_scored) == (3, 1)
    assert ExperimentDB(tmp_path).recover() == []


def test_corrupt_record_is_loud(tmp_path: Path) -> None:
    db = ExperimentDB(tmp_path)
    experiment = _create(db)
    (tmp_path / experiment / "record.json").write_text("{")
    with pytest.raises(VeroError, match="corrupt experiment record"):
        db.all()
    with pytest.raises(VeroError, match="invalid experiment id"):
        db.get("../x")
