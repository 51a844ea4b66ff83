"""Exporting the baseline agent repo into the task, as the one deterministic baseline commit.

One rule, whichever way the task is built: **the baseline is the agent directory as it is on
disk**, minus `.git` and `__pycache__` at any depth and minus what git's ignore rules exclude
(`.gitignore` files, and in a git work tree also `.git/info/exclude` and the user's global
excludes file). `./pants package` compiles in a sandbox without `.git` from the files the
`harbor_task` depends on, which Pants selects by the same ignore rules; `vero harbor build` on a
git work tree reads the same files from disk, committed or not. When the directory differs from
git's HEAD the build warns, naming the uncommitted paths (the Pants plugin prints the same
warning). Both sides (`agent-seed/` for main, `agent-baseline/` for the sidecar) get the same
files and BASELINE.json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vero.baseline import BASELINE_FILES, BASELINE_JSON, BaselineBlob, BaselineInfo, baseline_commit_of_blobs
from vero.compiler.layout import BASELINE_OUT, SEED_OUT
from vero.compiler.tree import SKIPPED_NAMES, TreeWriter, check_relpath, check_symlink
from vero.errors import VeroError
from vero.fsutil import canonical_json

_GIT_ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
# A plain directory's ignore rules are its own .gitignore files only: no user or system config.
_PLAIN_GIT_ENV = {**_GIT_ENV, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
MAX_LISTED_CHANGES = 10


@dataclass
class ExportedBaseline:
    """What was exported: the commit SHA, where the files came from, and warnings for the user."""

    commit: str
    source: str                       # "git" (inside a git work tree) or "dir"
    files: list[str]
    warnings: list[str] = field(default_factory=list)


def _git(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env if env is not None else _GIT_ENV)}
    return subprocess.run(["git", *args], cwd=cwd, env=full_env, capture_output=True, text=True, check=False,
                          input=stdin)


def _require_git(where: str) -> None:
    if shutil.which("git") is None:
        raise VeroError("git is not installed", where=where,
                        fix="install git: the baseline commit is made with it")


def _git_location(src: Path, where: str) -> tuple[Path, str] | None:
    """(top level, prefix of `src` in it) when `src` is inside a git work tree, else None."""
    probe = _git(["rev-parse", "--show-toplevel", "--show-prefix"], src)
    if probe.returncode != 0:
        if "not a git repository" in probe.stderr:
            return None
        raise VeroError(f"git cannot read the agent repo: {probe.stderr.strip()}", where=where,
                        fix="make the repo readable by this user (see `git config safe.directory`)")
    lines = probe.stdout.splitlines()
    if len(lines) == 1:  # `--show-prefix` prints an empty line at the top level
        lines.append("")
    return Path(lines[0]), lines[1].rstrip("/")


def uncommitted_changes_warning(agent_path: str, changed: list[str]) -> str:
    """The warning for an agent dir that differs from git's HEAD (the Pants plugin words it alike)."""
    shown = ", ".join(changed[:MAX_LISTED_CHANGES])
    if len(changed) > MAX_LISTED_CHANGES:
        shown += f" and {len(changed) - MAX_LISTED_CHANGES} more"
    return (f"agent_repo {agent_path} has uncommitted changes ({shown}); the baseline is the directory as it is "
            "on disk, these changes included: commit them to make the baseline reproducible from git")


def _uncommitted(top: Path, prefix: str, where: str) -> list[str]:
    """Paths under `prefix` (relative to it) that differ from HEAD or are untracked and not ignored.

    The same two git questions the Pants plugin asks (`git diff --name-only HEAD`, `git ls-files
    --others --exclude-standard`), so both name the same paths.
    """
    scope = ["--", prefix or "."]
    diff = _git(["diff", "--name-only", "-z", "HEAD", *scope], top)
    if diff.returncode != 0:
        if _git(["rev-parse", "--verify", "--quiet", "HEAD"], top).returncode != 0:
            diff = _git(["ls-files", "-z", "--cached", *scope], top)  # no commit yet: all of it is new
        else:
            raise VeroError(f"`git diff HEAD` failed: {diff.stderr.strip()}", where=where,
                            fix="check the repo with `git fsck`")
    others = _git(["ls-files", "-z", "--others", "--exclude-standard", "--full-name", *scope], top)
    names = {name for name in (diff.stdout + others.stdout).split("\0") if name}
    base = f"{prefix}/" if prefix else ""
    return sorted(name[len(base):] for name in names if name.startswith(base))


