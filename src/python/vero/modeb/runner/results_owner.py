"""Which candidate a runner results directory belongs to.

The runner resumes from what a results directory holds: finished sample results and the trials
of earlier Harbor jobs. Those are scores of one commit by one agent and model, so a directory
records that candidate on first use and refuses any other: reusing `--results-dir` for a new
commit must not report the old commit's scores as the new one's.
"""

from __future__ import annotations

from pathlib import Path

from vero.errors import VeroError
from vero.fsutil import atomic_write_model
from vero.models import StrictModel, load_model_file

OWNER_FILE = "candidate.json"


class ResultsOwner(StrictModel):
    """The candidate whose results a directory holds."""

    commit: str
    agent: str
    model: str | None = None


def claim(results_dir: Path, owner: ResultsOwner) -> None:
    """Record `owner` in a directory used for the first time; refuse one that holds another
    candidate's results. The caller holds the directory's lock."""
    path = results_dir / OWNER_FILE
    if not path.exists():
        atomic_write_model(path, owner)
        return
    recorded = load_model_file(path, ResultsOwner, "record of the candidate this results directory belongs to",
                               fix="pass another --results-dir", problem="corrupt")
    if recorded != owner:
        differs = "; ".join(f"{name} {getattr(recorded, name)!r}, not {getattr(owner, name)!r}"
                            for name in ResultsOwner.model_fields
                            if getattr(recorded, name) != getattr(owner, name))
        raise VeroError(f"this results directory holds the results of another candidate ({differs})",
                        where=str(results_dir),
                        fix="pass another --results-dir: one per commit, agent and model (the default "
                            "is one per split and commit)")
