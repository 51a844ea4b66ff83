"""Git on the trusted side: ref validation, commit import, clean checkouts.

The optimizer's repo is untrusted, `.git` included: its refs arrive over HTTP and nothing in it
may be opened by a privileged process. A ref is validated (a full hex SHA or a conservative ref
name) and always passed after `--`; the commit is read by an unprivileged, confined fetcher
(`vero.core.fetch`) and only its pack enters the trusted repo, through `git index-pack
--strict`. Git runs here with no system or user config and hooks disabled, and every call has
a timeout. Checkouts write the stored bytes (`vero.core.checkout`), never applying the
commit's own attributes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vero.core.benchmark import FULL_SHA_PATTERN
from vero.core.checkout import TreeEntry, parse_ls_tree, tree_problems, write_tree
from vero.core.confine import unconfined
from vero.core.fetch import FetchSettings, fetch_commit, resolve_ref
from vero.core.incidents import withheld
from vero.core.limits import RepoLimits
from vero.core.rejections import BadInput
from vero.core.storage import tool_failed_for_space
from vero.errors import VeroError

FULL_SHA = re.compile(FULL_SHA_PATTERN)
_REF_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@+=,-]*$")
_MAX_REF = 255

# Options for every git command on the trusted repo: nothing may run hooks, prompt, or gc.
GIT_OPTIONS: tuple[str, ...] = (
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.fsmonitor=false",
    "-c", "gc.auto=0",
    "-c", "maintenance.auto=false",
    "-c", "advice.detachedHead=false",
)


def validate_ref(ref: str) -> str:
    """Return `ref` if it is a full hex SHA or a safe ref name, else raise `BadInput`.

    Safe names follow `git check-ref-format --allow-onelevel` and, in addition, start with a
    letter or digit and use only `A-Z a-z 0-9 . _ / @ + = , -`, so no value can read as an
    option (`--upload-pack=...`), a refspec (`a:b`, `+a`, `^a`) or a revision expression.
    """
    def bad(why: str) -> BadInput:
        return BadInput(f"invalid commit {ref[:80]!r}: {why}",
                        fix="pass a full commit SHA (40 or 64 hex digits) or a branch/tag name "
                            "such as `main`")

    if not isinstance(ref, str) or not ref:
        raise bad("empty")
    if FULL_SHA.fullmatch(ref):
        return ref
    if len(ref) > _MAX_REF:
        raise bad(f"longer than {_MAX_REF} characters")
    if not _REF_CHARS.fullmatch(ref):
        raise bad("must start with a letter or digit and use only letters, digits and . _ / @ + = , -")
    if ".." in ref or "@{" in ref or ref == "@":
        raise bad("'..', '@{' and a lone '@' are not allowed")
    if ref.endswith(("/", ".")) or "//" in ref:
        raise bad("must not end with '/' or '.', nor contain '//'")
    for component in ref.split("/"):
        if component.startswith(".") or component.endswith(".lock"):
            raise bad("no path component may start with '.' or end with '.lock'")
    return ref


# Trusted-repo git calls read only vero's own data; the timeout is a backstop.
GIT_TIMEOUT = 600.0
COMMITS_PREFIX = "refs/vero/commits/"
# Trees of recently checked-out commits (a commit's tree never changes): most evaluations check
# out a commit evaluated just before.
_TREE_CACHE = 32


def _base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_PROTOCOL_FROM_USER": "0",
        "LC_ALL": "C",
    }


class TrustedRepo:
    """The sidecar's own repository: candidate commits are copied in before anything runs.

    `fetch` says who reads the optimizer's repo and with what limits; the default (tests and
    development) fetches as the current user without a namespace. Commits imported (and the
    baseline) are remembered in memory, and so are the trees of recent checkouts: repeated
    evaluations of a commit pay its transfer and checks once.
    """

    def __init__(self, path: Path, fetch: FetchSettings | None = None) -> None:
        self.path = Path(path)
        self.fetch = fetch or FetchSettings(confinement=unconfined(), scratch_parent=Path(tempfile.gettempdir()),
                                            limits=RepoLimits())
        self._imported: set[str] | None = None
        self._trees: dict[str, list[TreeEntry]] = {}
        self._trees_lock = threading.Lock()

    def _git(self, *args: str, check: bool = True, stdin: int | None = subprocess.DEVNULL,
             input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            result = subprocess.run(["git", *GIT_OPTIONS, *args], cwd=self.path, env=_base_env(),
                                    capture_output=True, text=True, check=False, umask=0o022,
                                    stdin=None if input_text is not None else stdin, input=input_text,
                                    timeout=GIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise VeroError(f"git {args[0]} on the trusted repository took longer than {GIT_TIMEOUT:g} s",
                            where=str(self.path), fix="check the admin volume") from None
        if check and result.returncode != 0:
            full = tool_failed_for_space(result.stderr, self.path)
            if full is not None:
                raise full
            raise VeroError(f"git {args[0]} failed on the trusted repository", where=str(self.path),
                            fix="check the trusted repository on the admin volume",
                            detail=result.stderr.strip()[-2000:])
        return result

    def commit_of(self, rev: str) -> str | None:
        """The commit SHA `rev` names in the trusted repo (tags peeled), or None."""
        result = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                           check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def known_commits(self) -> list[str]:
        """Every commit imported so far (and the baseline): objects the optimizer need not send."""
        listing = self._git("for-each-ref", "--format=%(objectname)", COMMITS_PREFIX, "refs/heads/").stdout
        return sorted(set(listing.split()))

    def imported(self, commit: str) -> bool:
        """Whether `commit` passed `import_commit` (or is the baseline): its objects are all here
        and its tree passed the checks."""
        if self._imported is None:
            self._imported = set(self.known_commits())
        return commit in self._imported

    def changed_paths(self, base: str, commit: str, paths: Sequence[str]) -> list[str]:
        """Files under `paths` (literal, relative to the repo root) that differ between two commits."""
        if not paths:
            return []
        result = self._git("diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", "--no-textconv",
                           validate_ref(base), validate_ref(commit), "--",
                           *(f":(literal){path}" for path in paths))
        return sorted(name for name in result.stdout.split("\0") if name)

    def import_commit(self, source: Path, ref: str) -> str:
        """Copy the commit `ref` names in the untrusted repo `source` into this repo; return its SHA.

        Nothing is fetched again for a full SHA already present here, nor for a name the fetcher
        resolves (`resolve_ref`: no object copied) to a commit imported before, whose objects and
        tree were checked then. Raises `BadInput` (a fixed message with an error id) for an invalid
        ref, a ref the source does not have, a commit too large or whose tree cannot be checked out
        safely, or a fetch that fails or times out.
        """
        ref = validate_ref(ref)
        source = Path(source).absolute()
        if FULL_SHA.fullmatch(ref):
            if self.imported(ref) or self.commit_of(ref) == ref:
                return ref
        else:
            named = resolve_ref(source, ref, self.fetch)
            if named is not None and self.imported(named):
                return named
        known = self.known_commits()
        with fetch_commit(source, ref, known, self.fetch) as fetched:
            sha = fetched.commit
            if not FULL_SHA.fullmatch(sha):
                raise withheld(BadInput, f"cannot read {ref!r} from the agent repository",
                               f"the fetcher reported {sha[:100]!r} as the commit")
            if fetched.pack is not None:
                self._index_pack(fetched.pack, ref)
        if self.commit_of(sha) != sha:
            raise withheld(BadInput, f"{ref!r} does not name a commit in the agent repository",
                           f"{sha} is not a commit after the import")
        missing = self._git("rev-list", "--objects", "--quiet", "--stdin", check=False,
                            input_text=sha + "\n" + "".join(f"^{k}\n" for k in known))
        if missing.returncode != 0:
            raise withheld(BadInput, f"commit {sha[:12]} is incomplete (objects are missing)",
                           missing.stderr.strip()[-2000:], fix="commit your work normally and evaluate again")
        self.check_tree(sha)
        self._git("update-ref", f"{COMMITS_PREFIX}{sha}", sha)
        if self._imported is not None:
            self._imported.add(sha)
        return sha

    def _index_pack(self, pack_fd: int, ref: str) -> None:
        """Verify and store a pack the fetcher wrote (every object checked, thin bases from here)."""
        try:
            result = subprocess.run(["git", *GIT_OPTIONS, "index-pack", "--strict", "--fix-thin", "--stdin"],
                                    cwd=self.path, env=_base_env(), stdin=pack_fd, capture_output=True,
                                    check=False, timeout=self.fetch.limits.fetch_timeout)
        except subprocess.TimeoutExpired:
            raise withheld(BadInput, f"checking the objects of {ref!r} took longer than "
                           f"{self.fetch.limits.fetch_timeout:g} s", "git index-pack timed out") from None
        if result.returncode != 0:
            stderr = result.stderr.decode("utf-8", "replace")
            full = tool_failed_for_space(stderr, self.path)
            if full is not None:
                raise full
            raise withheld(BadInput, f"the objects of {ref!r} failed git's integrity checks", stderr[-4000:],
                           fix="commit with a standard git; objects with malformed names or trees are refused")

    def _tree(self, commit: str) -> list[TreeEntry]:
        """The entries of `commit`'s tree (a full SHA), from the cache when it was listed recently."""
        with self._trees_lock:
            cached = self._trees.get(commit)
        if cached is not None:
            return cached
        raw = subprocess.run(["git", *GIT_OPTIONS, "ls-tree", "-r", "-z", "-l", "--full-tree", commit],
                             cwd=self.path, env=_base_env(), capture_output=True, check=True,
                             timeout=GIT_TIMEOUT, stdin=subprocess.DEVNULL).stdout
        entries = list(parse_ls_tree(raw))
        with self._trees_lock:
            self._trees[commit] = entries
            while len(self._trees) > _TREE_CACHE:
                del self._trees[next(iter(self._trees))]  # the oldest
        return entries

    def check_tree(self, commit: str) -> None:
        """Refuse a commit whose tree could not be checked out safely (names, depth, size)."""
        problems = tree_problems(self._tree(commit), self.fetch.limits)
        if problems:
            raise BadInput(f"commit {commit[:12]} cannot be checked out: {'; '.join(problems)}",
                           fix="keep the agent repository within the task's limits, with ordinary file names")

    @contextmanager
    def worktree(self, commit: str, parent: Path) -> Iterator[Path]:
        """A checkout of `commit` under `parent` (the stored bytes, world-readable), removed afterwards."""
        path = self.check_out(commit, parent)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def check_out(self, commit: str, parent: Path) -> Path:
        """A new checkout of `commit` in a `wt-*` directory under `parent`: directories 0755 and
        files 0644 (0755 when executable), owned by this process's user. The caller removes it."""
        if not FULL_SHA.fullmatch(commit) or not (self.imported(commit) or self.commit_of(commit) == commit):
            raise VeroError(f"commit {commit} is not in the trusted repo", where=str(self.path),
                            fix="import the commit before checking it out")
        entries = self._tree(commit)
        problems = tree_problems(entries, self.fetch.limits)
        if problems:
            raise BadInput(f"commit {commit[:12]} cannot be checked out: {'; '.join(problems)}")
        parent = Path(parent)
        parent.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(prefix=f"wt-{commit[:12]}-", dir=parent))
        try:
            path.chmod(0o755)
            cat_file = subprocess.Popen(["git", *GIT_OPTIONS, "cat-file", "--batch"], cwd=self.path,
                                        env=_base_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
            try:
                write_tree(entries, path, cat_file)
            except OSError as exc:
                full = tool_failed_for_space(str(exc), path)
                raise full or VeroError(f"cannot check out {commit[:12]}: {exc}", where=str(path)) from None
            finally:
                if cat_file.stdin is not None:
                    cat_file.stdin.close()
                cat_file.kill()
                cat_file.wait()
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        return path
