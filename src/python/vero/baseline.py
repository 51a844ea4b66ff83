"""The deterministic baseline commit shared by the optimizer's seed and the trusted sidecar.

The compiler exports the baseline files; both containers recreate the commit from them with
this fixed identity, dates and message, so both sides get the same SHA on any machine. The
`seed.sh` template uses `GIT_ENV` and `git_commit_argv()` so the rules live here only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
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


def _git_env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}, **GIT_ENV}


def make_baseline_commit(worktree: Path) -> str:
    """Turn the files in `worktree` into a git repo with the one deterministic baseline commit.

    Returns the commit SHA. `worktree` must not already be a git repository.
    """
    worktree = Path(worktree)
    if (worktree / ".git").exists():
        raise VeroError("baseline files already contain a .git entry", where=str(worktree),
                        fix="export the agent repo's files without its .git directory")
    env = _git_env()
    for argv in git_commit_argv():
        result = subprocess.run(argv, cwd=worktree, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise VeroError(f"`{' '.join(argv[:1] + argv[-4:])}` failed: {result.stderr.strip()}",
                            where=str(worktree), fix="check that git is installed and the files are readable")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=worktree, env=env, capture_output=True, text=True,
                          check=True)
    return head.stdout.strip()


@dataclass(frozen=True)
class BaselineBlob:
    """One file of the baseline as git stores it: path, mode (0o100644, 0o100755 or 0o120000 for a
    symlink) and blob id (of the bytes, or of a symlink's target)."""

    path: str
    mode: int
    blob: str


ATTRIBUTES_FILE = ".gitattributes"


def _c_quoted(path: str) -> str:
    """A path as git reads it quoted, one per line: any name, newlines included."""
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _fixed_ident() -> str:
    """`name <email> epoch tz` as git writes FIXED_DATE into a commit."""
    when = datetime.strptime(FIXED_DATE, "%Y-%m-%dT%H:%M:%S%z")
    return f"{IDENTITY_NAME} <{IDENTITY_EMAIL}> {int(when.timestamp())} {FIXED_DATE[-5:]}"


def git_object_hash(kind: str, size: int, data: bytes | memoryview = b"") -> hashlib._Hash:
    """The sha1 git names an object of `kind` ("blob", "tree", "commit") and `size` bytes by, fed
    with `data` so far (git's header holds the size, so it must be known before the first byte)."""
    digest = hashlib.sha1(b"%s %d\0" % (kind.encode(), size), usedforsecurity=False)
    digest.update(data)
    return digest


def _object_id(kind: str, body: bytes) -> str:
    return git_object_hash(kind, len(body), body).hexdigest()


def _tree_id(blobs: Sequence[BaselineBlob]) -> str:
    """The id of the root tree git writes for these files (`git write-tree`), computed without
    writing a tree object: entries by name, a directory sorting as its name plus "/"."""
    entries: dict[str, dict[str, tuple[str, str]]] = defaultdict(dict)  # directory -> name -> (mode, id)
    children: dict[str, set[str]] = defaultdict(set)                      # directory -> its subdirectories
    for item in blobs:
        parent, _, name = item.path.rpartition("/")
        entries[parent][name] = (f"{item.mode:o}", item.blob)
        while parent:
            above, _, base = parent.rpartition("/")
            if base in children[above]:
                break
            children[above].add(base)
            parent = above
    ids: dict[str, str] = {}
    # Deepest first, so each subdirectory's id is known when its parent is hashed (no recursion:
    # a path may be thousands of directories deep).
    for directory in sorted({*entries, *children}, key=lambda path: -1 if not path else path.count("/"),
                            reverse=True):
        listing = dict(entries[directory])
        prefix = f"{directory}/" if directory else ""
        for base in children[directory]:
            listing[base] = ("40000", ids[prefix + base])
        order = sorted(listing, key=lambda name: (f"{name}/" if listing[name][0] == "40000" else name).encode())
        body = b"".join(f"{listing[name][0]} {name}\0".encode() + bytes.fromhex(listing[name][1]) for name in order)
        ids[directory] = _object_id("tree", body)
    return ids[""]


def baseline_commit_of_blobs(files_dir: Path, blobs: Sequence[BaselineBlob]) -> str:
    """The SHA `make_baseline_commit` gives the files under `files_dir`, without copying or reading
    them: git builds an index from the blob ids, refusing a path as `git add` would, and the trees
    and the commit (same identity, dates and message) are hashed here, writing no objects.

    `git add` applies `.gitattributes` conversions (line endings, encodings); when the baseline
    holds such a file, git hashes the regular files itself, as `git add` would.
    """
    with tempfile.TemporaryDirectory(prefix="vero-baseline-") as scratch:
        env = {**_git_env(), "GIT_DIR": scratch, "GIT_INDEX_FILE": os.path.join(scratch, "index"),
               "GIT_WORK_TREE": str(files_dir)}

        def git(*args: str, stdin: bytes | None = None) -> str:
            argv = ["git", *GIT_OPTIONS, *args]
            result = subprocess.run(argv, cwd=files_dir, env=env, input=stdin, capture_output=True, check=False)
            problem = result.stderr.decode("utf-8", "replace").strip()
            # update-index skips a path it refuses (`.GIT/x`, `git~1`) with a message and exit code 0.
            if result.returncode != 0 or (args[0] == "update-index" and problem):
                raise VeroError(f"`git {args[0]}` refused the baseline: {problem}", where=str(files_dir),
                                fix="rename the files git refuses (git add would refuse them too)")
            return result.stdout.decode("utf-8").strip()

        # All git asks of a repository: HEAD, objects/ and refs/ (`git init` would also copy its
        # hook templates, a process and a dozen files for nothing).
        for sub in ("objects", "refs"):
            os.mkdir(os.path.join(scratch, sub))
        Path(scratch, "HEAD").write_text(f"ref: refs/heads/{BRANCH}\n", encoding="utf-8")
        if any(item.path.rpartition("/")[2] == ATTRIBUTES_FILE for item in blobs):
            regular = [item for item in blobs if item.mode != 0o120000]
            listing = "".join(f"{_c_quoted(item.path)}\n" for item in regular)
            ids = git("hash-object", "--stdin-paths", stdin=listing.encode("utf-8"))
            hashed = dict(zip((item.path for item in regular), ids.split(), strict=True))
            blobs = [BaselineBlob(item.path, item.mode, hashed.get(item.path, item.blob)) for item in blobs]
        git("update-index", "--add", "-z", "--index-info",
            stdin="".join(f"{item.mode:o} {item.blob}\t{item.path}\0" for item in blobs).encode("utf-8"))
    ident = _fixed_ident()
    commit = f"tree {_tree_id(blobs)}\nauthor {ident}\ncommitter {ident}\n\n{MESSAGE}\n"
    return _object_id("commit", commit.encode("utf-8"))


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
