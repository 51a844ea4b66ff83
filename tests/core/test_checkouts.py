"""Checkouts shared by the evaluations of one commit: reuse, what is kept, what is never removed."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support.mode_a import IMPROVED_AGENT, PARTIAL_AGENT, commit_agent, make_mode_a_bench
from vero.baseline import restore_baseline
from vero.core.checkouts import SharedCheckouts
from vero.core.gitops import TrustedRepo


def _repo_with_commits(tmp_path: Path, sources: list[str]) -> tuple[TrustedRepo, list[str]]:
    bench = make_mode_a_bench(tmp_path / "bench", {"train": 2})
    restore_baseline(bench.baseline_dir, tmp_path / "repo")
    repo = TrustedRepo(tmp_path / "repo")
    commits = []
    for source in sources:
        commit = commit_agent(bench.agent_repo, source)
        repo.import_commit(bench.agent_repo, commit)
        commits.append(commit)
    return repo, commits


def test_evaluations_of_one_commit_share_its_checkout(tmp_path: Path) -> None:
    repo, (commit,) = _repo_with_commits(tmp_path, [IMPROVED_AGENT])
    checkouts = SharedCheckouts(repo, tmp_path / "work")
    with checkouts.checkout(commit) as first, checkouts.checkout(commit) as second:
        assert first == second
        assert "int(left) + int(right)" in (first / "agent.py").read_text()
    with checkouts.checkout(commit) as third:
        assert third == first   # kept after its last user left
    assert [p.name for p in (tmp_path / "work").iterdir()] == [first.name]
    checkouts.clear()
    assert list((tmp_path / "work").iterdir()) == []


def test_only_the_last_commits_are_kept_and_none_in_use_is_removed(tmp_path: Path) -> None:
    repo, commits = _repo_with_commits(tmp_path, [IMPROVED_AGENT, PARTIAL_AGENT, IMPROVED_AGENT + "# again\n"])
    checkouts = SharedCheckouts(repo, tmp_path / "work", keep=1)
    with checkouts.checkout(commits[0]) as oldest:
        for commit in commits[1:]:
            with checkouts.checkout(commit):
                pass
        assert oldest.is_dir()   # in use: over `keep`, yet still there
    kept = list((tmp_path / "work").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(f"wt-{commits[0][:12]}")


def test_concurrent_first_evaluations_end_with_one_checkout(tmp_path: Path) -> None:
    repo, (commit,) = _repo_with_commits(tmp_path, [IMPROVED_AGENT])
    checkouts = SharedCheckouts(repo, tmp_path / "work")
    barrier = threading.Barrier(4)
    seen: list[Path] = []

    def evaluate() -> None:
        barrier.wait()
        with checkouts.checkout(commit) as path:
            seen.append(path)
            barrier.wait()   # all four hold the checkout at once

    threads = [threading.Thread(target=evaluate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 1
    assert list((tmp_path / "work").iterdir()) == [seen[0]]
