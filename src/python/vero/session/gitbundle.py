"""Git bundles of a session's commits: written from vero's own repositories, read back to recover
a candidate's files or its diff.

Git runs with no system or user config, hooks off and one pack thread (several threads can
order deltas differently, and the archive must be the same bytes for the same session). A
bundle names every commit as `refs/vero/commits/<sha>`, so reading it back never depends on
which branch a commit happened to be on.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vero.core.checkout import parse_ls_tree, tree_problems, write_tree
from vero.core.gitops import GIT_OPTIONS
from vero.core.limits import RepoLimits
from vero.errors import VeroError
from vero.session.model import bundle_ref

GIT_TIMEOUT = 600.0
_OPTIONS: tuple[str, ...] = (*GIT_OPTIONS, "-c", "pack.threads=1")


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


def git(repo: Path, *args: str, input_bytes: bytes | None = None, where: str | None = None) -> bytes:
    """Run one git command in `repo`; its stdout, or a VeroError with git's own words."""
    try:
        result = subprocess.run(["git", *_OPTIONS, *args], cwd=repo, env=_env(), input=input_bytes,
                                capture_output=True, check=False, timeout=GIT_TIMEOUT,
                                stdin=None if input_bytes is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise VeroError("git is not installed", where="PATH", fix="install git") from None
    except subprocess.TimeoutExpired:
        raise VeroError(f"git {args[0]} took longer than {GIT_TIMEOUT:g} s", where=where or str(repo),
                        fix="check the repository") from None
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace").strip()
        raise VeroError(f"git {args[0]} failed: {stderr[-500:]}", where=where or str(repo),
                        fix="check the repository")
    return result.stdout


def _refs_by_commit(repo: Path) -> dict[str, list[str]]:
    listing = git(repo, "for-each-ref", "--format=%(objectname) %(refname)").decode()
    refs: dict[str, list[str]] = {}
    for line in listing.splitlines():
        sha, _, ref = line.partition(" ")
        refs.setdefault(sha, []).append(ref)
    return refs


def bundle_commits(repo: Path, commits: Sequence[str]) -> bytes:
    """A bundle of `commits` (and their history) from `repo`, one `refs/vero/commits/<sha>` each.

    The commits are given refs of that name in a scratch repository that borrows `repo`'s
    objects (an alternate), so `repo` itself is never written to.
    """
    if not commits:
        raise ValueError("a bundle needs at least one commit")
    common = Path(git(repo, "rev-parse", "--path-format=absolute", "--git-common-dir").decode().strip())
    with tempfile.TemporaryDirectory(prefix="vero-bundle-") as scratch:
        work = Path(scratch) / "repo.git"
        git(Path(scratch), "init", "--quiet", "--bare", str(work))
        (work / "objects" / "info" / "alternates").write_text(f"{common / 'objects'}\n", encoding="utf-8")
        updates = "".join(f"update {bundle_ref(sha)} {sha}\n" for sha in sorted(set(commits)))
        git(work, "update-ref", "--stdin", input_bytes=updates.encode())
        out = Path(scratch) / "session.bundle"
        refs = "".join(f"{bundle_ref(sha)}\n" for sha in sorted(set(commits)))
        git(work, "bundle", "create", "--quiet", str(out), "--stdin", input_bytes=refs.encode())
        return out.read_bytes()


def bundle_from_refs(repo: Path, commits: Sequence[str]) -> bytes:
    """Like `bundle_commits`, for a repository (vero's trusted repo) whose refs already name every
    commit: refuses a commit no ref points at (it would not be in the repository for good)."""
    refs = _refs_by_commit(repo)
    missing = sorted(sha for sha in set(commits) if sha not in refs)
    if missing:
        raise VeroError(f"the repository has no ref for commit {missing[0]}"
                        + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""), where=str(repo),
                        fix="the trusted repository lost commits the session evaluated: check the admin volume")
    return bundle_commits(repo, commits)


@contextmanager
def opened_bundle(data: bytes, where: str) -> Iterator[Path]:
    """A scratch bare repository holding every ref of the bundle `data`, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="vero-unbundle-") as scratch:
        bundle = Path(scratch) / "session.bundle"
        bundle.write_bytes(data)
        repo = Path(scratch) / "repo.git"
        git(Path(scratch), "init", "--quiet", "--bare", str(repo), where=where)
        git(repo, "fetch", "--quiet", "--no-tags", str(bundle), "+refs/*:refs/*", where=where)
        yield repo


def has_commit(repo: Path, commit: str) -> bool:
    """Whether `repo` (from `opened_bundle`) holds `commit` under its session ref."""
    return commit in _refs_by_commit(repo)


def write_files(repo: Path, commit: str, dest: Path, where: str) -> int:
    """Write the tree of `commit` into the empty directory `dest` as git stores it (no attributes,
    filters or hooks; links are never followed). Returns the number of files."""
    entries = list(parse_ls_tree(git(repo, "ls-tree", "-r", "-z", "-l", "--full-tree", commit, where=where)))
    problems = tree_problems(entries, RepoLimits(tree_files=10**7, tree_mb=10**6))
    if problems:
        raise VeroError(f"commit {commit[:12]} cannot be written safely: {'; '.join(problems)}", where=where,
                        fix="this archive was not written by vero")
    cat_file = subprocess.Popen(["git", *_OPTIONS, "cat-file", "--batch"], cwd=repo, env=_env(),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        write_tree(entries, dest, cat_file)
    finally:
        if cat_file.stdin is not None:
            cat_file.stdin.close()
        cat_file.kill()
        cat_file.wait()
    return len(entries)


def diff(repo: Path, base: str, commit: str, where: str) -> bytes:
    """A patch from `base` to `commit` that `git apply` accepts (binary files included)."""
    return git(repo, "diff", "--binary", "--full-index", "--no-color", "--no-ext-diff", "--no-textconv",
               "--no-renames", base, commit, "--", where=where)
