"""The deterministic baseline commit shared by the optimizer's seed and the trusted sidecar.

The compiler exports the baseline files; both containers recreate the commit from them with
this fixed identity, dates and message, so both sides get the same SHA on any machine. The
`seed.sh` template uses `GIT_ENV` and `git_commit_argv()` so the rules live here only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from vero.core.benchmark import CommitSha
from vero.errors import VeroError
from vero.models import StrictModel, load_model_file

BASELINE_FILES = "files"       # a baseline dir holds files/ and BASELINE.json
BASELINE_JSON = "BASELINE.json"
IDENTITY_NAME = "vero baseline"
IDENTITY_EMAIL = "baseline@vero.invalid"
FIXED_DATE = "2000-01-01T00:00:00+0000"
MESSAGE = "baseline"
BRANCH = "main"

# Nothing from the machine's or user's git config may change the commit.
GIT_ENV: Mapping[str, str] = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": IDENTITY_NAME,
    "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
    "GIT_AUTHOR_DATE": FIXED_DATE,
    "GIT_COMMITTER_NAME": IDENTITY_NAME,
    "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
    "GIT_COMMITTER_DATE": FIXED_DATE,
    "TZ": "UTC",
    "LC_ALL": "C",
}
GIT_OPTIONS: tuple[str, ...] = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fileMode=true",
    "-c", "core.autocrlf=false",
    "-c", "commit.gpgSign=false",
    "-c", "init.defaultBranch=" + BRANCH,
)


def git_commit_argv() -> list[list[str]]:
    """The git commands (one argv each, run in the work tree) that create the baseline commit."""
    return [
        ["git", *GIT_OPTIONS, "init", "--quiet", "--initial-branch", BRANCH, "."],
        ["git", *GIT_OPTIONS, "add", "--all", "--force", "--", "."],
        ["git", *GIT_OPTIONS, "commit", "--quiet", "--no-verify", "--allow-empty", "-m", MESSAGE],
    ]


def make_baseline_commit(worktree: Path) -> str:
    """Turn the files in `worktree` into a git repo with the one deterministic baseline commit.

    Returns the commit SHA. `worktree` must not already be a git repository.
    """
    worktree = Path(worktree)
    if (worktree / ".git").exists():
        raise VeroError("baseline files already contain a .git entry", where=str(worktree),
                        fix="export the agent repo's files without its .git directory")
    env = {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **GIT_ENV}
    for argv in git_commit_argv():
        result = subprocess.run(argv, cwd=worktree, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise VeroError(f"`{' '.join(argv[:1] + argv[-4:])}` failed: {result.stderr.strip()}",
                            where=str(worktree), fix="check that git is installed and the files are readable")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=worktree, env=env, capture_output=True, text=True,
                          check=True)
    return head.stdout.strip()


class BaselineInfo(StrictModel):
    """BASELINE.json: the SHA the baseline files must produce."""

    commit: CommitSha


def restore_baseline(baseline_dir: Path, repo_dir: Path) -> str:
    """Recreate the baseline repo in the new directory `repo_dir` from `baseline_dir`.

    `baseline_dir` holds `files/` and `BASELINE.json`; the recreated commit must have the
    recorded SHA, otherwise the task was tampered with or built by an incompatible git.
    """
    info_path = Path(baseline_dir) / BASELINE_JSON
    info = load_model_file(info_path, BaselineInfo, "baseline description",
                           fix="rebuild the task with `vero harbor build`")
    shutil.copytree(Path(baseline_dir) / BASELINE_FILES, repo_dir, symlinks=True)
    sha = make_baseline_commit(Path(repo_dir))
    if sha != info.commit:
        raise VeroError(f"baseline files produce commit {sha}, BASELINE.json says {info.commit}",
                        where=str(baseline_dir), fix="rebuild the task; check `vero harbor verify` on it")
    return sha
