"""Admission cost of an optimizer evaluation as its history grows.

Admission is what the engine does between the checks and the strategy: scan the split's
earlier evaluations for differencing, write a pending record, spend (naming the record),
mark it running. It replaced a plain spend-then-record, which is measured in the same run as
the baseline; a whole 1-sample Mode A evaluation through the engine gives the scale. Each
figure is the median over `--repeats`, with `--records` earlier evaluations (100-sample
subsets of a 1000-sample non_viewable split) already on disk, each paid for in the ledger.

    ./pants run bench/admission_overhead.py -- --records 0 100 1000 --repeats 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.results import record
from tests.support.mode_a import (
    ENTRYPOINT,
    IMPROVED_AGENT,
    LABEL_FIELDS,
    commit_agent,
    make_mode_a_bench,
    shared_tmp,
)
from vero.baseline import restore_baseline
from vero.core.benchmark import Budget, SplitAccess
from vero.core.confine import Confinement, resolve_user
from vero.core.datasets import load_mode_a_dataset
from vero.core.engine import Engine, EvalRequest
from vero.core.experiments import ExperimentDB, ExperimentRecord
from vero.core.gitops import TrustedRepo
from vero.core.ledger import Ledger
from vero.core.limits import CandidateLimits
from vero.core.mode_a import ModeAStrategy
from vero.core.scorer_pool import ScorerPool
from vero.core.tiers import TierPolicy

SPLIT, SIZE, BLOCK = "validation", 1000, 100


def median_ms(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of `action` in milliseconds."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def measure(root: Path, work: Path, n_records: int, repeats: int) -> tuple[float, float, float]:
    """(plain, admission, 1-sample evaluation) medians in ms with `n_records` on disk."""
    bench = make_mode_a_bench(root / "bench", {SPLIT: SIZE})
    commit = commit_agent(bench.agent_repo, IMPROVED_AGENT)
    dataset = load_mode_a_dataset(bench.dataset_dir)
    ids = dataset.sample_ids(SPLIT)
    blocks = [ids[i:i + BLOCK] for i in range(0, SIZE, BLOCK)]
    restore_baseline(bench.baseline_dir, root / "admin" / "repo")
    repo = TrustedRepo(root / "admin" / "repo")
    repo.import_commit(bench.agent_repo, commit)
    ledger = Ledger(root / "admin" / "ledger.json", [Budget(split=SPLIT, total_sample_budget=10**9)])
    db = ExperimentDB(root / "admin" / "experiments")
    user = resolve_user("nobody" if os.geteuid() == 0 else None)
    confinement = Confinement(user=user, limits=CandidateLimits(), namespaces=user is not None)
    strategy = ModeAStrategy(dataset, entrypoint=ENTRYPOINT, label_fields=LABEL_FIELDS,
                             scorer=ScorerPool(bench.scorer, workers=1, timeout=60), sample_timeout=60,
                             max_concurrency=1, confinement=confinement, scratch_dir=work)
    policy = TierPolicy([SplitAccess(split=SPLIT, access="non_viewable")], k_anonymity_floor=5)
    engine = Engine(catalog=dataset, policy=policy, ledger=ledger, db=db, strategy=strategy, repo=repo,
                    agent_repo=bench.agent_repo, work_dir=work, baseline_commit=bench.baseline_commit)

    def record(sample_ids: list[str]) -> ExperimentRecord:
        return db.create(origin="agent", purpose="eval", split=SPLIT, dataset_id=dataset.dataset_id,
                         commit=commit, requested_ref="HEAD", sample_ids=sample_ids, full_split=False,
                         charged=True)

    for index in range(n_records):  # each earlier evaluation was paid: the ledger names it too
        earlier = record(blocks[index % len(blocks)])
        ledger.reserve(SPLIT, dataset.dataset_id, BLOCK, earlier.experiment_id)
        db.finish(earlier, [])

    def plain() -> None:
        ledger.reserve(SPLIT, dataset.dataset_id, BLOCK)
        record(blocks[0])

    def admit() -> None:
        engine._admit(purpose="eval", split=SPLIT, dataset_id=dataset.dataset_id, commit=commit, ref="HEAD",
                      sample_ids=blocks[0], full=False)

    def evaluate() -> None:
        engine.evaluate(EvalRequest(split=SPLIT, commit=commit, sample_ids=[ids[0]]), origin="admin")

    try:
        return median_ms(plain, repeats), median_ms(admit, repeats), median_ms(evaluate, max(3, repeats // 5))
    finally:
        strategy.close()


def main() -> None:
    """Measure and print one row per history size."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, nargs="+", default=[0, 100, 1000])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    print(f"{'records':>8} {'plain ms':>9} {'admit ms':>9} {'admit/plain':>12} {'1-sample eval ms':>17} "
          f"{'admit/eval':>11}")
    for n_records in args.records:
        with tempfile.TemporaryDirectory(prefix="vero-admission-") as scratch, shared_tmp() as work:
            plain_ms, admit_ms, eval_ms = measure(Path(scratch), work, n_records, args.repeats)
        print(f"{n_records:>8} {plain_ms:>9.2f} {admit_ms:>9.2f} {admit_ms / plain_ms:>12.2f} "
              f"{eval_ms:>17.1f} {admit_ms / eval_ms:>11.3f}")
        record("admission_overhead", f"admission vs a 1-sample eval, {n_records} earlier records",
               admit_ms / eval_ms, f"{admit_ms:.1f} vs {eval_ms:.1f} ms")


if __name__ == "__main__":
    main()
