"""Git helpers: hostile refs are rejected, the untrusted repo's config and hooks never run."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.mode_a import IMPROVED_AGENT, commit_agent, git, is_root, make_mode_a_bench, shared_tmp
from vero.baseline import restore_baseline
from vero.core.gitops import TrustedRepo, validate_ref
from vero.core.rejections import BadInput


@pytest.mark.parametrize("ref", ["a" * 40, "0123456789abcdef" * 4, "main", "HEAD", "feature/x-1", "v1.0",
                                 "release@2", "a+b", "user=1,2"])
def test_valid_refs(ref: str) -> None:
    assert validate_ref(ref) == ref


@pytest.mark.parametrize("ref", [
    "", "--upload-pack=touch /tmp/pwned", "-c", "--output=/etc/passwd", "+main", "^main", "main~1", "main^",
    "a..b", "a@{1}", "@", "a b", "a:b", "refs/heads/*", "a\\b", "a?", "[a", "x.lock", "a/.hidden", ".a",
    "a//b", "a/", "a.", "a\nb", "a\x00", "a\x7f", "é", "x" * 256, "/abs", "A" * 40 + "\n",
])
def test_hostile_refs_are_rejected(ref: str) -> None:
    with pytest.raises(BadInput, match="invalid commit"):
        validate_ref(ref)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[TrustedRepo, Path, str]:
    bench = make_mode_a_bench(tmp_path / "bench")
    restore_baseline(bench.baseline_dir, tmp_path / "trusted")
    return TrustedRepo(tmp_path / "trusted"), bench.agent_repo, bench.baseline_commit


def test_upload_pack_option_never_reaches_git(setup: tuple[TrustedRepo, Path, str], tmp_path: Path) -> None:
    repo, agent, _ = setup
    marker = tmp_path / "pwned"
    for ref in (f"--upload-pack=touch {marker}", f"--upload-pack=sh -c 'touch {marker}'", "-h"):
        with pytest.raises(BadInput):
            repo.import_commit(agent, ref)
    assert not marker.exists()


def test_import_by_branch_and_sha_and_head(setup: tuple[TrustedRepo, Path, str]) -> None:
    repo, agent, baseline = setup
    improved = commit_agent(agent, IMPROVED_AGENT)
    assert repo.commit_of(improved) is None
    assert repo.import_commit(agent, "main") == improved
    assert repo.import_commit(agent, "HEAD") == improved
    assert repo.import_commit(agent, baseline) == baseline
    # Kept under refs/vero/commits so it survives the agent rewriting its history.
    kept = git(repo.path, "for-each-ref", "--format=%(refname)", "refs/vero/commits")
    assert kept == f"refs/vero/commits/{improved}"
    assert git(repo.path, "for-each-ref", "refs/vero/incoming") == ""


def test_a_branch_naming_an_imported_commit_copies_no_object(setup: tuple[TrustedRepo, Path, str],
                                                             tmp_path: Path) -> None:
    """The fetcher only resolves the name then (`git ls-remote`): a blob of the commit is gone from
    the agent repo, which a fetch would need, and the import still succeeds."""
    repo, agent, _ = setup
    improved = commit_agent(agent, IMPROVED_AGENT)
    assert repo.import_commit(agent, "main") == improved
    blob = git(agent, "rev-parse", f"{improved}:agent.py")
    (agent / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    assert repo.import_commit(agent, "main") == improved
    assert repo.import_commit(agent, "HEAD") == improved
    restore_baseline(tmp_path / "bench" / "baseline", tmp_path / "fresh")
    with pytest.raises(BadInput, match="cannot read 'main'"):  # a fetch would have failed
        TrustedRepo(tmp_path / "fresh").import_commit(agent, "main")


def test_sha_already_present_needs_no_agent_repo(setup: tuple[TrustedRepo, Path, str],
                                                 tmp_path: Path) -> None:
    repo, _, baseline = setup
    assert repo.import_commit(tmp_path / "missing", baseline) == baseline


def test_unknown_ref_and_non_commit_objects(setup: tuple[TrustedRepo, Path, str]) -> None:
    repo, agent, _ = setup
    with pytest.raises(BadInput, match=r"cannot read 'nope' from the agent repository.*\(error id E-"):
        repo.import_commit(agent, "nope")
    with pytest.raises(BadInput, match="cannot read"):
        repo.import_commit(agent, "f" * 40)
    tree = git(agent, "rev-parse", "HEAD^{tree}")
    git(agent, "tag", "treetag", tree)
    with pytest.raises(BadInput, match="does not name a commit"):
        repo.import_commit(agent, "treetag")


def test_annotated_tag_is_peeled(setup: tuple[TrustedRepo, Path, str]) -> None:
    repo, agent, baseline = setup
    git(agent, "tag", "-a", "-m", "t", "v1")
    assert repo.import_commit(agent, "v1") == baseline


def test_hostile_source_config_and_hooks_are_ignored(setup: tuple[TrustedRepo, Path, str],
                                                     tmp_path: Path) -> None:
    repo, agent, _ = setup
    improved = commit_agent(agent, IMPROVED_AGENT)
    marker = tmp_path / "hook-ran"
    hooks = agent / ".git" / "hooks"
    for name in ("pre-upload-pack", "post-checkout", "reference-transaction", "pre-auto-gc", "post-merge",
                 "fsmonitor-watchman", "upload-pack"):
        (hooks / name).write_text(f"#!/bin/sh\ntouch {marker}\n")
        (hooks / name).chmod(0o755)
    with (agent / ".git" / "config").open("a") as config:
        config.write(f"[core]\n\thooksPath = {hooks}\n\tfsmonitor = touch {marker}\n"
                     f"[uploadpack]\n\tpackObjectsHook = touch {marker}\n"
                     f"[include]\n\tpath = {tmp_path / 'extra.cfg'}\n")
    (tmp_path / "extra.cfg").write_text(f"[core]\n\tsshCommand = touch {marker}\n")
    assert repo.import_commit(agent, "main") == improved
    with repo.worktree(improved, tmp_path / "work"):
        pass
    assert not marker.exists()


@pytest.mark.skipif(not is_root(), reason="needs root to chown the agent repo to another uid")
def test_source_owned_by_another_uid(setup: tuple[TrustedRepo, Path, str]) -> None:
    repo, agent, _ = setup
    improved = commit_agent(agent, IMPROVED_AGENT)
    subprocess.run(["chown", "-R", "65534:65534", str(agent)], check=True)
    assert repo.import_commit(agent, "main") == improved


def test_worktree_is_clean_readable_and_removed(setup: tuple[TrustedRepo, Path, str]) -> None:
    repo, agent, baseline = setup
    improved = repo.import_commit(agent, commit_agent(agent, IMPROVED_AGENT))
    with shared_tmp() as work:
        with repo.worktree(improved, work) as path:
            assert (path / "agent.py").read_text() == IMPROVED_AGENT
            mode = (path / "agent.py").stat().st_mode
            assert mode & stat.S_IROTH and path.stat().st_mode & stat.S_IXOTH
            # The stored bytes only: no .git for candidate code to read or write.
            assert sorted(os.listdir(path)) == ["agent.py"]
            with repo.worktree(baseline, work) as other:  # concurrent worktrees of one repo
                assert "int(left)" not in (other / "agent.py").read_text()
        assert os.listdir(work) == []


def test_concurrent_imports_and_worktrees(setup: tuple[TrustedRepo, Path, str]) -> None:
    # Imports and checkouts run side by side without a lock (no git worktree bookkeeping).
    repo, agent, baseline = setup
    improved = repo.import_commit(agent, commit_agent(agent, IMPROVED_AGENT))
    errors: list[BaseException] = []

    def cycle() -> None:
        try:
            for i in range(4):
                assert repo.import_commit(agent, "HEAD") == improved
                with repo.worktree(improved if i % 2 else baseline, work) as path:
                    assert (path / "agent.py").is_file()
        except BaseException as exc:
            errors.append(exc)

    with shared_tmp() as work:
        threads = [threading.Thread(target=cycle) for _ in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and os.listdir(work) == []