def _ignored(src: Path, paths: list[str], location: tuple[Path, str] | None) -> set[str]:
    """The subset of `paths` (relative to `src`) that git's ignore rules exclude, by pattern:
    a tracked file that matches a pattern is excluded too, as Pants excludes it."""
    if not paths:
        return set()
    listing = "\0".join(paths) + "\0"
    if location is not None:
        result = _git(["check-ignore", "--no-index", "-z", "--stdin"], src, stdin=listing)
    else:
        with tempfile.TemporaryDirectory(prefix="vero-ignore-") as scratch:
            env = {**_PLAIN_GIT_ENV, "GIT_DIR": scratch, "GIT_WORK_TREE": str(src)}
            init = _git(["init", "--quiet", "--bare", scratch], src, env=_PLAIN_GIT_ENV)
            if init.returncode != 0:
                raise VeroError(f"`git init` failed: {init.stderr.strip()}", where=str(src),
                                fix="check that git is installed and the temp dir is writable")
            result = _git(["check-ignore", "--no-index", "-z", "--stdin"], src, env=env, stdin=listing)
    if result.returncode not in (0, 1):  # 1: nothing is ignored
        raise VeroError(f"`git check-ignore` failed: {result.stderr.strip()}", where=str(src),
                        fix="check the .gitignore files of the agent repo")
    return {name for name in result.stdout.split("\0") if name}


def _listing(src: Path, where: str) -> dict[str, str]:
    """Every entry under `src` that is not a directory, as relative path -> "link", "file" or
    "other", skipping `.git` and `__pycache__` at any depth. One `scandir` per directory: the kinds
    come with the names, no stat per file."""
    found: dict[str, str] = {}
    pending = [""]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(os.path.join(src, directory)) as entries:
                for entry in entries:
                    if entry.name in SKIPPED_NAMES:
                        continue
                    rel = f"{directory}/{entry.name}" if directory else entry.name
                    if entry.is_symlink():  # a link to a directory too: it is a file of the baseline
                        found[rel] = "link"
                    elif entry.is_dir():
                        pending.append(rel)
                    else:
                        found[rel] = "file" if entry.is_file() else "other"
        except OSError as exc:
            raise VeroError(f"cannot read {exc.filename}: {exc.strerror}", where=where,
                            fix="check that the agent repo is readable") from None
    return found


def baseline_files(src: Path, location: tuple[Path, str] | None, where: str) -> list[tuple[str, Path, str | None]]:
    """The baseline's files under `src` as (relative path, path, symlink target or None), sorted."""
    listed = _listing(src, where)
    # git reports a file inside an ignored directory as ignored. Special files and outward links
    # are refused only when they are part of the baseline (a git-ignored .venv may hold both).
    ignored = _ignored(src, list(listed), location)
    files: list[tuple[str, Path, str | None]] = []
    for rel in sorted(listed.keys() - ignored):
        check_relpath(rel, where)
        path = src / rel
        if listed[rel] == "link":
            target = os.readlink(path)
            check_symlink(rel, target, where)
            files.append((rel, path, target))
        elif listed[rel] == "file":
            files.append((rel, path, None))
        else:
            raise VeroError(f"{rel!r} is not a regular file, directory or symlink", where=where,
                            fix="remove special files (sockets, fifos, devices) from the input")
    return files


