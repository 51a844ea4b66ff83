"""Run a command on the optimizer's behalf: confined, in its own session, with a timeout.

The command is wrapped by a `Confinement` (`vero.core.confine`: pid namespace, rlimits,
unprivileged user). A timeout kills the whole process group, and so does a normal exit; with
namespaces, the end of the first process also ends every process it started, wherever it went.
stdout and stderr are read through pipes of which only the tail is kept, so a chatty candidate
costs neither memory nor disk.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vero.core.confine import Confinement
from vero.errors import VeroError

READ_CHUNK = 65536


@dataclass(frozen=True)
class RunResult:
    """How a sandboxed command ended. `returncode` is None when it timed out."""

    returncode: int | None
    timed_out: bool
    stdout_tail: str
    stderr_tail: str
    duration_s: float


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


class _Tail(threading.Thread):
    """Reads a pipe to its end, keeping only the last `limit` bytes."""

    def __init__(self, pipe: IO[bytes], limit: int) -> None:
        super().__init__(daemon=True)
        self.pipe = pipe
        self.limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0

    def run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while chunk := self.pipe.read1(READ_CHUNK):  # type: ignore[attr-defined]
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size - len(self._chunks[0]) >= self.limit:
                    self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)
        return data[-self.limit:].decode("utf-8", errors="replace")


def _feed(stdin: IO[bytes] | None, data: bytes) -> None:
    if stdin is None:
        return
    try:
        stdin.write(data)
        stdin.close()
    except (BrokenPipeError, OSError):
        pass  # the child exited or closed stdin without reading it all: its problem


def run_sandboxed(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                  confinement: Confinement, stdin_data: bytes = b"", network: bool = True,
                  file_size_mb: int | None = None, groups: ProcessGroups | None = None) -> RunResult:
    """Run `argv` under `confinement` in a new session; kill its process group at `timeout` seconds.

    `groups`, when given, tracks the running group so `ProcessGroups.kill_all` can end it.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(confinement.argv(argv, network=network, file_size_mb=file_size_mb), cwd=cwd,
                                env=dict(env), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        raise VeroError(f"cannot start {argv[0]!r}: {exc.strerror}", where=str(cwd),
                        fix="check that the interpreter and util-linux (unshare, prlimit, setpriv) "
                            "are installed") from None
    if groups is not None:
        groups.add(proc.pid)
    keep = confinement.limits.output_kb * 1024
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Tail(proc.stdout, keep), _Tail(proc.stderr, keep)
    out.start()
    err.start()
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
        # Without a namespace a detached process may keep the pipes open: do not wait for it.
        for thread in (feeder, out, err):
            thread.join(timeout=1.0)
        for reader in (out, err):
            if not reader.is_alive():
                reader.pipe.close()
    return RunResult(returncode=None if timed_out.is_set() else returncode, timed_out=timed_out.is_set(),
                     stdout_tail=out.text(), stderr_tail=err.text(), duration_s=time.monotonic() - started)
