"""Git helpers for the trusted side: ref validation, commit transfer, throwaway worktrees.

The optimizer's repo is untrusted: its refs arrive over HTTP and its config and hooks must
never run in the trusted process. So a ref is validated (a full hex SHA or a conservative ref
name) and always passed after `--`; git runs with no system or user config, hooks disabled,
and a private global config that only marks the source repo as a safe directory (git clears
`-c` options for the upload-pack it spawns on a local repo, so they cannot carry that).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vero.core.rejections import BadInput
from vero.core.storage import tool_failed_for_space
from vero.errors import VeroError

FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_REF_CHARS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/@+=,-]*$")
_MAX_REF = 255

# Options for every git command on the trusted repo: nothing may run hooks, prompt, or gc.
_GIT_OPTIONS: tuple[str, ...] = (
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


def _base_env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_PROTOCOL_FROM_USER": "0",
        "LC_ALL": "C",
    }


def _config_value(text: str) -> str:
    if any(ch in text for ch in "\n\r\0"):
        raise VeroError(f"unusable repository path {text!r}", fix="use a path without control characters")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class TrustedRepo:
    """The sidecar's own repository: candidate commits are copied in before anything runs."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._thread_lock = threading.Lock()

    def _git(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
             ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["git", *_GIT_OPTIONS, *args], cwd=self.path, env=env or _base_env(),
                                capture_output=True, text=True, check=False, umask=0o022,
                                stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            full = tool_failed_for_space(result.stderr, self.path)
            if full is not None:
                raise full
            raise VeroError(f"git {args[0]} failed: {result.stderr.strip()[-500:]}", where=str(self.path),
                            fix="check the trusted repository on the admin volume")
        return result

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # Fetches and worktree bookkeeping touch shared files in .git: one at a time.
        git_dir = self.path / ".git" if (self.path / ".git").is_dir() else self.path
        with self._thread_lock:
            fd = os.open(git_dir / "vero.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def commit_of(self, rev: str) -> str | None:
        """The commit SHA `rev` names in the trusted repo (tags peeled), or None."""
        result = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                           check=False)
        return result.stdout.strip() if result.returncode == 0 else None

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

        A full SHA already present here is not fetched again. Raises `BadInput` for an invalid
        ref, or a ref that the source does not have or that is not a commit.
        """
        ref = validate_ref(ref)
        if FULL_SHA.fullmatch(ref) and self.commit_of(ref) == ref:
            return ref
        source = Path(source).absolute()
        with self._locked(), tempfile.TemporaryDirectory(prefix="vero-git-") as scratch:
            # The source is owned by another uid (the optimizer): mark exactly it as safe.
            global_config = Path(scratch) / "gitconfig"
            safe_paths = {str(base / sub) for base in (source, source.resolve()) for sub in ("", ".git")}
            global_config.write_text("[safe]\n" + "".join(f"\tdirectory = {_config_value(p)}\n"
                                                           for p in sorted(safe_paths)))
            env = {**_base_env(), "GIT_CONFIG_GLOBAL": str(global_config)}
            incoming = f"refs/vero/incoming/{uuid.uuid4().hex}"
            fetched = self._git(
                "-c", "protocol.file.allow=always", "-c", "transfer.fsckObjects=true",
                "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "--no-recurse-submodules",
                "--", str(source), f"{ref}:{incoming}", env=env, check=False)
            if fetched.returncode != 0:
                # A full admin volume is the sidecar's problem, not a bad ref.
                full = tool_failed_for_space(fetched.stderr, self.path)
                if full is not None:
                    raise full
                raise BadInput(f"cannot fetch {ref!r} from the agent repo: {_tail(fetched.stderr)}",
                               where=str(source),
                               fix="commit your work and pass an existing commit SHA or branch")
            try:
                sha = self.commit_of(incoming)
                if sha is None:
                    raise BadInput(f"{ref!r} does not name a commit", where=str(source),
                                   fix="pass a commit SHA or a branch name")
                self._git("update-ref", f"refs/vero/commits/{sha}", sha)
            finally:
                self._git("update-ref", "-d", incoming, check=False)
        return sha

    @contextmanager
    def worktree(self, commit: str, parent: Path) -> Iterator[Path]:
        """A clean detached checkout of `commit` under `parent`, world-readable, removed afterwards."""
        if not FULL_SHA.fullmatch(commit) or self.commit_of(commit) != commit:
            raise VeroError(f"commit {commit} is not in the trusted repo", where=str(self.path),
                            fix="import the commit before checking it out")
        parent = Path(parent)
        parent.mkdir(parents=True, exist_ok=True)
        # `git worktree add` reads the other worktrees' admin entries, so adds and removes are
        # serialized (a half-created entry breaks a concurrent add). `remove` deletes its own
        # entry; pruning leftovers of a killed process happens at start (remove_stale_worktrees).
        path = Path(tempfile.mkdtemp(prefix=f"wt-{commit[:12]}-", dir=parent))
        try:
            path.chmod(0o755)
            with self._locked():
                self._git("worktree", "add", "--detach", "--quiet", "--", str(path), commit)
            yield path
        finally:
            with self._locked():
                self._git("worktree", "remove", "--force", "--", str(path), check=False)
            if path.exists():
                shutil.rmtree(path)

    def remove_stale_worktrees(self, parent: Path) -> list[Path]:
        """Remove worktrees under `parent` left by a killed process (call at start, before any checkout)."""
        parent = Path(parent).resolve()
        listing = self._git("worktree", "list", "--porcelain").stdout
        stale = [Path(line.split(" ", 1)[1]) for line in listing.splitlines() if line.startswith("worktree ")]
        removed = []
        with self._locked():
            for path in stale:
                if path.resolve().parent == parent and path.name.startswith("wt-"):
                    self._git("worktree", "remove", "--force", "--", str(path), check=False)
                    if path.exists():
                        shutil.rmtree(path)
                    removed.append(path)
            self._git("worktree", "prune", check=False)
        return removed


def _tail(text: str, limit: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else "..." + text[-limit:]