def export_agent_repo(src: Path, writer: TreeWriter, *, where: str) -> ExportedBaseline:
    """Write the baseline files and BASELINE.json into both baseline dirs of `writer`'s tree."""
    _require_git(where)
    if not src.is_dir():
        raise VeroError(f"agent_repo {src} is not a directory", where=where,
                        fix="point agent_repo at the baseline candidate's directory")
    seed_files = f"{SEED_OUT}/{BASELINE_FILES}"
    location = _git_location(src, where)
    warnings: list[str] = []
    if location is not None:
        top, prefix = location
        changed = _uncommitted(top, prefix, where)
        if changed:
            warnings.append(uncommitted_changes_warning(prefix or top.name, changed))
    files = baseline_files(src, location, where)
    if not files:
        raise VeroError("agent_repo has no files (besides .git, __pycache__ and git-ignored ones)", where=where,
                        fix="add the baseline candidate's files")
    for rel, path, link in files:
        if link is not None:
            writer.symlink(f"{seed_files}/{rel}", link)
        else:
            writer.copy_file(f"{seed_files}/{rel}", path, git_blob=True)
    commit = _commit_of(writer, seed_files, [rel for rel, _, _ in files])
    info = canonical_json(BaselineInfo(commit=commit).model_dump(mode="json"))
    names = [rel for rel, _, _ in files]
    for rel in names:
        # Hard links: the two baselines are the same bytes, and linking costs no data writes.
        writer.link(f"{BASELINE_OUT}/{BASELINE_FILES}/{rel}", f"{seed_files}/{rel}")
    writer.write_text(f"{SEED_OUT}/{BASELINE_JSON}", info)
    writer.write_text(f"{BASELINE_OUT}/{BASELINE_JSON}", info)
    return ExportedBaseline(commit=commit, source="dir" if location is None else "git", files=names,
                            warnings=warnings)


def extract_git_tree(top: Path, treeish: str, writer: TreeWriter, dest: str, where: str) -> None:
    """Write the files of `treeish` (e.g. `HEAD:sub/dir`) of the repository `top` under `dest`,
    streamed from `git archive` (no checkout, no hook), checking git's exit code."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(["git", "archive", "--format=tar", treeish], cwd=top, stdout=subprocess.PIPE,
                                stderr=stderr, env={**os.environ, **_GIT_ENV})
        assert proc.stdout is not None
        try:
            with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                for member in archive:
                    _extract_member(archive, member, writer, dest, where)
        except tarfile.TarError as exc:
            proc.kill()
            raise VeroError(f"unreadable `git archive` output: {exc}", where=where,
                            fix="check the repo with `git fsck`") from None
        finally:
            proc.stdout.close()
            code = proc.wait()
        stderr.seek(0)
        message = stderr.read().decode("utf-8", "replace").strip()
    if code != 0:
        raise VeroError(f"`git archive {treeish}` exited {code}: {message}", where=where,
                        fix="check the repo with `git fsck`")


def _extract_member(archive: tarfile.TarFile, member: tarfile.TarInfo, writer: TreeWriter, dest: str,
                    where: str) -> None:
    name = member.name.rstrip("/")
    if member.isdir() or name in ("", "pax_global_header"):
        return
    parts = name.split("/")
    if any(part in SKIPPED_NAMES for part in parts):
        return
    check_relpath(name, where)
    rel = f"{dest}/{name}"
    if member.issym():
        check_symlink(name, member.linkname, where)
        writer.symlink(rel, member.linkname)
    elif member.isfile():
        handle = archive.extractfile(member)
        assert handle is not None
        writer.write_bytes(rel, handle.read(), member.mode)
    else:
        raise VeroError(f"{name!r} in the repository is neither a file nor a symlink", where=where,
                        fix="remove it from the repo")


def _commit_of(writer: TreeWriter, files_dir: str, names: list[str]) -> str:
    """The baseline SHA of the files just written under `files_dir`, from the blob ids recorded
    while they were copied (the output gets no .git, and nothing is read again)."""
    blobs = []
    for rel in names:
        entry = writer.entries[f"{files_dir}/{rel}"]
        assert entry.git_blob is not None  # copied with git_blob=True, or a symlink
        mode = 0o120000 if entry.symlink is not None else 0o100000 | entry.mode
        blobs.append(BaselineBlob(rel, mode, entry.git_blob))
    return baseline_commit_of_blobs(writer.root / files_dir, blobs)
