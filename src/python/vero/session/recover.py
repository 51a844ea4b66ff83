"""`vero harbor recover`: a candidate's files (or its diff against the baseline) from a session.

The files are written as git stores them (no attributes, filters or hooks; links never
followed) into a temporary sibling of `-o`, which is then renamed into place. `-o` may be new,
empty, or a directory an earlier recover wrote (it carries `MARKER`); anything else is refused,
never overwritten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vero.errors import VeroError
from vero.fsutil import atomic_write_bytes
from vero.session import gitbundle
from vero.session.reader import Session

MARKER = ".vero-recovered.json"
_HEX = re.compile(r"^[0-9a-f]{4,64}$")


@dataclass(frozen=True)
class Recovered:
    """What recover wrote."""

    commit: str
    path: Path
    files: int


def choose_commit(session: Session, *, winner: bool, commit: str | None) -> str:
    """The winner's SHA, or the session commit that `commit` (a SHA or unique prefix) names."""
    where = str(session.path)
    known = [entry.commit for entry in session.commits]
    if winner:
        if session.winner is None:
            why = ("finalize had not run when this archive was taken" if session.finalize is None
                   else "finalize selected no candidate")
            listing = ", ".join(sha[:12] for sha in known)
            raise VeroError(f"this session has no winner: {why}", where=where,
                            fix=f"pass --commit with one of its commits ({listing})")
        return session.winner
    assert commit is not None
    wanted = commit.strip().lower()
    matches = [sha for sha in known if _HEX.fullmatch(wanted) and sha.startswith(wanted)]
    if len(matches) != 1:
        what = "matches several commits" if matches else "is not a commit of this session"
        raise VeroError(f"--commit {commit!r} {what}", where=where,
                        fix="pass a longer prefix or a full SHA from `vero report` (commits: "
                            + ", ".join(sha[:12] for sha in known) + ")")
    return matches[0]


def _check_output_dir(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise VeroError("-o exists and is not a directory", where=str(out), fix="pass a new or empty directory")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise VeroError("-o is a non-empty directory that recover did not write", where=str(out),
                        fix="pass a new or empty directory (recover never overwrites other files)")


def _swap_in(stage: Path, out: Path) -> None:
    """Rename `stage` to `out`; an earlier recover's `out` is moved aside first, then removed."""
    old = None
    if out.is_dir():
        if any(out.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.rename(out, old / "tree")
        else:
            out.rmdir()
    os.rename(stage, out)
    if old is not None:
        shutil.rmtree(old)


def recover_files(session: Session, commit: str, out: Path) -> Recovered:
    """Write the files of `commit` to the directory `out`."""
    out = Path(out).absolute()
    _check_output_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    where = str(session.path)
    with gitbundle.opened_bundle(session.bundle, where) as repo:
        if not gitbundle.has_commit(repo, commit):
            raise VeroError(f"member repo.bundle has no commit {commit}", where=where,
                            fix="the archive is incomplete: take it again from the trial directory")
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.recover-", dir=out.parent))
        try:
            stage.chmod(0o755)
            files = gitbundle.write_files(repo, commit, stage, where)
            marker = {"commit": commit, "archive": str(session.path), "task": session.task.name}
            fd = os.open(stage / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(json.dumps(marker, indent=2, sort_keys=True) + "\n")
            _swap_in(stage, out)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
    return Recovered(commit=commit, path=out, files=files)


def recover_patch(session: Session, commit: str, out: Path) -> Recovered:
    """Write the diff of `commit` against the session's baseline to the new file `out`."""
    where = str(session.path)
    base = session.task.baseline_commit
    if base is None:
        raise VeroError("this session has no baseline commit to diff against (a runner session)", where=where,
                        fix="recover the files without --patch")
    if out.exists() or out.is_symlink():
        raise VeroError("the patch file exists", where=str(out), fix="pass a new path (recover never overwrites)")
    with gitbundle.opened_bundle(session.bundle, where) as repo:
        for sha in (base, commit):
            if not gitbundle.has_commit(repo, sha):
                raise VeroError(f"member repo.bundle has no commit {sha}", where=where,
                                fix="the archive is incomplete: take it again from the trial directory")
        patch = gitbundle.diff(repo, base, commit, where)
    atomic_write_bytes(out, patch)
    return Recovered(commit=commit, path=out, files=patch.count(b"\ndiff --git ") + patch.startswith(b"diff --git "))
