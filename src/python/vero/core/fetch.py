"""Reading a commit out of the optimizer's repository without opening it as root.

The optimizer controls every byte of its repository, `.git` included: a `packed-refs` that is
a symlink to the admin token, an alternates file naming the labels, a FIFO, a pack that never
ends. So the trusted side never opens it. An unprivileged process (the optimizer's own uid in
the sidecar), confined (no network, rlimits, its own pid namespace, a timeout), fetches the
commit into a scratch repository in a directory vero created and writes one file: a thin pack
of the objects the trusted repository lacks. Root then reads that one regular file (no link
followed, size-limited) into `git index-pack --strict` in its own repository. What the
unprivileged git said goes to the admin log only.

Before that, a branch name (or `HEAD`) is resolved by the same unprivileged user, equally
confined, in a resolver the spawner starts once and keeps (`vero.core.spawner`): it reads the
loose and packed refs of `.git` as plain files the way `git ls-remote` lists them, and copies
no object (`resolve_ref`).
When the name points to a commit the trusted repo imported before, the fetch is skipped. Only a
SHA equal to one the trusted side already verified is taken from that answer; anything else (a
new commit, a tag object, a repository not laid out the plain way, no answer) goes through the
fetch, where git decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pydantic import ValidationError

from vero.container import CONTAINER
from vero.core.benchmark import FullSha
from vero.core.confine import SAFE_PATH, Confinement
from vero.core.incidents import withheld
from vero.core.limits import RepoLimits
from vero.core.rejections import BadInput
from vero.core.sandbox import run_sandboxed
from vero.core.spawner import RunningJob, Spawner, refs_job
from vero.models import StrictModel

PACK = "incoming.pack"
FIX = f"commit your work in {CONTAINER.repo_dir} and pass an existing commit SHA or branch name"

# Run by the unprivileged fetcher (stdlib only, `python -I -S`). Arguments: source repo, ref,
# pack path, size limit in bytes (RLIMIT_FSIZE stops a file at exactly that size); stdin: commit
# SHAs the trusted repo already has. Prints one JSON line.
FETCH_SCRIPT = r"""
import json, os, subprocess, sys
source, ref, pack, limit = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
known = sys.stdin.read().split()
def hit_limit():
    for parent, _, files in os.walk("."):
        if any(os.path.getsize(os.path.join(parent, name)) >= limit for name in files):
            return True
    return False
def git(*args, **kwargs):
    return subprocess.run(["git", "--git-dir=repo.git", *args], stderr=subprocess.PIPE, check=False, **kwargs)
def done(**fields):
    print(json.dumps(fields))
    sys.exit(0)
def failed(stage, result):
    sys.stderr.buffer.write(result.stderr[-8000:])
    done(error="too_large" if hit_limit() else stage, code=result.returncode)
# No template: nothing to copy in, nothing to remove afterwards.
step = subprocess.run(["git", "init", "--quiet", "--bare", "--template=", "repo.git"], stderr=subprocess.PIPE,
                      check=False)
if step.returncode:
    failed("init", step)
step = git("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules", "--",
           source, ref + ":refs/vero/incoming")
if step.returncode:
    failed("fetch", step)
step = git("rev-parse", "--verify", "--quiet", "refs/vero/incoming^{commit}", stdout=subprocess.PIPE)
if step.returncode:
    done(error="not_a_commit")
sha = step.stdout.decode().strip()
if sha in known:
    done(commit=sha, pack=False)
check = git("cat-file", "--batch-check=%(objectname) %(objecttype)", input="\n".join(known).encode(),
            stdout=subprocess.PIPE)
present = [line.split()[0] for line in check.stdout.decode().splitlines() if line.endswith(" commit")]
revs = sha + "\n" + "".join("^" + commit + "\n" for commit in present)
with open(pack, "wb") as handle:
    step = git("pack-objects", "--revs", "--thin", "--stdout", "--quiet", input=revs.encode(), stdout=handle)
if step.returncode:
    failed("pack", step)
