"""The sidecar's session, read from its admin volume: what `GET /session` returns after finalize
and what the rescue hook (`vero harbor archive --config`) writes when the verifier never ran.

Both read the same files, so the same session gives the same archive either way. Nothing is
written to the admin volume. The archive leaves the trust boundary (it lands in the trial
directory), so every string in it passes the Redactor of the declared secrets' values: sample
outputs, `error_detail`, incident details, the config. Labels may appear: the archive is for
the benchmark owner. The admin token never does (it is not on the admin volume).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, JsonValue, ValidationError

from vero import __version__
from vero.core.experiments import ExperimentDB
from vero.core.incidents import INCIDENTS, Incident
from vero.core.ledger import LedgerState
from vero.core.redaction import Redactor
from vero.errors import VeroError
from vero.models import parse_model
from vero.serve.api import FinalizeReport, Submission
from vero.serve.config import ServeConfig
from vero.serve.finalize import BASELINE_REPORT, FINALIZE_REPORT, BaselineScores
from vero.serve.sidecar import SUBMISSION
from vero.session import gitbundle
from vero.session.model import (
    BASELINE,
    BUNDLE,
    COMMITS,
    FINALIZE,
    LEDGER,
    SERVE_CONFIG,
    TASK,
    CommitEntry,
    CommitRole,
    Evaluation,
    TaskIdentity,
    evaluation_member,
)
from vero.session.model import (
    INCIDENTS as INCIDENTS_MEMBER,
)
from vero.session.model import (
    SUBMISSION as SUBMISSION_MEMBER,
)
from vero.session.tarball import json_member, pack

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
LEDGER_FILE = "ledger.json"


def _json(redactor: Redactor, value: JsonValue) -> bytes:
    return json_member(redactor.json(value))


def _model_bytes(redactor: Redactor, model: BaseModel) -> bytes:
    return _json(redactor, model.model_dump(mode="json"))


def _read_model(path: Path, model: type[M]) -> M | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise VeroError(f"cannot read {path.name}: {exc.strerror or exc}", where=str(path),
                        fix="check the admin volume") from None
    return parse_model(raw, model, what=path.name, where=str(path), fix="inspect the file on the admin volume",
                       problem="corrupt")


def read_identity(path: Path, config: ServeConfig) -> TaskIdentity:
    """The task's identity baked at build time; without that file (a sidecar run from a
    hand-written serve.json) the digest is unknown."""
    identity = _read_model(path, TaskIdentity)
    if identity is None:
        return TaskIdentity(name=config.name, mode=config.mode, baseline_commit=config.baseline_commit,
                            vero_version=__version__)
    return identity


def _incidents(path: Path, redactor: Redactor) -> bytes | None:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return None
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            incident = Incident.model_validate_json(line)
        except ValidationError:
            # A line a killed sidecar cut short: the rest of the log still counts.
            log.warning("%s line %d is not an incident; left out of the archive", path, number)
            continue
        clean = incident.model_copy(update={"what": redactor.text(incident.what),
                                            "detail": redactor.text(incident.detail)})
        kept.append(clean.model_dump_json() + "\n")
    return "".join(kept).encode() if kept else None


def session_members(config: ServeConfig, redactor: Redactor, identity: TaskIdentity) -> dict[str, bytes]:
    """Every member of the sidecar's session archive except the manifest."""
    admin = Path(config.paths.admin_dir)
    members: dict[str, bytes] = {TASK: _model_bytes(redactor, identity),
                                 SERVE_CONFIG: _model_bytes(redactor, config)}
    roles: dict[str, set[CommitRole]] = {config.baseline_commit: {"baseline"}}
    db = ExperimentDB(admin / "experiments")
    for record in db.all():
        store = db.store(record.experiment_id)
        results = [stored for sample_id in record.sample_ids if (stored := store.get(sample_id)) is not None]
        evaluation = Evaluation(asked_by="optimizer" if record.origin == "agent" else "finalize",
                                record=record, results=results)
        members[evaluation_member(record.experiment_id)] = _model_bytes(redactor, evaluation)
        roles.setdefault(record.commit, set()).add("evaluated")
    for file_name, member, model in ((LEDGER_FILE, LEDGER, LedgerState), (FINALIZE_REPORT, FINALIZE, FinalizeReport),
                                     (BASELINE_REPORT, BASELINE, BaselineScores)):
        loaded = _read_model(admin / file_name, model)
        if loaded is not None:
            members[member] = _model_bytes(redactor, loaded)
    submission = _read_model(admin / SUBMISSION, Submission)
    if submission is not None:
        members[SUBMISSION_MEMBER] = _model_bytes(redactor, submission)
        roles.setdefault(submission.commit, set()).add("submitted")
    incidents = _incidents(admin / INCIDENTS, redactor)
    if incidents is not None:
        members[INCIDENTS_MEMBER] = incidents
    order = {"baseline": 0, "evaluated": 1, "submitted": 2}
    commits = [CommitEntry(commit=sha, roles=sorted(kinds, key=order.__getitem__))
               for sha, kinds in sorted(roles.items())]
    members[COMMITS] = json_member([entry.model_dump(mode="json") for entry in commits])
    members[BUNDLE] = gitbundle.bundle_from_refs(Path(config.paths.trusted_repo), [c.commit for c in commits])
    return members


def sidecar_archive(config: ServeConfig, redactor: Redactor) -> bytes:
    """The whole session archive of the sidecar described by `config`."""
    identity = read_identity(Path(config.paths.identity_file), config)
    return pack(session_members(config, redactor, identity), producer="sidecar")
