"""Finding sessions where Harbor leaves them: a session archive, a trial dir, or a jobs dir.

A trial dir holds Harbor's `result.json` (with `trial_name`), `verifier/session.tar.gz` (taken by
test.sh after finalize) and `artifacts/session-rescue.tar.gz` (taken by the collect hook after
the agent phase, also when it failed). The verifier's archive is the complete one; the rescue
archive is read when it is the only one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vero.errors import VeroError
from vero.session.reader import Session, load_session
from vero.session.report import JobsReport, SessionReport, TrialReport, compare, session_report

FINAL_ARCHIVE = Path("verifier") / "session.tar.gz"
RESCUE_ARCHIVE = Path("artifacts") / "session-rescue.tar.gz"
_FIX_PATH = "pass a session.tar.gz, a Harbor trial dir or a Harbor jobs dir"


def _trial_result(directory: Path) -> dict[str, Any] | None:
    """Harbor's trial result.json in `directory`, or None when it is not a trial dir."""
    try:
        data = json.loads((directory / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "trial_name" in data else None


def trial_archive(trial_dir: Path) -> Path | None:
    """The session archive a trial kept: the verifier's, else the rescue archive."""
    for relative in (FINAL_ARCHIVE, RESCUE_ARCHIVE):
        if (trial_dir / relative).is_file():
            return trial_dir / relative
    return None


def session_at(path: Path) -> Session:
    """The session of an archive or a trial dir (`recover` needs exactly one)."""
    if path.is_file():
        return load_session(path)
    if path.is_dir() and _trial_result(path) is not None:
        archive = trial_archive(path)
        if archive is None:
            raise VeroError("this trial kept no session archive", where=str(path),
                            fix="the task was compiled by a vero without session archives, or Harbor could "
                                "not copy them: see the trial's trial.log")
        return load_session(archive)
    raise VeroError("not a session archive nor a Harbor trial dir", where=str(path), fix=_FIX_PATH)


def _rewards(result: dict[str, Any]) -> dict[str, float] | None:
    verifier = result.get("verifier_result")
    rewards = verifier.get("rewards") if isinstance(verifier, dict) else None
    if isinstance(rewards, dict) and all(isinstance(v, (int, float)) for v in rewards.values()):
        return {str(k): float(v) for k, v in rewards.items()}
    return None


def _exception(result: dict[str, Any]) -> str | None:
    info = result.get("exception_info")
    if not isinstance(info, dict):
        return None
    message = str(info.get("exception_message") or "").strip().splitlines()
    return f"{info.get('exception_type', 'Exception')}: {message[0] if message else ''}".rstrip(": ")


def trial_report(trial_dir: Path, *, lenient: bool = False) -> TrialReport:
    """One trial; with `lenient`, an unreadable archive becomes the trial's note instead of an error."""
    result = _trial_result(trial_dir)
    if result is None:
        raise VeroError("not a Harbor trial dir (no trial result.json)", where=str(trial_dir), fix=_FIX_PATH)
    archive = trial_archive(trial_dir)
    session: SessionReport | None = None
    note = None
    if archive is None:
        note = "no session archive in this trial"
    else:
        try:
            session = session_report(load_session(archive))
            note = f"read {archive.relative_to(trial_dir)}"
        except VeroError as exc:
            if not lenient:
                raise
            note = exc.render()
    task_name = result.get("task_name")
    return TrialReport(trial_dir=str(trial_dir), trial_name=str(result.get("trial_name")),
                       task_name=task_name if isinstance(task_name, str) else None,
                       rewards=_rewards(result), exception=_exception(result), session=session,
                       note=note)


def trial_dirs(root: Path) -> list[Path]:
    """Trial dirs under a jobs dir (`jobs/<job>/<trial>`) or a job dir (`<job>/<trial>`)."""
    found = {p.parent for pattern in ("*/result.json", "*/*/result.json") for p in root.glob(pattern)
             if _trial_result(p.parent) is not None}
    return sorted(found)


def report_for(path: Path) -> SessionReport | TrialReport | JobsReport:
    """The report of whatever `path` is."""
    if path.is_file():
        return session_report(load_session(path))
    if not path.is_dir():
        raise VeroError("no such file or directory", where=str(path), fix=_FIX_PATH)
    if _trial_result(path) is not None:
        return trial_report(path)
    trials = [trial_report(directory, lenient=True) for directory in trial_dirs(path)]
    if not trials:
        raise VeroError("no Harbor trial found here (looked for <job>/<trial>/result.json)", where=str(path),
                        fix=_FIX_PATH)
    return JobsReport(path=str(path), trials=trials, comparison=compare(trials),
                      failed_trials=sum(1 for trial in trials if trial.exception is not None))