done(commit=sha, pack=True)
"""

# What a short ref name means, in git's order (its `ref_rev_parse_rules`): `git fetch` takes the
# first rule that names an existing ref, and so does `resolve_ref`.
REF_RULES = ("{}", "refs/{}", "refs/tags/{}", "refs/heads/{}", "refs/remotes/{}", "refs/remotes/{}/HEAD")

GITCONFIG = """\
[safe]
\tdirectory = *
[protocol "file"]
\tallow = always
[core]
\thooksPath = /dev/null
\tfsmonitor = false
[transfer]
\tfsckObjects = true
[gc]
\tauto = 0
"""


class FetchReport(StrictModel):
    """The fetcher's one line of output."""

    commit: str | None = None
    pack: bool = False
    error: str | None = None
    code: int | None = None


class RefAnswer(StrictModel):
    """One answer of the resolver: each name's object id (None: no such ref), or None for a
    repository git must read itself (`unclear` says why)."""

    refs: dict[str, FullSha | None] | None
    unclear: str | None = None


class RefResolver:
    """The fetcher's resolver job (`vero.core.spawner_server`), started on first use and kept:
    a question costs a few reads by a process already running, not a process. One question at a
    time; a resolver that times out or misbehaves is ended and started afresh for the next."""

    def __init__(self, spawner: Spawner) -> None:
        self._spawner = spawner
        self._lock = threading.Lock()
        self._job: RunningJob | None = None

    def ask(self, source: Path, names: Sequence[str], timeout: float) -> RefAnswer | None:
        """The answer for `names` in the repository `source`; None if it was not given in time."""
        question = json.dumps({"repo": str(source), "names": list(names)}).encode()
        deadline = time.monotonic() + timeout
        with self._lock:
            # A resolver that ended between questions (its CPU-time limit, say) is started again
            # once; one that used up the time is not.
            for _ in range(2):
                if self._job is None or self._job.closed:
                    self._job = self._spawner.start(refs_job(), cwd=Path("/"),
                                                    env={"PATH": SAFE_PATH, "LC_ALL": "C"})
                line = self._job.ask(question, deadline - time.monotonic())
                if line is not None or time.monotonic() >= deadline:
                    break
        if line is None:
            return None
        try:
            return RefAnswer.model_validate_json(line)
        except ValidationError:
            with self._lock:
                if self._job is not None:
                    self._job.close()  # not our resolver's answer: start afresh
            return RefAnswer(refs=None, unclear="the resolver's answer was unreadable")

    def close(self) -> None:
        """End the resolver, if it runs, and its fork server."""
        with self._lock:
            if self._job is not None:
                self._job.close()
                self._job = None
        self._spawner.close()


@dataclass(frozen=True)
class FetchSettings:
    """Who fetches, where its scratch directories go, and the limits on what it may bring."""

    confinement: Confinement
    scratch_parent: Path
    limits: RepoLimits

    @cached_property
    def resolver(self) -> RefResolver:
        """The ref resolver, confined as the fetch and without network. It runs no candidate code,
        so any interpreter does: this one, which exists wherever vero runs."""
        return RefResolver(Spawner(self.confinement, python=sys.executable, network=False))

    def close(self) -> None:
        """End the ref resolver and its fork server, if they were started."""
        if "resolver" in self.__dict__:
            self.resolver.close()


@dataclass(frozen=True)
class FetchedCommit:
    """A commit read from the optimizer's repo: its SHA and, unless the trusted repo already has
    it, an open pack of the objects it lacks."""

    commit: str
    pack: int | None  # a file descriptor, owned by the context that yielded this


def _scratch(settings: FetchSettings) -> Path:
    parent = settings.scratch_parent
    parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="fetch-", dir=parent))
    (scratch / "gitconfig").write_text(GITCONFIG)
    user = settings.confinement.user
    if user is not None:
        os.chown(scratch, user.uid, user.gid)
    scratch.chmod(0o700)
    return scratch


def _env(scratch: Path) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(scratch), "LC_ALL": "C",
            "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(scratch / "gitconfig"),
            "GIT_TERMINAL_PROMPT": "0", "GIT_PROTOCOL_FROM_USER": "0"}


