"""Per-sample results and their aggregate: what every evaluation strategy produces."""

from __future__ import annotations

from pydantic import Field, JsonValue

from vero.models import StrictModel


class AttemptCounts(StrictModel):
    """Mode B: how many Harbor trials ran for a task, how many were scored, how many were clean."""

    n_attempts: int = Field(ge=0)
    n_scored: int = Field(ge=0)
    n_clean: int = Field(ge=0)


class SampleResult(StrictModel):
    """The result of one sample for one commit on one split.

    An error sample has `error` set and `score` None; aggregates count it as 0.0. `error` is
    what the optimizer may read (fixed text, an error id); `error_detail` (a traceback, what a
    tool printed) stays on the admin volume.
    """

    sample_id: str
    split: str
    commit: str
    score: float | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    output: JsonValue = None
    error: str | None = None
    error_detail: str | None = None
    started_at: float = Field(description="seconds since the epoch")
    duration_s: float = Field(ge=0.0)
    task_name: str | None = None
    attempts: AttemptCounts | None = None
    attempt_scores: list[float] | None = Field(default=None, description="Mode B: the score of every "
                                               "scored attempt, in trial order")
    warning: str | None = Field(default=None, description="a caveat on a scored sample (e.g. a mean over "
                                                          "fewer attempts than configured)")

    @property
    def ok(self) -> bool:
        """Scored without error: a finished sample that resuming never re-runs."""
        return self.error is None and self.score is not None


class Aggregate(StrictModel):
    """Summary over a set of samples. Errors count as 0.0 in `mean_score` (fail closed)."""

    n_samples: int
    n_scored: int
    n_errors: int
    mean_score: float
    metrics: dict[str, float] = Field(default_factory=dict)


def aggregate(results: list[SampleResult]) -> Aggregate:
    """Mean score over all samples (errors as 0.0) and the mean of each metric where present."""
    n = len(results)
    scored = [r for r in results if r.ok]
    total = sum(r.score for r in scored if r.score is not None)
    metric_values: dict[str, list[float]] = {}
    for result in scored:
        for key, value in result.metrics.items():
            metric_values.setdefault(key, []).append(value)
    return Aggregate(
        n_samples=n,
        n_scored=len(scored),
        n_errors=n - len(scored),
        mean_score=total / n if n else 0.0,
        metrics={key: sum(values) / len(values) for key, values in sorted(metric_values.items())},
    )


def all_errored(results: list[SampleResult]) -> str | None:
    """When every one of `results` (at least one) errored, a line saying so with the first error;
    else None. For the task's owner (finalize report, logs): errors may quote candidate output."""
    if not results or any(r.ok for r in results):
        return None
    first = results[0]
    return f"every sample errored ({len(results)} of {len(results)}); first, {first.sample_id!r}: {_cause(first)}"


def _cause(result: SampleResult) -> str:
    """The error's own words (the detail, which only the owner sees), else its fixed text."""
    lines = [line.strip() for line in (result.error_detail or "").strip().splitlines() if line.strip()]
    if lines:
        return (lines[-1] if lines[0].startswith("Traceback") else lines[0])[:300]
    return ((result.error or "").strip().splitlines() or ["no score"])[0][:300]
