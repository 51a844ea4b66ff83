"""Exporting the baseline agent repo into the task, as the one deterministic baseline commit.

From a git work tree (the repo itself or a subtree of a bigger repo) the files are HEAD's, taken
with `git archive`; from a plain directory they are the files on disk minus `.git`. Both sides
(`agent-seed/` for main, `agent-baseline/` for the sidecar) get the same files and BASELINE.json.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from vero.baseline import BASELINE_FILES, BASELINE_JSON, BaselineInfo, make_baseline_commit
from vero.build.tree import SKIPPED_NAMES, TreeWriter, check_relpath, check_symlink, walk_tree
from vero.errors import VeroError
from vero.fsutil import canonical_json

SEED_DIR = "environment/agent-seed"
BASELINE_DIR = "environment/agent-baseline"
_GIT_ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}
RAM_DIR = "/dev/shm"


@dataclass
class ExportedBaseline:
    """What was exported: the commit SHA, where the files came from, and warnings for the user."""

    commit: str
    source: str                       # "git" or "dir"
    files: list[str]
    warnings: list[str] = field(default_factory=list)


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **_GIT_ENV}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)


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


def export_agent_repo(src: Path, writer: TreeWriter, *, where: str) -> ExportedBaseline:
    """Write the baseline files and BASELINE.json into both baseline dirs of `writer`'s tree."""
    _require_git(where)
    if not src.is_dir():
        raise VeroError(f"agent_repo {src} is not a directory", where=where,
                        fix="point agent_repo at the baseline candidate's directory")
    seed_files = f"{SEED_DIR}/{BASELINE_FILES}"
    location = _git_location(src, where)
    warnings: list[str] = []
    if location is None:
        source = "dir"
        writer.copy_tree(seed_files, src, where=where)
    else:
        source = "git"
        top, prefix = location
        warnings += _extract_head(top, prefix, writer, seed_files, where)
    prefix = seed_files + "/"
    files = sorted(rel.removeprefix(prefix) for rel in writer.entries if rel.startswith(prefix))
    if not files:
        raise VeroError("agent_repo has no files" + (" committed at HEAD" if source == "git" else ""),
                        where=where, fix="add the baseline candidate's files (and commit them in a git repo)")
    commit = _commit_of(writer.root / seed_files, where)
    info = canonical_json(BaselineInfo(commit=commit).model_dump(mode="json"))
    for rel in files:
        # Hard links: the two baselines are the same bytes, and linking costs no data writes.
        writer.link(f"{BASELINE_DIR}/{BASELINE_FILES}/{rel}", f"{seed_files}/{rel}")
    writer.write_text(f"{SEED_DIR}/{BASELINE_JSON}", info)
    writer.write_text(f"{BASELINE_DIR}/{BASELINE_JSON}", info)
    return ExportedBaseline(commit=commit, source=source, files=files, warnings=warnings)


def _extract_head(top: Path, prefix: str, writer: TreeWriter, dest: str, where: str) -> list[str]:
    """Extract HEAD's tree at `prefix` with `git archive`, checking git's exit code."""
    treeish = f"HEAD:{prefix}"
    verify = _git(["rev-parse", "--verify", "--quiet", treeish], top)
    kind = _git(["cat-file", "-t", verify.stdout.strip()], top) if verify.returncode == 0 else None
    if kind is None or kind.stdout.strip() != "tree":
        what = "has no commits" if _git(["rev-parse", "--verify", "--quiet", "HEAD"], top).returncode else (
            f"has nothing committed at {prefix or '.'!r} in HEAD")
        raise VeroError(f"the git repo {top} {what}", where=where,
                        fix="commit the baseline candidate's files (the baseline is HEAD's content)")
    warnings = []
    subtree = top / prefix if prefix else top
    status = _git(["status", "--porcelain", "--untracked-files=all", "--", "."], subtree)
    if status.returncode == 0 and status.stdout.strip():
        warnings.append(f"agent_repo {subtree} has uncommitted changes; the baseline is HEAD's content")
    extract_git_tree(top, treeish, writer, dest, where)
    return warnings


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


def _scratch_parent(files_dir: Path) -> str | None:
    """A RAM-backed directory for the scratch repo when it has ample room, else the default temp
    dir: the scratch copy and git's loose objects are thousands of small files, thrown away."""
    size = sum(path.lstat().st_size for _, path, _ in walk_tree(files_dir, where=str(files_dir)))
    try:
        if shutil.disk_usage(RAM_DIR).free > 4 * size + (64 << 20):
            return RAM_DIR
    except OSError:
        pass
    return None


def _commit_of(files_dir: Path, where: str) -> str:
    """The baseline SHA of the files, computed in a scratch copy (the output gets no .git)."""
    with tempfile.TemporaryDirectory(prefix="vero-baseline-", dir=_scratch_parent(files_dir)) as scratch:
        work = Path(scratch) / "repo"
        work.mkdir()
        for rel, path, link in walk_tree(files_dir, where=where):
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if link is not None:
                os.symlink(link, target)
            else:
                shutil.copy2(path, target)
        return make_baseline_commit(work)
