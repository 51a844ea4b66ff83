"""Running one `harbor run` as its own process group, with a timeout that kills the whole tree.

Harbor starts Docker Compose and other children; a timeout or an interrupt must not leave
them behind, so harbor gets its own session and the whole group is signalled: SIGTERM first
(Harbor then cancels its trials and still writes their result.json), SIGKILL after a grace.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vero.errors import VeroError

STDERR_TAIL_BYTES = 8192


@dataclass(frozen=True)
class ProcessOutcome:
    """How the harbor process ended."""

    exit_code: int | None
    timed_out: bool
    interrupted: bool
    stderr_tail: str
    duration_s: float

    @property
    def failed(self) -> bool:
        """Harbor timed out or exited non-zero: the end of its stderr says why."""
        return self.timed_out or self.exit_code not in (0, None)

    def stderr_end(self, chars: int = 2000) -> str:
        """The last `chars` characters of its stderr, for a message or a log line."""
        return self.stderr_tail.strip()[-chars:]


def _drain(stream: IO[bytes], log: IO[bytes] | None, tail: collections.deque[bytes]) -> None:
    for chunk in iter(lambda: stream.read1(4096), b""):  # type: ignore[attr-defined]
        tail.append(chunk)
        while sum(len(part) for part in tail) > STDERR_TAIL_BYTES and len(tail) > 1:
            tail.popleft()
        if log is not None:
            log.write(chunk)
            log.flush()


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when the group no longer exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Whether any process of the group is still running (zombies, already dead, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return signal_group(pgid, 0)
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, grace: float, wait: Callable[[float], bool] | None = None) -> None:
    """SIGTERM the group, give it `grace` seconds, then SIGKILL whatever is left.

    `wait(seconds) -> finished` lets the caller reap its own child while waiting; without it
    the group is polled.
    """
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if wait is not None:
            if wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                break
        else:
            if not group_alive(pgid):
                return
            time.sleep(0.2)
    signal_group(pgid, signal.SIGKILL)
    # Children of the group may outlive the leader briefly; give the kernel a moment.
    for _ in range(50):
        if not group_alive(pgid):
            return
        time.sleep(0.1)


def run_group(argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, timeout: float | None,
              kill_grace: float, log_path: Path | None, on_start: Callable[[int], None] | None = None,
              poll: Callable[[], None] | None = None, poll_interval: float = 1.0,
              should_stop: Callable[[], bool] | None = None) -> ProcessOutcome:
    """Run `argv` in a new session with stdin from /dev/null; stdout and stderr go to `log_path`.

    Never raises for a non-zero exit. A timeout, a KeyboardInterrupt or `should_stop()` turning
    true stops the whole group (SIGTERM, then SIGKILL after `kill_grace`); the outcome says which
    (`should_stop` counts as interrupted).
    """
    started = time.monotonic()
    log = open(log_path, "ab") if log_path is not None else None  # noqa: SIM115 - closed below
    try:
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log or subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, env=dict(env), cwd=cwd, start_new_session=True)
        except OSError as exc:
            raise VeroError(f"cannot start {argv[0]!r}: {exc.strerror or exc}", where="harbor_command",
                            fix="install harbor (build-support/setup.sh) or set harbor.harbor_command",
                            ) from None
        if on_start is not None:
            on_start(proc.pid)
        tail: collections.deque[bytes] = collections.deque()
        assert proc.stderr is not None
        reader = threading.Thread(target=_drain, args=(proc.stderr, log, tail), daemon=True)
        reader.start()
        timed_out = interrupted = False

        def reaped(seconds: float) -> bool:
            try:
                proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                return False
            return True

        try:
            while not reaped(poll_interval):
                if poll is not None:
                    poll()
                if should_stop is not None and should_stop():
                    interrupted = True
                    stop_group(proc.pid, kill_grace, reaped)
                    break
                if timeout is not None and time.monotonic() - started > timeout:
                    timed_out = True
                    stop_group(proc.pid, kill_grace, reaped)
                    break
        except KeyboardInterrupt:
            interrupted = True
            stop_group(proc.pid, kill_grace, reaped)
        # The leader may be gone while children (holding stderr) still run: kill them too.
        if group_alive(proc.pid):
            stop_group(proc.pid, kill_grace if not (timed_out or interrupted) else 0.0)
        proc.wait()
        reader.join(timeout=5)
        if poll is not None:
            try:
                poll()
            except KeyboardInterrupt:
                interrupted = True
        return ProcessOutcome(exit_code=proc.returncode, timed_out=timed_out, interrupted=interrupted,
                              stderr_tail=b"".join(tail).decode("utf-8", "replace")[-STDERR_TAIL_BYTES:],
                              duration_s=time.monotonic() - started)
    finally:
        if log is not None:
            log.close()
