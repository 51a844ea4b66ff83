"""Run candidate code as an unprivileged user, in its own process group, with a timeout.

When a harness user is configured the sidecar must be root: the command is wrapped in
`setpriv` (new uid/gid, no supplementary groups, no capabilities, no_new_privs, killed if
the sidecar dies). A timeout kills the whole process group, and so does a normal exit.
A candidate can still leave its group (`setsid`) and outlive its sample: the sidecar is
made a child subreaper, so such orphans become its children, and `kill_orphans` ends every
one of them that runs as the harness user. stdout/stderr go to temp files of which only
the tail is kept, so a chatty candidate cannot exhaust the sidecar's memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import pwd
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vero.errors import VeroError

TAIL_BYTES = 4096
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxUser:
    """The unprivileged account candidate code runs as."""

    name: str
    uid: int
    gid: int


def resolve_user(name: str | None) -> SandboxUser | None:
    """Look up `name`; None means run as the current user (tests and development only)."""
    if name is None:
        return None
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise VeroError(f"harness user {name!r} does not exist", fix="create the user in the sidecar image "
                        "(`useradd --system harness`) or set harness_user") from None
    if entry.pw_uid == 0:
        raise VeroError(f"harness user {name!r} is root",
                        fix="use an unprivileged account for candidate code")
    if os.geteuid() != 0:
        raise VeroError(f"running candidate code as {name!r} needs root, "
                        f"but the sidecar runs as uid {os.geteuid()}",
                        fix="run the sidecar as root, or set harness_user to null outside a container")
    return SandboxUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


@dataclass(frozen=True)
class RunResult:
    """How a sandboxed command ended. `returncode` is None when it timed out."""

    returncode: int | None
    timed_out: bool
    stdout_tail: str
    stderr_tail: str
    duration_s: float


def wrap_argv(argv: Sequence[str], user: SandboxUser | None) -> list[str]:
    """The command line that drops to `user` before exec'ing `argv`."""
    if user is None:
        return list(argv)
    return ["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--clear-groups", "--inh-caps=-all",
            "--bounding-set=-all", "--no-new-privs", "--pdeathsig=KILL", "--", *argv]


def _tail(handle: IO[bytes]) -> str:
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(size - TAIL_BYTES, 0))
    return handle.read().decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    # ProcessLookupError: the group is already gone.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class ProcessGroups:
    """The process groups running right now, so a shutting-down sidecar can kill them all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._groups: set[int] = set()
        self._closed = False

    def add(self, pgid: int) -> None:
        """Track a new group; once closed, a new group is killed at once."""
        with self._lock:
            if not self._closed:
                self._groups.add(pgid)
                return
        _kill_group(pgid)

    def discard(self, pgid: int) -> None:
        """Stop tracking a group that has been reaped."""
        with self._lock:
            self._groups.discard(pgid)

    @property
    def closed(self) -> bool:
        """True after `kill_all`."""
        return self._closed

    def kill_all(self) -> None:
        """Kill every tracked group and every group started from now on."""
        with self._lock:
            self._closed = True
            groups = list(self._groups)
        for pgid in groups:
            _kill_group(pgid)


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Make orphaned descendants of this process its children instead of init's (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def _children_of_uid(uid: int) -> list[int]:
    """Pids of this process's children whose real uid is `uid`."""
    me = str(os.getpid())
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as handle:
                fields = dict(line.split(":\t", 1) for line in handle if ":\t" in line)
        except OSError:
            continue  # exited meanwhile
        if fields.get("PPid", "").strip() == me and fields.get("Uid", "").split()[:1] == [str(uid)]:
            found.append(int(entry.name))
    return found


def kill_orphans(uid: int, rounds: int = 50) -> int:
    """SIGSTOP, SIGKILL and reap every child of this process running as `uid`; return how many.

    Only safe while no sample of that user is running (its own process is such a child too).
    """
    killed = 0
    for _ in range(rounds):
        pids = _children_of_uid(uid)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)  # a stopped process cannot fork a replacement
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            killed += 1
    return killed


class StrayReaper:
    """Kills what candidate code left running once no evaluation is in flight.

    Makes this process a child subreaper (so orphans of candidate processes become its
    children) and counts evaluations; when the last one ends, `kill_orphans` ends every child
    running as the harness user. Shared by the Mode A and Mode B strategies.
    """

    def __init__(self, user: SandboxUser | None) -> None:
        self.user = user
        self._active = 0
        self._lock = threading.Lock()
        if user is not None:
            become_subreaper()

    @contextlib.contextmanager
    def evaluation(self) -> Iterator[None]:
        """Count one evaluation in flight for the duration of the block."""
        with self._lock:
            self._active += 1
        try:
            yield
        finally:
            with self._lock:
                self._active -= 1
                if self._active == 0 and self.user is not None:
                    strays = kill_orphans(self.user.uid)
                    if strays:
                        log.warning("killed %d process(es) that candidate code left running", strays)


def _feed(stdin: IO[bytes] | None, data: bytes) -> None:
    if stdin is None:
        return
    try:
        stdin.write(data)
        stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the child exited or closed stdin without reading it all: its problem


def run_sandboxed(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                  user: SandboxUser | None, stdin_data: bytes = b"",
                  groups: ProcessGroups | None = None) -> RunResult:
    """Run `argv` as `user` in a new session; kill its process group at `timeout` seconds.

    `groups`, when given, tracks the running group so `ProcessGroups.kill_all` can end it.
    """
    started = time.monotonic()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(wrap_argv(argv, user), cwd=cwd, env=dict(env), stdin=subprocess.PIPE,
                                    stdout=out, stderr=err, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise VeroError(f"cannot start {argv[0]!r}: {exc.strerror}", where=str(cwd),
                            fix="check that the interpreter and setpriv are installed") from None
        if groups is not None:
            groups.add(proc.pid)
        feeder = threading.Thread(target=_feed, args=(proc.stdin, stdin_data), daemon=True)
        feeder.start()
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            _kill_group(proc.pid)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            # Wait without reaping: while the leader is a zombie its group id cannot be reused,
            # so killing the group afterwards cannot hit an unrelated process.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        finally:
            timer.cancel()
            _kill_group(proc.pid)
            returncode = proc.wait()
            if groups is not None:
                groups.discard(proc.pid)
            feeder.join(timeout=1.0)
        duration = time.monotonic() - started
        return RunResult(returncode=None if timed_out.is_set() else returncode, timed_out=timed_out.is_set(),
                         stdout_tail=_tail(out), stderr_tail=_tail(err), duration_s=duration)
