"""The engine's rules: sample resolution, gate before ledger, k floor, admin bypass, free baseline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mode_a import (
    BASELINE_AGENT,
    ENTRYPOINT,
    IMPROVED_AGENT,
    LABEL_FIELDS,
    PARTIAL_AGENT,
    ModeABench,
    commit_agent,
    git,
    make_mode_a_bench,
    shared_tmp,
)
from vero.baseline import restore_baseline
from vero.core.benchmark import Budget, SplitAccess
from vero.core.confine import unconfined
from vero.core.datasets import load_mode_a_dataset
from vero.core.engine import IMPORT_SLOTS, Engine, EvalRequest
from vero.core.experiments import ExperimentDB
from vero.core.gitops import TrustedRepo
from vero.core.ledger import Ledger
from vero.core.mode_a import ModeAStrategy
from vero.core.rejections import BadInput, BudgetExceeded, Forbidden, UnknownSplit
from vero.core.scorer_pool import ScorerPool
from vero.core.tiers import TierPolicy

SPLITS = [SplitAccess(split="train", access="viewable"),
          SplitAccess(split="validation", access="non_viewable")]
BUDGETS = [Budget(split="train", total_run_budget=3), Budget(split="validation", total_sample_budget=16)]


@dataclass
class Setup:
    bench: ModeABench
    engine: Engine
    admin: Path

    def reopen(self) -> Engine:
        return _engine(self.bench, self.admin, self.engine.work_dir)


def _engine(bench: ModeABench, admin: Path, work: Path) -> Engine:
    dataset = load_mode_a_dataset(bench.dataset_dir)
    strategy = ModeAStrategy(dataset, entrypoint=ENTRYPOINT, label_fields=LABEL_FIELDS,
                             scorer=ScorerPool(bench.scorer, workers=2, timeout=20), sample_timeout=20,
                             max_concurrency=2, confinement=unconfined(), scratch_dir=work)
    if not (admin / "repo").exists():
        restore_baseline(bench.baseline_dir, admin / "repo")
    return Engine(catalog=dataset, policy=TierPolicy(SPLITS, k_anonymity_floor=5),
                  ledger=Ledger(admin / "ledger.json", BUDGETS), db=ExperimentDB(admin / "experiments"),
                  strategy=strategy, repo=TrustedRepo(admin / "repo"), agent_repo=bench.agent_repo,
                  work_dir=work, baseline_commit=bench.baseline_commit)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    bench = make_mode_a_bench(tmp_path / "bench", {"train": 8, "validation": 8, "test": 6, "tiny": 3})
    with shared_tmp() as work:
        engine = _engine(bench, tmp_path / "admin", work)
        yield Setup(bench=bench, engine=engine, admin=tmp_path / "admin")
        engine.strategy.close()


def _spent(setup: Setup, split: str) -> tuple[int, int]:
    remaining = setup.engine.ledger.remaining(split, setup.engine.catalog.dataset_id)
    return remaining.runs_used, remaining.samples_used


def test_sample_resolution(setup: Setup) -> None:
    engine = setup.engine
    assert engine.resolve_samples("train", None, 3) == (["train-0", "train-1", "train-2"], False)
    assert engine.resolve_samples("train", None, 8)[1] is True
    assert engine.resolve_samples("train", ["train-5", "train-1"], None) == (["train-5", "train-1"], False)
    assert engine.resolve_samples("tiny", None, None) == (["tiny-0", "tiny-1", "tiny-2"], True)
    for ids, num, message in [(["train-0"], 1, "not both"), (None, 0, "out of range"),
                              (None, 9, "out of range"), (["train-99"], None, "not in split"),
                              ([], None, "empty"),
                              (["train-1", "train-1"], None, "duplicates")]:
        with pytest.raises(BadInput, match=message):
            engine.resolve_samples("train", ids, num)
    with pytest.raises(UnknownSplit, match="unknown split"):
        engine.resolve_samples("nope", None, None)


def test_rejections_cost_nothing(setup: Setup) -> None:
    engine = setup.engine
    commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    rejected = [
        (EvalRequest(split="test"), Forbidden),                        # unlisted split: no_access
        (EvalRequest(split="tiny", num_samples=1), Forbidden),         # unlisted too
        (EvalRequest(split="validation", num_samples=4), Forbidden),   # below the k floor
        (EvalRequest(split="train", commit="--upload-pack=x"), BadInput),
        (EvalRequest(split="train", commit="no-such-branch"), BadInput),
        (EvalRequest(split="train", dataset_id="0" * 64), UnknownSplit),
        (EvalRequest(split="train", num_samples=2, sample_ids=["train-0"]), BadInput),
    ]
    for request, error in rejected:
        with pytest.raises(error):
            engine.evaluate(request)
    assert _spent(setup, "train") == (0, 0) and _spent(setup, "validation") == (0, 0)
    assert engine.db.all() == []


def test_gate_comes_before_the_budget(setup: Setup) -> None:
    engine = setup.engine
    commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    for _ in range(3):
        engine.evaluate(EvalRequest(split="train", num_samples=1))
    with pytest.raises(BudgetExceeded):
        engine.evaluate(EvalRequest(split="train", num_samples=1))
    engine.ledger.reserve("validation", engine.catalog.dataset_id, 16)
    # With the budget gone, a gated request still reports the gate, not the budget.
    with pytest.raises(Forbidden):
        engine.evaluate(EvalRequest(split="validation", num_samples=2))


def test_scores_and_records(setup: Setup) -> None:
    engine = setup.engine
    improved = commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    outcome = engine.evaluate(EvalRequest(split="validation", num_samples=5))
    assert outcome.record.commit == improved and outcome.record.requested_ref == "HEAD"
    assert outcome.record.charged and not outcome.record.free_baseline
    assert outcome.record.aggregate is not None and outcome.record.aggregate.mean_score == 1.0
    assert outcome.tier == "non_viewable"
    assert outcome.remaining is not None and outcome.remaining.samples_remaining == 11
    partial = commit_agent(setup.bench.agent_repo, PARTIAL_AGENT)
    # The whole validation split minus the first 5 would isolate the last 3 samples' sum.
    with pytest.raises(Forbidden, match="single out a group of 3"):
        engine.evaluate(EvalRequest(split="validation", commit=partial))
    second = engine.evaluate(EvalRequest(split="train", commit=partial))
    assert second.record.aggregate is not None and second.record.aggregate.mean_score == 0.5
    assert second.record.full_split
    stored = engine.db.store(second.record.experiment_id).all()
    assert len(stored) == 8 and {r.commit for r in stored} == {partial}


def test_free_baseline_once_per_split_and_still_gated(setup: Setup) -> None:
    engine = setup.engine
    baseline = setup.bench.baseline_commit
    with pytest.raises(Forbidden):
        engine.evaluate(EvalRequest(split="test", commit=baseline))
    first = engine.evaluate(EvalRequest(split="train", commit=baseline))
    assert first.record.free_baseline and not first.record.charged
    assert first.record.aggregate is not None and first.record.aggregate.mean_score == 0.0
    assert _spent(setup, "train") == (0, 0)
    assert first.remaining is not None and not first.remaining.free_baseline_available
    second = engine.evaluate(EvalRequest(split="train", commit=baseline, num_samples=1))
    assert second.record.charged and _spent(setup, "train") == (1, 1)
    # The free evaluation survives a restart as used.
    assert not setup.reopen().ledger.remaining("train", engine.catalog.dataset_id).free_baseline_available


def test_admin_bypasses_gate_and_budget(setup: Setup) -> None:
    engine = setup.engine
    commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    engine.ledger.reserve("train", engine.catalog.dataset_id, 1)
    engine.ledger.reserve("train", engine.catalog.dataset_id, 1)
    engine.ledger.reserve("train", engine.catalog.dataset_id, 1)
    for request in (EvalRequest(split="test"), EvalRequest(split="tiny", num_samples=1),
                    EvalRequest(split="train"), EvalRequest(split="validation", num_samples=2)):
        outcome = engine.evaluate(request, origin="admin", purpose="target")
        assert outcome.record.origin == "admin" and not outcome.record.charged
        assert outcome.remaining is None
        assert outcome.record.aggregate is not None and outcome.record.aggregate.mean_score == 1.0
    assert _spent(setup, "train") == (3, 3)


def test_records_survive_restart(setup: Setup) -> None:
    commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    outcome = setup.engine.evaluate(EvalRequest(split="train", num_samples=2))
    reopened = setup.reopen()
    records = reopened.db.all()
    assert [r.experiment_id for r in records] == [outcome.record.experiment_id]
    assert records[0].status == "done"
    assert _spent(setup, "train") == (1, 2)
    status = reopened.split_status("train")
    assert status.evaluable and status.budget is not None and status.budget.runs_remaining == 2
    assert reopened.split_status("test").budget is None and not reopened.split_status("test").evaluable


def _validation(*indexes: int) -> EvalRequest:
    return EvalRequest(split="validation", sample_ids=[f"validation-{i}" for i in indexes])


def test_differencing_counts_the_evaluations_of_an_earlier_process(setup: Setup) -> None:
    commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    setup.engine.evaluate(_validation(0, 1, 2, 3, 4))
    reopened = setup.reopen()
    with pytest.raises(Forbidden, match="single out a group of 1"):
        reopened.evaluate(_validation(0, 1, 2, 3, 4, 5))
    assert reopened.evaluate(_validation(4, 3, 2, 1, 0)).record.status == "done"


def test_a_request_the_budget_refused_is_no_earlier_evaluation(setup: Setup) -> None:
    """Its pending record took part in the differencing check, then was removed: the sample set
    it named was never shown, so it must not narrow what later requests may ask."""
    engine = setup.engine
    commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    engine.ledger.reserve("validation", engine.catalog.dataset_id, 10)  # 6 samples left
    with pytest.raises(BudgetExceeded):
        engine.evaluate(_validation(0, 1, 2, 3, 4, 5, 6))
    assert engine.db.all() == []
    assert engine.evaluate(_validation(1, 2, 3, 4, 5, 6)).record.status == "done"


def test_split_status_reports_exhausted_budgets(setup: Setup) -> None:
    engine = setup.engine
    for _ in range(3):
        engine.ledger.reserve("train", engine.catalog.dataset_id, 1)
    status = engine.split_status("train")
    assert status.evaluable  # the free baseline evaluation is still available
    engine.ledger.claim_free_baseline("train", engine.catalog.dataset_id)
    assert not engine.split_status("train").evaluable
    assert engine.split_status("validation").tier == "non_viewable"


def test_read_only_paths_are_enforced_on_commits(setup: Setup) -> None:
    engine, bench = setup.engine, setup.bench
    engine.read_only_paths = ("agent.py", "*.md")
    changed = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    with pytest.raises(Forbidden, match=r"changes read-only path\(s\): agent.py"):
        engine.evaluate(EvalRequest(split="train", commit=changed))
    assert _spent(setup, "train") == (0, 0)
    # Back to the baseline's agent.py, plus a new file: allowed. Paths are literal, not globs.
    (bench.agent_repo / "agent.py").write_text(BASELINE_AGENT)
    (bench.agent_repo / "notes.md").write_text("notes\n")
    git(bench.agent_repo, "add", "agent.py", "notes.md")
    git(bench.agent_repo, "commit", "-q", "--no-verify", "-m", "revert, add notes")
    outcome = engine.evaluate(EvalRequest(split="train"))
    assert outcome.record.status == "done"
    # Admin evaluations (finalize's re-scores) are not refused by the check.
    assert engine.evaluate(EvalRequest(split="train", commit=changed), origin="admin").record.status == "done"


def test_at_most_import_slots_evaluations_import_at_once(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst of evaluations imports and admits IMPORT_SLOTS at a time, so they do not all take
    turns at the GIL with the server's event loop. Each import is held 0.2 s (the only injected
    delay) so that, without the bound, all of them would overlap."""
    engine = setup.engine
    real_import = engine.repo.import_commit
    lock = threading.Lock()
    inside = 0
    most = 0

    def slow_import(source: Path, ref: str) -> str:
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.2)
            return real_import(source, ref)
        finally:
            with lock:
                inside -= 1

    monkeypatch.setattr(engine.repo, "import_commit", slow_import)
    commit_agent(setup.bench.agent_repo, IMPROVED_AGENT)
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(lambda _: engine.evaluate(EvalRequest(split="train", num_samples=1), origin="admin"),
                                 range(6)))
    assert [o.record.aggregate.mean_score for o in outcomes if o.record.aggregate] == [1.0] * 6
    assert most == IMPORT_SLOTS
