"""Checks the drills share: the admin volume read straight from disk, and its invariants."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.sidecar import Sidecar


@dataclass(frozen=True)
class AdminState:
    """The ledger and every experiment record, parsed (a corrupt file fails the parse)."""

    ledger: dict[str, Any]
    records: dict[str, dict[str, Any]]

    def entry(self, split: str) -> dict[str, Any]:
        """The ledger entry of `split` (zeroed when the split never spent anything)."""
        for entry in self.ledger["entries"]:
            if entry["split"] == split:
                return dict(entry)
        return {"split": split, "runs_used": 0, "samples_used": 0, "free_baseline_used": False,
                "charged_experiments": [], "free_baseline_experiment": None, "released_experiments": []}


def read_admin(admin_dir: Path) -> AdminState:
    """Parse ledger.json and experiments/*/record.json."""
    ledger_path = admin_dir / "ledger.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.exists() else {"version": 1, "entries": []}
    records = {}
    for path in sorted((admin_dir / "experiments").glob("*/record.json")):
        record = json.loads(path.read_text())
        assert record["experiment_id"] == path.parent.name
        records[record["experiment_id"]] = record
    return AdminState(ledger=ledger, records=records)


def assert_consistent(admin_dir: Path, *, settled: bool = True) -> AdminState:
    """Nothing lost, nothing double-counted: every unit the ledger spent belongs to exactly one
    charged record and every charged record was paid exactly once. A released charge (an
    evaluation that could not run at all) belongs to exactly one record that is failed,
    uncharged and marked released, and scored nothing (so it disclosed nothing); it is never
    also charged. With `settled`, no record is left pending or running (the sidecar is idle or
    was restarted)."""
    state = read_admin(admin_dir)
    paid: list[str] = []
    released: list[str] = []
    for entry in state.ledger["entries"]:
        ids = entry["charged_experiments"]
        assert entry["runs_used"] == len(ids), entry
        charged = [state.records[i] for i in ids]  # KeyError: a paid run without a record
        assert all(r["charged"] and r["split"] == entry["split"] for r in charged), entry
        assert entry["samples_used"] == sum(len(r["sample_ids"]) for r in charged), entry
        paid.extend(ids)
        free = entry["free_baseline_experiment"]
        if free is not None:
            assert entry["free_baseline_used"] and state.records[free]["free_baseline"]
        for i in entry.get("released_experiments", []):
            record = state.records[i]   # KeyError: a release without a record
            assert record["split"] == entry["split"] and record["released"], record
            assert not record["charged"] and not record["free_baseline"], record
            assert record["status"] == "failed" and record["aggregate"]["n_scored"] == 0, record
            released.append(i)
    assert len(paid) == len(set(paid)), "an experiment was charged twice"
    assert len(released) == len(set(released)), "an experiment was released twice"
    assert not set(paid) & set(released), "a released experiment is still charged"
    assert {i for i, r in state.records.items() if r["charged"]} == set(paid)
    assert {i for i, r in state.records.items() if r.get("released")} == set(released)
    free_records = {i for i, r in state.records.items() if r["free_baseline"]}
    assert free_records == {e["free_baseline_experiment"] for e in state.ledger["entries"]} - {None}
    if settled:
        assert not [r for r in state.records.values() if r["status"] in ("pending", "running")]
    return state


def temp_files(directory: Path) -> list[Path]:
    """Temp files of atomic writes (`.<name>.<random>.tmp`) left under `directory`."""
    return sorted(p for p in directory.rglob(".*.tmp") if p.is_file())


def eval_in_background(sidecar: Sidecar, body: dict[str, Any]) -> tuple[threading.Thread, list[Any]]:
    """POST /eval from a thread; the list receives the response or the transport error."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(httpx.post(sidecar.url + "/eval", json=body, timeout=120))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_for(condition: Callable[[], bool], what: str, sidecar: Sidecar, timeout: float = 60) -> None:
    """Poll `condition` until it holds; fail with the sidecar log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}:\n{sidecar.log_text()[-3000:]}")


def stored_samples(admin_dir: Path, *, origin: str | None = None, split: str | None = None) -> int:
    """How many sample results the experiments (of `origin` on `split`) have stored."""
    state = read_admin(admin_dir)
    return sum(len(list((admin_dir / "experiments" / i / "samples").glob("*.json")))
               for i, r in state.records.items()
               if (origin is None or r["origin"] == origin) and (split is None or r["split"] == split))
