"""The baseline commit is a pure function of the files: same SHA anywhere, whatever the config."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vero.baseline import make_baseline_commit, restore_baseline
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
