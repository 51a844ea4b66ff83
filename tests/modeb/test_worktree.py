"""The candidate checkout: a temporary detached worktree, no repo hooks, removed afterwards."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.modeb.agent_repo import git, make_agent_repo
from vero.errors import VeroError
from vero.modeb.runner.worktree import check_ref, checkout, resolve_commit


def test_checkout_is_the_commit_and_is_removed_afterwards_without_running_hooks(tmp_path: Path) -> None:
    repo = make_agent_repo(tmp_path)
    marker = tmp_path / "hook-ran"
    hook = repo.path / ".git" / "hooks" / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)

    sha = resolve_commit(repo.path, "HEAD~1")
    assert sha == repo.baseline
    with checkout(repo.path, sha) as worktree:
        assert git(worktree, "rev-parse", "HEAD") == repo.baseline
        assert "sum-integers" not in (worktree / "rule_agent" / "skills.py").read_text()
        assert len(git(repo.path, "worktree", "list").splitlines()) == 2
        holder = worktree.parent
    assert not marker.exists()
    assert not holder.exists()
    assert len(git(repo.path, "worktree", "list").splitlines()) == 1


def test_checkout_is_removed_when_the_evaluation_fails(tmp_path: Path) -> None:
    repo = make_agent_repo(tmp_path)
    with pytest.raises(RuntimeError), checkout(repo.path, repo.improved) as worktree:
        raise RuntimeError("evaluation failed")
    assert not worktree.exists()
    assert len(git(repo.path, "worktree", "list").splitlines()) == 1


def test_a_checkout_left_by_a_killed_run_is_replaced(tmp_path: Path) -> None:
    repo = make_agent_repo(tmp_path)
    holder = tmp_path / "results" / ".candidate-checkout"
    git(repo.path, "worktree", "add", "--detach", "--quiet", str(holder / "repo"), repo.baseline)
    (holder / "repo" / "stale.txt").write_text("left by a SIGKILLed runner")
    with checkout(repo.path, repo.improved, holder) as worktree:
        assert worktree == holder / "repo" and not (worktree / "stale.txt").exists()
        assert git(worktree, "rev-parse", "HEAD") == repo.improved
    assert not holder.exists()
    assert len(git(repo.path, "worktree", "list").splitlines()) == 1


def test_a_checkout_location_that_is_not_a_directory_is_refused_untouched(tmp_path: Path) -> None:
    repo = make_agent_repo(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "repo").mkdir(parents=True)
    (elsewhere / "repo" / "keep.txt").write_text("not vero's")
    link = tmp_path / "results" / ".candidate-checkout"
    link.parent.mkdir()
    link.symlink_to(elsewhere)
    with pytest.raises(VeroError, match="not a directory"), checkout(repo.path, repo.improved, link):
        pass
    assert (elsewhere / "repo" / "keep.txt").read_text() == "not vero's" and link.is_symlink()
    link.unlink()
    link.write_text("a file")
    with pytest.raises(VeroError, match="not a directory"), checkout(repo.path, repo.improved, link):
        pass
    assert link.read_text() == "a file"


@pytest.mark.parametrize("ref", ["--upload-pack=touch /tmp/x", "a..b", "HEAD@{1}", "main/", "-", "a b"])
def test_option_like_or_odd_refs_are_refused(ref: str) -> None:
    with pytest.raises(VeroError, match="not a commit SHA or a plain ref name"):
        check_ref(ref)


@pytest.mark.parametrize("ref", ["0123abcd", "main", "v1.0", "HEAD~1", "feature/x-2", "HEAD^"])
def test_plain_refs_are_accepted(ref: str) -> None:
    assert check_ref(ref) == ref


def test_missing_repo_or_commit_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VeroError, match="does not exist"):
        resolve_commit(tmp_path / "nope", "HEAD")
    (tmp_path / "plain").mkdir()
    with pytest.raises(VeroError, match="not a git repository"):
        resolve_commit(tmp_path / "plain", "HEAD")
    repo = make_agent_repo(tmp_path)
    with pytest.raises(VeroError, match="no commit 'nonexistent'"):
        resolve_commit(repo.path, "nonexistent")