def _open_pack(scratch: Path, limit: int) -> int:
    """Open the fetcher's pack without following links; it must be a regular file within `limit`."""
    try:
        fd = os.open(scratch / PACK, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise withheld(BadInput, "the commit could not be read from the agent repository",
                       f"opening the fetched pack failed: {exc}", fix=FIX) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        raise withheld(BadInput, "the commit could not be read from the agent repository",
                       f"the fetched pack is not a regular file within {limit} bytes "
                       f"(mode {info.st_mode:o}, size {info.st_size})", fix=FIX)
    os.set_blocking(fd, True)
    return fd


def _timed_out(ref: str, limits: RepoLimits, said: str) -> BadInput:
    return withheld(BadInput, f"reading {ref!r} from the agent repository took longer than "
                    f"{limits.fetch_timeout:g} s", said,
                    fix=f"check {CONTAINER.repo_dir}/.git for special files (FIFOs, devices) and oversized "
                        "objects; commit normally and pass a commit SHA")


def _said(returncode: int | None, stdout: str, stderr: str) -> str:
    return f"exit {returncode}; stderr:\n{stderr}\nstdout:\n{stdout}"


def resolve_ref(source: Path, ref: str, settings: FetchSettings) -> str | None:
    """The object `ref` (a validated name, not a SHA) names in the optimizer's repo `source`, read
    by the unprivileged resolver (module docstring) with git's order of rules, no object copied;
    None when there is no clear answer, so the caller fetches (and reports what went wrong). A
    repository that wedges the resolver raises the fetch's own timeout error.
    """
    limits = settings.limits
    names = [rule.format(ref) for rule in REF_RULES]
    answer = settings.resolver.ask(source, names, limits.fetch_timeout)
    if answer is None:
        raise _timed_out(ref, limits, "the ref resolver gave no answer in time")
    if answer.refs is None:
        return None
    for name in names:
        if answer.refs.get(name):
            return answer.refs[name]
    return None


@contextlib.contextmanager
def fetch_commit(source: Path, ref: str, known: Sequence[str], settings: FetchSettings,
                 ) -> Iterator[FetchedCommit]:
    """Read `ref` of the optimizer's repo `source` as the unprivileged fetcher (module docstring).

    `known` are commits the trusted repo has (their objects are left out of the pack). Every
    failure is a `BadInput` with a fixed message and an error id; what git said is its detail.
    """
    limits = settings.limits
    scratch = _scratch(settings)
    try:
        limit = limits.commit_mb * 1024 * 1024
        run = run_sandboxed([sys.executable, "-I", "-S", "-c", FETCH_SCRIPT, str(source), ref, PACK, str(limit)],
                            cwd=scratch, env=_env(scratch), timeout=limits.fetch_timeout,
                            confinement=settings.confinement, stdin_data="\n".join(known).encode(),
                            network=False, file_size_mb=limits.commit_mb)
        said = _said(run.returncode, run.stdout_tail, run.stderr_tail)
        if run.timed_out:
            raise _timed_out(ref, limits, said)
        try:
            report = FetchReport.model_validate_json(run.stdout_tail.strip().splitlines()[-1])
        except (IndexError, ValidationError):
            raise withheld(BadInput, f"cannot read {ref!r} from the agent repository", said, fix=FIX) from None
        if report.error == "too_large":
            raise withheld(BadInput, f"commit {ref!r} brings more than {limits.commit_mb} MiB of new objects",
                           said, fix="keep large data out of the agent repository")
        if report.error == "not_a_commit":
            raise withheld(BadInput, f"{ref!r} does not name a commit in the agent repository", said,
                           fix="pass a commit SHA or a branch name")
        if report.error is not None or report.commit is None:
            raise withheld(BadInput, f"cannot read {ref!r} from the agent repository: no such commit or "
                           "branch, or the repository is unreadable", said, fix=FIX)
        if not report.pack:
            yield FetchedCommit(commit=report.commit, pack=None)
            return
        fd = _open_pack(scratch, limit)
        try:
            yield FetchedCommit(commit=report.commit, pack=fd)
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

