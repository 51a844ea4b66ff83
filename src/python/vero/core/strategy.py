"""The seam between the evaluation engine and how a candidate is actually scored.

Mode A (vero runs the candidate's entrypoint and a trusted scorer) and Mode B (a nested
`harbor run` per evaluation) both implement `EvaluationStrategy`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from vero.core.records import SampleResult
from vero.core.sample_store import SampleStore
from vero.errors import VeroError


class EvaluationCancelled(VeroError):
    """The sidecar is shutting down: the evaluation stopped early; finished samples are kept."""


class InfrastructureFailure(VeroError):
    """The evaluation produced nothing to score for a reason outside the candidate (e.g. a nested
    `harbor run` that wrote no trial at all: Docker unreachable, harbor crashing at start).

    Nothing was scored, so nothing can be disclosed: the engine records the evaluation as
    failed, gives its budget back and the caller may retry. `what` is a fixed message that
    may reach the optimizer; `detail` (e.g. harbor's stderr tail) is for the admin log only.
    """

    def __init__(self, what: str, *, detail: str | None = None, where: str | None = None,
                 fix: str | None = "retry the evaluation: nothing was scored or charged") -> None:
        super().__init__(what, where=where, fix=fix, exit_code=3, detail=detail)


@dataclass(frozen=True)
class Progress:
    """Progress of one evaluation: samples finished so far and how many of them passed."""

    total: int
    done: int
    passing: int


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class EvaluationContext:
    """What a strategy needs to score one commit on some samples of one split.

    `worktree` is a clean checkout of `commit`, readable by the unprivileged harness user.
    Samples already finished cleanly in `store` must not run again; every new result must be
    put into `store` as soon as it is known.
    """

    commit: str
    split: str
    worktree: Path
    sample_ids: Sequence[str]
    store: SampleStore
    progress: ProgressCallback | None = None


class EvaluationStrategy(Protocol):
    """Scores a candidate commit; returns one result per requested sample, in request order."""

    def evaluate(self, context: EvaluationContext) -> list[SampleResult]:
        """Run and score every pending sample of `context`, resuming from its store."""
        ...
