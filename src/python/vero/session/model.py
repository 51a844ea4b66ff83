"""The session archive's members, as Pydantic models (every JSON member is read back through one).

Layout of `session.tar.gz` (schema version 1):

| member | model | present |
|---|---|---|
| `session.json` | `Manifest`: schema version, producer, sha256 and size of every other member | always |
| `task.json` | `TaskIdentity`: name, mode, task digest, baseline commit, vero version | always |
| `serve.json` | `ServeConfig` (the sidecar's; secret *names* only) | sidecar sessions |
| `benchmark.json` | `RunnerBenchmark` (HarborConfig and partition) | runner sessions |
| `commits.json` | `list[CommitEntry]`: every commit of the session and its roles | always |
| `repo.bundle` | a git bundle with one ref per commit of `commits.json` | always |
| `evaluations/<id>.json` | `Evaluation`: the record, its per-sample results, who asked | one per evaluation |
| `ledger.json` | `LedgerState` | once anything was spent |
| `submission.json` | `Submission` | after a submit |
| `finalize.json` | `FinalizeReport` | after finalize |
| `baseline.json` | `BaselineScores` | after finalize with `score_baseline` |
| `incidents.jsonl` | one `Incident` per line | once a detail was withheld |
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import Field

from vero.core.benchmark import FullSha
from vero.core.experiments import ExperimentRecord
from vero.core.records import SampleResult
from vero.modeb.config import HarborConfig
from vero.models import StrictModel

SCHEMA_VERSION: Final = 1
FORMAT: Final = "vero-session"

MANIFEST = "session.json"
TASK = "task.json"
SERVE_CONFIG = "serve.json"
BENCHMARK = "benchmark.json"
COMMITS = "commits.json"
BUNDLE = "repo.bundle"
LEDGER = "ledger.json"
SUBMISSION = "submission.json"
FINALIZE = "finalize.json"
BASELINE = "baseline.json"
INCIDENTS = "incidents.jsonl"
EVALUATIONS_DIR = "evaluations/"

Producer = Literal["sidecar", "runner"]
AskedBy = Literal["optimizer", "finalize", "runner"]
CommitRole = Literal["baseline", "evaluated", "submitted"]


class MemberDigest(StrictModel):
    """What the manifest says about one member."""

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class Manifest(StrictModel):
    """`session.json`: the archive's table of contents. It carries no time of its own, so the same
    session always gives the same bytes."""

    schema_version: Literal[1] = SCHEMA_VERSION
    format: Literal["vero-session"] = FORMAT
    producer: Producer
    members: dict[str, MemberDigest]


class TaskIdentity(StrictModel):
    """`task.json`: which task (or runner benchmark) the session belongs to."""

    name: str
    mode: Literal["A", "B"]
    task_digest: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                    description="the compiled task's digest (`vero harbor verify` prints it); "
                                                "None for a runner session")
    baseline_commit: str | None = None
    vero_version: str


class RunnerBenchmark(StrictModel):
    """`benchmark.json` of a runner session: how the candidate was scored."""

    origin: str = Field(description="where the benchmark was loaded from")
    harbor: HarborConfig
    partition: dict[str, list[str]]


class CommitEntry(StrictModel):
    """One commit of `commits.json`; `repo.bundle` holds it under `refs/vero/commits/<commit>`."""

    commit: FullSha
    roles: list[CommitRole]


class Evaluation(StrictModel):
    """`evaluations/<experiment id>.json`: one evaluation and its per-sample results."""

    asked_by: AskedBy
    record: ExperimentRecord
    results: list[SampleResult] = Field(description="stored results, in the order of record.sample_ids")


def evaluation_member(experiment_id: str) -> str:
    """The member name of one evaluation."""
    return f"{EVALUATIONS_DIR}{experiment_id}.json"


def bundle_ref(commit: str) -> str:
    """The ref a commit has in `repo.bundle`."""
    return f"refs/vero/commits/{commit}"
