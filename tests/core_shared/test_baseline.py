"""The baseline commit is a pure function of the files: same SHA anywhere, whatever the config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vero.baseline import BaselineBlob, baseline_commit_of_blobs, make_baseline_commit, restore_baseline
from vero.compiler.tree import git_blob_id, walk_tree
from vero.errors import VeroError


def _files(root: Path) -> Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "agent.py").write_text("def solve(row):\n    return row\n")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    (root / ".gitignore").write_text("*.log\n")
    (root / "kept.log").write_text("ignored by .gitignore but part of the baseline\n")
    return root


def test_same_files_same_sha_regardless_of_user_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_baseline_commit(_files(tmp_path / "a"))
    # A hostile global config (hooks, identity, signing) must not change anything.
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n name = x\n email = y@z\n[commit]\n gpgSign = true\n")
    monkeypatch.setenv("HOME", str(home))
    second = make_baseline_commit(_files(tmp_path / "b"))
    assert first == second
    assert len(first) == 40
    tracked = subprocess.run(["git", "ls-files", "-s"], cwd=tmp_path / "b", capture_output=True, text=True,
                             check=True).stdout
    assert "kept.log" in tracked
    assert "100755" in next(line for line in tracked.splitlines() if line.endswith("run.sh"))


def test_content_change_changes_sha(tmp_path: Path) -> None:
    first = make_baseline_commit(_files(tmp_path / "a"))
    root = _files(tmp_path / "b")
    (root / "pkg" / "agent.py").write_text("def solve(row):\n    return None\n")
    assert make_baseline_commit(root) != first


def test_existing_git_dir_is_refused(tmp_path: Path) -> None:
    root = _files(tmp_path / "a")
    os.mkdir(root / ".git")
    with pytest.raises(VeroError, match="already contain a .git"):
        make_baseline_commit(root)


def test_restore_checks_the_recorded_sha(tmp_path: Path) -> None:
    baseline = tmp_path / "baseline"
    sha = make_baseline_commit(_files(tmp_path / "src"))
    _files(baseline / "files")
    (baseline / "BASELINE.json").write_text(f'{{"commit": "{sha}"}}')
    assert restore_baseline(baseline, tmp_path / "repo") == sha
    (baseline / "files" / "run.sh").write_text("tampered\n")
    with pytest.raises(VeroError, match="BASELINE.json says"):
        restore_baseline(baseline, tmp_path / "repo2")


def _blobs(root: Path) -> list[BaselineBlob]:
    """Each file's blob id computed here, from its bytes (what the compiler records while copying)."""
    blobs = []
    for rel, path, link in walk_tree(root, where="test"):
        if link is not None:
            blobs.append(BaselineBlob(rel, 0o120000, git_blob_id(link.encode())))
        else:
            mode = 0o100755 if path.stat().st_mode & 0o111 else 0o100644
            blobs.append(BaselineBlob(rel, mode, git_blob_id(path.read_bytes())))
    return blobs


def _tricky(root: Path) -> Path:
    """Names that sort differently as paths and as tree entries, links, empty and odd files."""
    _files(root)
    for rel in ("a-b/x.py", "a.b", "a/b/c.txt", "a0", "é/ü.txt", "with space/new\nline", "deep/1/2/3/4.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode() * 3)
    (root / "empty").write_bytes(b"")
    (root / "binary.bin").write_bytes(bytes(range(256)) * 64)
    os.symlink("a/b/c.txt", root / "link")
    os.symlink("a", root / "dirlink")
    return root


def test_commit_from_blob_ids_is_the_commit_git_add_makes(tmp_path: Path) -> None:
    files = _tricky(tmp_path / "files")
    expected = make_baseline_commit(_tricky(tmp_path / "git"))
    assert baseline_commit_of_blobs(files, _blobs(files)) == expected
    assert not (files / ".git").exists()


def test_commit_from_blob_ids_applies_gitattributes_like_git_add(tmp_path: Path) -> None:
    def tree(root: Path) -> Path:
        _files(root)
        (root / ".gitattributes").write_text("* text=auto\n")
        (root / "pkg" / "crlf.txt").write_bytes(b"one\r\ntwo\r\n")
        (root / "pkg" / "new\nline.txt").write_bytes(b"x\r\n")
        return root
    files = tree(tmp_path / "files")
    expected = make_baseline_commit(tree(tmp_path / "git"))
    assert baseline_commit_of_blobs(files, _blobs(files)) == expected


def test_commit_from_blob_ids_refuses_what_git_add_refuses(tmp_path: Path) -> None:
    root = _files(tmp_path / "files")
    (root / ".GIT").mkdir()
    (root / ".GIT" / "config").write_text("x\n")
    with pytest.raises(VeroError, match=r"refused the baseline: .*\.GIT/config"):
        baseline_commit_of_blobs(root, _blobs(root))
    with pytest.raises(VeroError):
        make_baseline_commit(root)


def test_commit_from_blob_ids_of_a_deep_tree_is_the_commit_git_add_makes(tmp_path: Path) -> None:
    def tree(root: Path) -> Path:
        _files(root)
        deep = root.joinpath(*["d"] * 100)
        deep.mkdir(parents=True)
        (deep / "leaf.txt").write_text("leaf\n")
        (root / "d" / "d.txt").write_text("beside\n")
        return root
    files = tree(tmp_path / "files")
    assert baseline_commit_of_blobs(files, _blobs(files)) == make_baseline_commit(tree(tmp_path / "git"))
