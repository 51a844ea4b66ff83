"""A temporary, clean checkout of the candidate commit (a detached git worktree)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vero.errors import VeroError

_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")
_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/~^-]{0,200}$")
# No hook from the candidate repo (post-checkout runs on `worktree add`) is ever honoured.
_SAFE = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false")


def check_ref(ref: str) -> str:
    """Accept a hex SHA or a plain ref name (branch, tag, HEAD~1); refuse option-like or odd input."""
    plain = bool(_REF.fullmatch(ref)) and ".." not in ref and "@{" not in ref and not ref.endswith((".", "/"))
    if _HEX.fullmatch(ref) or plain:
        return ref
    raise VeroError(f"{ref!r} is not a commit SHA or a plain ref name", where="--commit",
                    fix="pass a commit SHA, a branch or a tag")


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *_SAFE, "-C", str(repo), *args], capture_output=True, text=True,
                          check=False, stdin=subprocess.DEVNULL)


def resolve_commit(repo: Path, ref: str) -> str:
    """The full SHA of `ref` in `repo`; a missing repo or commit is one VeroError."""
    if shutil.which("git") is None:
        raise VeroError("git is not installed", where="PATH", fix="install git")
    repo = Path(repo)
    if not repo.is_dir():
        raise VeroError("the candidate repo does not exist", where=str(repo),
                        fix="pass --repo with a git repository")
    inside = _git(repo, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0:
        raise VeroError("not a git repository", where=str(repo), fix="pass --repo with a git repository")
    found = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{check_ref(ref)}^{{commit}}")
    if found.returncode != 0:
        raise VeroError(f"no commit {ref!r} in the repository", where=str(repo),
                        fix="pass --commit with an existing commit, branch or tag")
    return found.stdout.strip()


@contextmanager
def checkout(repo: Path, commit: str, holder: Path | None = None) -> Iterator[Path]:
    """Check `commit` (a full SHA) out into a detached worktree, removed afterwards.

    `holder` is the directory to hold it, reserved for this checkout by the caller (the runner
    passes one inside its locked results dir): what a killed predecessor left there is removed
    first. Without it, a fresh temporary directory is used.
    """
    if holder is None:
        holder = Path(tempfile.mkdtemp(prefix="vero-candidate-"))
    else:
        if holder.is_symlink() or (holder.exists() and not holder.is_dir()):
            # Never follow it: removing "what a predecessor left" there could hit anything.
            raise VeroError("the checkout location is not a directory", where=str(holder),
                            fix="remove it, or pass another --results-dir")
        _remove(repo, holder)
        holder.mkdir(parents=True)
    worktree = holder / "repo"
    try:
        added = _git(repo, "worktree", "add", "--detach", "--quiet", str(worktree), commit)
        if added.returncode != 0:
            raise VeroError(f"cannot check out {commit[:12]}: {added.stderr.strip()}", where=str(repo),
                            fix="check the repository with `git worktree list` and `git fsck`")
        # Harbor may run as another user than this process; the checkout must be readable.
        holder.chmod(0o755)
        yield worktree
    finally:
        _remove(repo, holder)


def _remove(repo: Path, holder: Path) -> None:
    if (holder / "repo").exists():
        _git(repo, "worktree", "remove", "--force", str(holder / "repo"))
    shutil.rmtree(holder, ignore_errors=True)
    _git(repo, "worktree", "prune")
