"""The fetcher's ref resolver (`resolve_ref`): the answer `git ls-remote` gives for every plain
layout of refs (loose, packed, symbolic, tags, remotes), and no answer (so the caller fetches
and git decides) for anything else: links, special files, a `.git` file, reftable."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mode_a import git, is_root, shared_tmp
from vero.core.confine import Confinement, numeric_user, unconfined
from vero.core.fetch import REF_RULES, FetchSettings, resolve_ref
from vero.core.limits import CandidateLimits, RepoLimits
from vero.core.rejections import BadInput

NAMES = ["HEAD", "main", "side", "v1", "v2", "origin/main", "origin", "both", "nope", "heads/main", "tags/v1"]


def _ls_remote(repo: Path, ref: str) -> str | None:
    """What the fetcher used to answer: git's own listing, first rule that matches."""
    out = subprocess.run(["git", "ls-remote", "--", str(repo), *(rule.format(ref) for rule in REF_RULES)],
                         capture_output=True, text=True, check=True).stdout
    refs = {name: object_id for object_id, name in (line.split("\t") for line in out.splitlines())}
    return next((refs[rule.format(ref)] for rule in REF_RULES if rule.format(ref) in refs), None)


@pytest.fixture
def repo() -> Iterator[Path]:
    """Branches, a lightweight and an annotated tag, a remote with its HEAD, a name both a tag
    and a branch: every kind of ref `git ls-remote` lists."""
    with shared_tmp() as root:
        path = root / "agent"
        path.mkdir()
        git(path, "init", "-q", "-b", "main")
        for n in range(3):
            (path / "f").write_text(str(n))
            git(path, "add", "f")
            git(path, "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", f"c{n}")
            git(path, "branch", "-f", ["side", "both", "x"][n])
        git(path, "tag", "v1", "HEAD~1")
        git(path, "-c", "user.name=a", "-c", "user.email=a@a", "tag", "-a", "-m", "annotated", "v2", "HEAD~2")
        git(path, "tag", "both", "HEAD~2")
        git(path, "update-ref", "refs/remotes/origin/main", "HEAD~1")
        git(path, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/main")
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        yield path


@contextlib.contextmanager
def _resolving(root: Path, limits: RepoLimits | None = None) -> Iterator[FetchSettings]:
    """Fetch settings as in the sidecar (the fetch user, its own namespaces, when root); the
    resolver they start is ended on the way out."""
    confinement = (Confinement(user=numeric_user(1000), limits=CandidateLimits(), namespaces=True) if is_root()
                   else unconfined())
    settings = FetchSettings(confinement=confinement, scratch_parent=root / "fetch", limits=limits or RepoLimits())
    try:
        yield settings
    finally:
        settings.close()


def _answers(repo: Path, settings: FetchSettings) -> dict[str, str | None]:
    return {name: resolve_ref(repo, name, settings) for name in NAMES}


@pytest.mark.parametrize("layout", ["loose", "packed", "detached"])
def test_the_answer_is_git_ls_remote_s(repo: Path, layout: str) -> None:
    if layout == "packed":
        git(repo, "pack-refs", "--all")
    if layout == "detached":
        git(repo, "checkout", "-q", "--detach", "HEAD~1")
    with _resolving(repo.parent) as settings:
        expected = {name: _ls_remote(repo, name) for name in NAMES}
        assert _answers(repo, settings) == expected
    assert expected["HEAD"] and expected["v2"] and expected["nope"] is None  # the layouts are what they say


def _unclear(repo: Path, settings: FetchSettings, names: tuple[str, ...] = ("HEAD", "main")) -> None:
    for name in names:
        assert resolve_ref(repo, name, settings) is None, name


@pytest.mark.parametrize("change", ["head link", "ref link", "packed-refs link", "git file", "odd value",
                                    "reftable"])
def test_anything_but_plain_files_gets_no_answer(repo: Path, change: str, tmp_path: Path) -> None:
    git_dir = repo / ".git"
    if change == "head link":
        (git_dir / "HEAD").unlink()
        (git_dir / "HEAD").symlink_to(git_dir / "refs" / "heads" / "side")
    elif change == "ref link":
        (git_dir / "refs" / "heads" / "main").unlink()
        (git_dir / "refs" / "heads" / "main").symlink_to(git_dir / "refs" / "heads" / "side")
    elif change == "packed-refs link":
        git(repo, "pack-refs", "--all")
        target = repo.parent / "elsewhere"
        (git_dir / "packed-refs").rename(target)
        (git_dir / "packed-refs").symlink_to(target)
    elif change == "git file":
        git_dir.rename(repo.parent / "moved.git")
        (repo / ".git").write_text(f"gitdir: {repo.parent / 'moved.git'}\n")
    elif change == "odd value":
        (git_dir / "refs" / "heads" / "main").write_text("HEAD~1\n")
    else:
        (git_dir / "reftable").mkdir()
    with _resolving(repo.parent) as settings:
        _unclear(repo, settings, ("HEAD",) if change == "head link" else ("HEAD", "main"))


def test_a_fifo_as_a_ref_neither_blocks_nor_answers(repo: Path) -> None:
    main = repo / ".git" / "refs" / "heads" / "main"
    main.unlink()
    os.mkfifo(main, 0o666)
    with _resolving(repo.parent) as settings:
        started = time.monotonic()
        _unclear(repo, settings)
        assert time.monotonic() - started < 10


@pytest.mark.skipif(not is_root(), reason="reading as another user needs root (CI runs as root)")
def test_a_ref_the_fetch_user_cannot_read_gets_no_answer(repo: Path) -> None:
    """The resolver runs as the fetch user: a ref readable by root only is unclear to it."""
    (repo / ".git" / "refs" / "heads" / "main").chmod(0o600)
    (repo / ".git" / "HEAD").chmod(0o600)
    with _resolving(repo.parent) as settings:
        _unclear(repo, settings)


def test_a_resolver_past_the_fetch_timeout_is_the_fetch_s_timeout_error(repo: Path) -> None:
    with (_resolving(repo.parent, RepoLimits(fetch_timeout=0.001)) as settings,
          pytest.raises(BadInput, match=r"reading 'main' from the agent repository took longer than")):
        resolve_ref(repo, "main", settings)


def test_one_resolver_answers_every_question_and_sees_each_change(repo: Path) -> None:
    with _resolving(repo.parent) as settings:
        assert resolve_ref(repo, "HEAD", settings) == _ls_remote(repo, "HEAD")
        resolver = settings.resolver._job
        for n in range(3):
            git(repo, "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-q", "--allow-empty", "-m", f"e{n}")
            assert resolve_ref(repo, "HEAD", settings) == _ls_remote(repo, "HEAD")  # nothing cached
        assert settings.resolver._job is resolver  # the same process all along
    assert resolver is not None and resolver.closed


def test_a_resolver_that_timed_out_is_replaced_for_the_next_question(repo: Path) -> None:
    with _resolving(repo.parent) as settings:
        names = ["HEAD"]
        assert settings.resolver.ask(repo, names, timeout=1e-6) is None  # fault: no time to answer
        late = settings.resolver._job
        assert late is not None and late.closed
        answer = settings.resolver.ask(repo, names, timeout=30)
        assert answer is not None and answer.refs == {"HEAD": _ls_remote(repo, "HEAD")}
        assert settings.resolver._job is not late


def test_a_resolver_that_ended_between_questions_is_started_again(repo: Path) -> None:
    with _resolving(repo.parent) as settings:
        assert resolve_ref(repo, "main", settings) == _ls_remote(repo, "main")
        job = settings.resolver._job
        assert job is not None
        job._spawner._signal(job._keeper, 9)  # fault injection: the resolver dies (as at its CPU-time limit)
        time.sleep(0.2)
        assert resolve_ref(repo, "main", settings) == _ls_remote(repo, "main")
        assert settings.resolver._job is not job
