"""Run a command on the optimizer's behalf: confined, in its own session, with a timeout.

The command is wrapped by a `Confinement` (`vero.core.confine`: pid namespace, rlimits,
unprivileged user). A timeout kills the namespace's first process and the whole process group,
and so does a normal exit; with namespaces, the end of the first process also ends every
process it started, wherever it went.
stdout and stderr are read through pipes of which only the tail is kept, so a chatty candidate
costs neither memory nor disk. The calling thread feeds stdin, reads both pipes and sees the
exit (a pidfd) through one selector: a sample costs no helper threads.
"""

from __future__ import annotations

import collections
import contextlib
import os
import selectors
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vero.core.confine import Confinement, kill_confined
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


class _Tail:
    """The last `limit` bytes read from a pipe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0

    def add(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk)
        while self._size - len(self._chunks[0]) >= self.limit:
            self._size -= len(self._chunks.popleft())

    def text(self) -> str:
        data = b"".join(self._chunks)
        return data[-self.limit:].decode("utf-8", errors="replace")


def _exit_fd(pid: int) -> tuple[int, threading.Thread | None]:
    """A descriptor that becomes readable when `pid` exits, without reaping it: a pidfd, or on a
    kernel without one, a pipe a thread writes to once `waitid(WNOWAIT)` returns."""
    try:
        return os.pidfd_open(pid), None
    except OSError:
        read_end, write_end = os.pipe()

        def wait() -> None:
            with contextlib.suppress(ChildProcessError):
                os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
            os.close(write_end)

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        return read_end, waiter


class Pipes:
    """A child's stdin, stdout and stderr, served by the calling thread: stdin fed without
    blocking, the output tails kept, and the child's exit seen, all through one selector."""

    def __init__(self, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[bytes], stdin_data: bytes, keep: int,
                 exit_fd: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.tails = {stdout.fileno(): _Tail(keep), stderr.fileno(): _Tail(keep)}
        self.files = [stdin, stdout, stderr]
        for fd in self.tails:
            self.selector.register(fd, selectors.EVENT_READ)
        self.stdin = stdin.fileno()
        self.pending = memoryview(stdin_data)
        if self.pending:
            os.set_blocking(self.stdin, False)
            self.selector.register(self.stdin, selectors.EVENT_WRITE)
        else:
            stdin.close()
        self.exit_fd = exit_fd
        self.selector.register(exit_fd, selectors.EVENT_READ)
        self.exited = False

    def serve(self, until: float) -> None:
        """Move data until the child exits (`exited`), every pipe is done after it did, or `until`."""
        while self.selector.get_map():
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            for key, _ in self.selector.select(remaining):
                fd = int(key.fd)
                if fd == self.exit_fd:
                    self.selector.unregister(fd)
                    self.exited = True
                    return
                if fd == self.stdin:
                    self._feed()
                    continue
                try:
                    chunk = os.read(fd, READ_CHUNK)
                except OSError:
                    chunk = b""
                if chunk:
                    self.tails[fd].add(chunk)
                else:
                    self.selector.unregister(fd)

    def _feed(self) -> None:
        try:
            written = os.write(self.stdin, self.pending[:READ_CHUNK])
        except BlockingIOError:
            return
        except OSError:
            written = len(self.pending)  # the child exited or closed stdin without reading it all: its problem
        self.pending = self.pending[written:]
        if not self.pending:
            self.selector.unregister(self.stdin)
            self.files[0].close()

    def finish(self) -> None:
        """Stop watching the exit, take what output is left for at most a second (a process that
        escaped may keep the pipes open: do not wait for it) and close the pipes. The caller
        still owns the exit descriptor."""
        if not self.exited:
            self.selector.unregister(self.exit_fd)
        self.serve(until=time.monotonic() + 1.0)
        self.selector.close()
        for file in self.files:
            with contextlib.suppress(OSError):
                file.close()

    def result(self, returncode: int | None, timed_out: bool, started: float) -> RunResult:
        """How the command ended, with the output tails kept."""
        stdout, stderr = self.tails.values()
        return RunResult(returncode=None if timed_out else returncode, timed_out=timed_out,
                         stdout_tail=stdout.text(), stderr_tail=stderr.text(), duration_s=time.monotonic() - started)


def run_sandboxed(argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float,
                  confinement: Confinement, stdin_data: bytes = b"", network: bool = True,
                  file_size_mb: int | None = None) -> RunResult:
    """Run `argv` under `confinement` in a new session; kill its process group at `timeout` seconds.

    The calling thread does all the waiting and the pipe work: no helper thread per process.
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
    exit_fd, waiter = _exit_fd(proc.pid)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    pipes = Pipes(proc.stdin, proc.stdout, proc.stderr, stdin_data, confinement.limits.output_kb * 1024, exit_fd)
    try:
        # Serve until the leader exits, without reaping it: while it is a zombie its group id
        # cannot be reused, so killing the group afterwards cannot hit an unrelated process.
        pipes.serve(until=started + timeout)
        timed_out = not pipes.exited
    finally:
        kill_confined(proc.pid)
        returncode = proc.wait()
        pipes.finish()
        if waiter is not None:
            waiter.join()
        os.close(exit_fd)
    return pipes.result(returncode, timed_out, started)
