"""The eval sidecar's HTTP API as models: what `vero.serve.app` reads and answers, and what
`vero.serve.client` (`vero harbor eval|status|submit|finalize`) sends and parses the answers into.

| endpoint | request body | reply |
|---|---|---|
| `GET /health` | | `Health` |
| `GET /status` | | `StatusResponse` |
| `POST /eval` | `EvalRequest` (the engine's own request, `vero.core.engine`) | `EvalResponse` |
| `POST /submit` | `SubmitRequest` | `Submission` |
| `POST /finalize` (admin token) | | `FinalizeReport` |
| `GET /experiments` (admin token) | | a list of `ExperimentRecord` (`vero.core.experiments`) |
| `GET /session` (admin token) | | the session archive (`application/gzip`) |

Every refusal or failure answers an `ErrorReply`. `Submission` and `FinalizeReport` are also
what the sidecar keeps on its admin volume (and the session archive carries).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vero.core.benchmark import AccessTier, RewardMode
from vero.core.engine import SplitStatus
from vero.core.ledger import Remaining
from vero.core.records import Aggregate
from vero.models import StrictModel

FinalizeSource = Literal["submission", "auto_best", "none"]


class ErrorReply(StrictModel):
    """The body of every 4xx/5xx reply: what went wrong and, when known, how to fix it."""

    error: str
    fix: str | None = None


class Health(StrictModel):
    """What GET /health returns while the sidecar serves."""

    status: Literal["ok"]


class SubmitRequest(StrictModel):
    """Body of POST /submit; the default commit is HEAD of the agent repo."""

    commit: str | None = None


class Submission(StrictModel):
    """The optimizer's nominated commit: the reply of POST /submit, kept on the admin volume."""

    commit: str
    requested_ref: str
    submitted_at: float


class EvalResponse(StrictModel):
    """What POST /eval returns: an aggregate, never per-sample data. `all_errored` marks an
    evaluation that scored nothing because every sample failed; `warning` says so in words."""

    experiment_id: str
    split: str
    commit: str
    tier: AccessTier
    aggregate: Aggregate
    free_baseline: bool
    remaining: Remaining | None
    results_dir: str | None
    all_errored: bool = False
    warning: str | None = None


class StatusResponse(StrictModel):
    """What GET /status returns."""

    name: str
    mode: str
    dataset_id: str
    baseline_commit: str
    reward_mode: RewardMode
    selection_split: str
    submit_enabled: bool
    submission: str | None
    k_anonymity_floor: int
    free_baseline_available: bool
    splits: list[SplitStatus]


class RankedCandidate(StrictModel):
    """One auto_best candidate: its best optimizer score and its trusted re-score."""

    commit: str
    selection_score: float
    first_evaluated_at: float
    trusted_score: float | None = None
    error: str | None = None


class FinalizeReport(StrictModel):
    """The outcome of finalize: the reply of POST /finalize, also kept on the admin volume."""

    rewards: dict[str, float]
    target_errors: dict[str, str] = Field(default_factory=dict,
                                          description="reward key -> why its reward is a 0.0 floor")
    candidate: str | None
    source: FinalizeSource
    baseline: dict[str, float] | None = None
    ranking: list[RankedCandidate]
    errors: list[str]
    finished_at: float


