"""The build's dry run: the baseline on a few rows, through the sidecar's own Mode A strategy.

`run_mode_a_samples` is the one place the compiler touches `vero.core.mode_a`: the strategy runs
each sample as the sidecar does (a fresh interpreter per row, labels stripped, rlimits, output
limits, timeouts, the scorer in a worker process), only without a harness user or a pid
namespace, as the build host's own user. A failed sample's `error_detail` holds what the
candidate or the scorer said (the build owner may read it all).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from vero.core.confine import Confinement
from vero.core.datasets import ModeADataset
from vero.core.limits import CandidateLimits
from vero.core.mode_a import ModeAStrategy
from vero.core.records import SampleResult
from vero.core.sample_store import SampleStore
from vero.core.scorer_pool import ScorerPool
from vero.core.strategy import EvaluationContext

# Not a commit of any repo: the dry run evaluates the exported baseline files directly.
DRY_RUN_COMMIT = "0" * 40


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Keep the strategy's log records (a scorer traceback) off the build's stderr: the caller
    reports what failed in one message."""
    logger = logging.getLogger(logger_name)
    sink = logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(sink)
    logger.propagate = False
    try:
        yield
    finally:
        logger.propagate = propagate
        logger.removeHandler(sink)


def run_mode_a_samples(*, baseline: Path, dataset: ModeADataset, split: str, sample_ids: Sequence[str],
                       entrypoint: str, label_fields: Sequence[str], scorer: Path, limits: CandidateLimits,
                       sample_timeout: float, python: str, scratch: Path) -> list[SampleResult]:
    """Run and score `sample_ids` of `split` on the baseline files at `baseline` (a directory the
    candidate may write to); `scratch` is an empty directory for the strategy's own files."""
    work = scratch / "work"
    work.mkdir()
    strategy = ModeAStrategy(dataset, entrypoint=entrypoint, label_fields=label_fields,
                             scorer=ScorerPool(scorer, workers=1, timeout=limits.scorer_timeout),
                             sample_timeout=sample_timeout, max_concurrency=max(1, len(sample_ids)),
                             confinement=Confinement(user=None, limits=limits, namespaces=False), python=python,
                             scratch_dir=work)
    try:
        with _quiet("vero.core"):
            return strategy.evaluate(EvaluationContext(
                commit=DRY_RUN_COMMIT, split=split, worktree=baseline, sample_ids=list(sample_ids),
                store=SampleStore(scratch / "samples"))).samples
    finally:
        strategy.close()
