"""Reading a session archive back: every member checked (`tarball.unpack`) and parsed by its model.

A problem is one `VeroError` naming the archive and the member, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from vero.core.incidents import Incident
from vero.core.ledger import LedgerState
from vero.errors import VeroError
from vero.models import describe, parse_model
from vero.serve.api import FinalizeReport, Submission
from vero.serve.config import ServeConfig
from vero.serve.finalize import BaselineScores
from vero.session.model import (
    BASELINE,
    BENCHMARK,
    BUNDLE,
    COMMITS,
    EVALUATIONS_DIR,
    FINALIZE,
    INCIDENTS,
    LEDGER,
    SERVE_CONFIG,
    SUBMISSION,
    TASK,
    CommitEntry,
    Evaluation,
    Manifest,
    RunnerBenchmark,
    TaskIdentity,
)
from vero.session.tarball import unpack

M = TypeVar("M", bound=BaseModel)
_COMMITS = TypeAdapter(list[CommitEntry])


@dataclass
class Session:
    """A session archive, read and checked."""

    path: Path
    manifest: Manifest
    task: TaskIdentity
    commits: list[CommitEntry]
    bundle: bytes
    evaluations: list[Evaluation]
    serve: ServeConfig | None = None
    benchmark: RunnerBenchmark | None = None
    ledger: LedgerState | None = None
    submission: Submission | None = None
    finalize: FinalizeReport | None = None
    baseline: BaselineScores | None = None
    incidents: list[Incident] = field(default_factory=list)

    @property
    def winner(self) -> str | None:
        """The commit finalize selected (None before finalize, or when it selected nothing)."""
        return self.finalize.candidate if self.finalize is not None else None


_FIX_VERSION = "read it with the vero version that wrote it (task.json names it)"


def _parse(members: dict[str, bytes], name: str, model: type[M], where: str) -> M | None:
    raw = members.get(name)
    if raw is None:
        return None
    return parse_model(raw, model, what=f"member {name}", where=where, fix=_FIX_VERSION)


def _required(members: dict[str, bytes], name: str, where: str) -> bytes:
    raw = members.get(name)
    if raw is None:
        raise VeroError(f"member {name} is missing", where=where,
                        fix="this is not a complete vero session archive")
    return raw


def load_session(path: Path) -> Session:
    """Read and check the archive at `path`."""
    where = str(path)
    manifest, members = unpack(Path(path))
    _required(members, TASK, where)
    task = _parse(members, TASK, TaskIdentity, where)
    assert task is not None
    try:
        commits = _COMMITS.validate_json(_required(members, COMMITS, where))
    except ValidationError as exc:
        raise VeroError(f"invalid member {COMMITS} at {describe(exc)}", where=where, fix=_FIX_VERSION) from None
    evaluations = []
    for name in sorted(members):
        if name.startswith(EVALUATIONS_DIR):
            evaluation = _parse(members, name, Evaluation, where)
            assert evaluation is not None
            evaluations.append(evaluation)
    evaluations.sort(key=lambda e: (e.record.created_at, e.record.experiment_id))
    incidents = []
    for number, line in enumerate(members.get(INCIDENTS, b"").splitlines(), start=1):
        incidents.append(parse_model(line, Incident, what=f"member {INCIDENTS} line {number}", where=where,
                                     fix=_FIX_VERSION))
    session = Session(path=Path(path), manifest=manifest, task=task, commits=commits,
                      bundle=_required(members, BUNDLE, where), evaluations=evaluations,
                      serve=_parse(members, SERVE_CONFIG, ServeConfig, where),
                      benchmark=_parse(members, BENCHMARK, RunnerBenchmark, where),
                      ledger=_parse(members, LEDGER, LedgerState, where),
                      submission=_parse(members, SUBMISSION, Submission, where),
                      finalize=_parse(members, FINALIZE, FinalizeReport, where),
                      baseline=_parse(members, BASELINE, BaselineScores, where),
                      incidents=incidents)
    if (session.serve is None) == (session.benchmark is None):
        raise VeroError(f"member {SERVE_CONFIG} or {BENCHMARK} (exactly one) is missing", where=where,
                        fix="this is not a complete vero session archive")
    return session
