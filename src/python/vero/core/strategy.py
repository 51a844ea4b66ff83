"""The seam between the evaluation engine and how a candidate is actually scored.

Mode A (vero runs the candidate's entrypoint and a trusted scorer) and Mode B (a nested
`harbor run` per evaluation) both implement `EvaluationStrategy`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import JsonValue

from vero.core.confine import Confinement
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


@dataclass(frozen=True)
class Evaluation:
    """What one `evaluate` call produced: one result per requested sample, in request order.

    A strategy with more to say about its own run (Mode B: the harbor job, adopted and reaped
    runs) returns a subclass; each call gets its own, so concurrent evaluations never mix them.
    """

    samples: list[SampleResult]


@dataclass(frozen=True)
class StrategyEnv:
    """What the sidecar gives every strategy it builds (`build_strategy(section, catalog, env)` of
    `vero.core.mode_a` and `vero.modeb.strategy`): how candidate processes are confined, the
    declared secrets' values, its scratch and admin directories, and the concurrency and
    per-evaluation timeout of serve.json."""

    confinement: Confinement
    secret_env: Mapping[str, str]
    work_dir: Path
    admin_dir: Path
    max_concurrency: int
    evaluation_timeout: float | None


class EvaluationStrategy(Protocol):
    """Scores a candidate commit; the sidecar's engine runs every evaluation through one."""

    def evaluate(self, context: EvaluationContext) -> Evaluation:
        """Run and score every pending sample of `context`, resuming from its store."""
        ...

    def agent_inputs(self, split: str, sample_ids: Sequence[str]) -> dict[str, JsonValue] | None:
        """What the candidate saw of each sample, shown with a viewable split's results; None when
        a sample has no input to show (Mode B: a sample is a whole Harbor task)."""
        ...

    def stop(self) -> None:
        """Kill running candidates and start nothing new; safe in a signal handler."""
        ...

    def close(self) -> None:
        """Stop, then release the strategy's resources."""
        ...
