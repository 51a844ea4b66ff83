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
