"""Start processes on the optimizer's behalf through a fork server instead of a fresh, wrapped
interpreter each: Mode A samples, and the fetcher's reading of ref names.

A sample used to run `choom nice unshare prlimit setpriv python3 -c <harness>`: five programs and
an interpreter start-up, about 20 ms of CPU before the candidate's first line. The spawner
keeps one server process (`vero.core.spawner_server`, run by the sidecar's `python3` as root
with an empty environment) that has the interpreter and the standard library loaded; per job
it forks, and the fork confines itself with system calls (its own pid namespace, the rlimits,
the unprivileged user, no capabilities, no_new_privs) before the job runs in place.

The sidecar creates the job's pipes and passes their far ends over the control socket, so the
row, the output and the stderr never pass through the server. A status pipe, written by the
child's trusted parent (the keeper), says when and how the child ended; a pidfd of the keeper
is how the sidecar ends a job at its timeout or on stop: SIGTERM makes the keeper kill the
child, whose end (it is its namespace's first process) ends everything it started.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import os
import select
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from vero.core.confine import MIB, NICENESS, OOM_FIRST, SAFE_PATH, Confinement
from vero.core.sandbox import Pipes, RunResult
from vero.errors import VeroError

# How long a keeper has to report after SIGTERM before it is killed itself.
TERMINATE_GRACE_S = 5.0


class SpawnerStopped(VeroError):
    """The spawner was stopped (the sidecar is shutting down): no new job starts."""


def harness_job(entrypoint: str, path: Sequence[str], reply: Path) -> dict[str, object]:
    """A Mode A sample: `module:function` imported with `path` first on sys.path, reply written to `reply`."""
    return {"job": "harness", "entrypoint": entrypoint, "path": list(path), "reply": str(reply)}


def refs_job() -> dict[str, object]:
    """The fetcher's ref resolver: one JSON question per line in, one answer per line out (`vero.core.fetch`)."""
    return {"job": "refs"}


def _settings(confinement: Confinement, network: bool) -> dict[str, object]:
    limits = confinement.limits
    user = confinement.user
    return {"uid": user.uid if user else None, "gid": user.gid if user else None,
            "namespaces": confinement.namespaces, "network": network, "nice": int(NICENESS),
            "oom_score_adj": int(OOM_FIRST),
            "rlimits": {"NPROC": limits.processes, "AS": limits.memory_mb * MIB, "FSIZE": limits.file_size_mb * MIB,
                        "NOFILE": limits.open_files, "CPU": limits.cpu_seconds}}


class Spawner:
    """Runs jobs confined by `confinement` through one fork server; any number of threads at once.

    `network=False` cuts the network of every job (a network namespace of its own)."""

    def __init__(self, confinement: Confinement, python: str = "python3", *, network: bool = True) -> None:
        self.confinement = confinement
        self.python = python
        self.network = network
        self._lock = threading.Lock()
        self._server: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._keepers: set[int] = set()  # pidfds of running keepers
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """True after `stop`."""
        return self._stopped

    def _start(self) -> socket.socket:
        """The control socket of a running server, started on first use (caller holds the lock)."""
        if self._control is not None and self._server is not None and self._server.poll() is None:
            return self._control
        self._shut_server()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        source = importlib.resources.files("vero.core").joinpath("spawner_server.py").read_text(encoding="utf-8")
        try:
            self._server = subprocess.Popen([self.python, "-B", "-s", "-c", source,
                                             json.dumps(_settings(self.confinement, self.network))],
                                            stdin=theirs.fileno(), stdout=subprocess.DEVNULL, cwd="/",
                                            env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"}, close_fds=True)
        except OSError as exc:
            ours.close()
            raise VeroError(f"cannot start the spawner with {self.python!r}: {exc.strerror}",
                            fix="install python3 in the sidecar image") from None
        finally:
            theirs.close()
        self._control = ours
        return ours

    def _request(self, request: dict[str, object], fds: list[int]) -> int:
        """Send one request; the pidfd of its keeper."""
        with self._lock:
            if self._stopped:
                raise SpawnerStopped("the sidecar is shutting down; the job was not started",
                                     fix="evaluate again after the restart (finished samples are kept)")
            control = self._start()
            try:
                socket.send_fds(control, [json.dumps(request).encode()], fds)
                message, received, _, _ = socket.recv_fds(control, 65536, 1)
            except OSError as exc:
                self._shut_server()
                raise VeroError("the spawner stopped answering", fix="see the sidecar log",
                                detail=str(exc)) from None
            reply = json.loads(message) if message else {"error": "the spawner exited"}
            if "error" in reply or len(received) != 1:
                for fd in received:
                    os.close(fd)
                self._shut_server()
                raise VeroError("the spawner refused a job", fix="see the sidecar log",
                                detail=str(reply.get("error")))
            self._keepers.add(received[0])
            return received[0]

    def run(self, job: Mapping[str, object], *, cwd: Path, env: Mapping[str, str], stdin_data: bytes,
            timeout: float) -> RunResult:
        """Run `job` (`harness_job`, `refs_job`) in `cwd` with `stdin_data`; its keeper is told to end
        it at `timeout` seconds."""
        started = time.monotonic()
        keeper, stdin_w, stdout_r, stderr_r, status_r = self._launch(job, cwd, env, keep_stderr=True)
        assert stderr_r is not None
        pipes = Pipes(os.fdopen(stdin_w, "wb", buffering=0), os.fdopen(stdout_r, "rb", buffering=0),
                      os.fdopen(stderr_r, "rb", buffering=0), stdin_data,
                      self.confinement.limits.output_kb * 1024, status_r)
        try:
            pipes.serve(until=started + timeout)
            timed_out = not pipes.exited
            if timed_out:
                self._signal(keeper, signal.SIGTERM)
                if not select.select([status_r], [], [], TERMINATE_GRACE_S)[0]:
                    self._signal(keeper, signal.SIGKILL)
            returncode = _read_status(status_r)
        finally:
            self._forget(keeper)
            pipes.finish()
            os.close(status_r)
        return pipes.result(returncode, timed_out, started)

    def start(self, job: Mapping[str, object], *, cwd: Path, env: Mapping[str, str]) -> RunningJob:
        """Start a long-lived `job` that talks over its stdin and stdout (its stderr is discarded)."""
        keeper, stdin_w, stdout_r, _, status_r = self._launch(job, cwd, env, keep_stderr=False)
        return RunningJob(self, keeper, stdin_w, stdout_r, status_r)

    def _launch(self, job: Mapping[str, object], cwd: Path, env: Mapping[str, str], *,
                keep_stderr: bool) -> tuple[int, int, int, int | None, int]:
        """Start `job` on fresh pipes: its keeper's pidfd and our ends of stdin, stdout, stderr
        (None when discarded) and the status pipe."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        status_r, status_w = os.pipe()
        stderr_r, stderr_w = os.pipe() if keep_stderr else (None, os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC))
        far = [stdin_r, stdout_w, stderr_w, status_w]
        try:
            keeper = self._request({**job, "cwd": str(cwd), "env": dict(env)}, far)
        except BaseException:
            for fd in (stdin_w, stdout_r, stderr_r, status_r):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in far:
                os.close(fd)
        return keeper, stdin_w, stdout_r, stderr_r, status_r

    def _forget(self, keeper: int) -> None:
        with self._lock:
            self._keepers.discard(keeper)
            os.close(keeper)

    def _signal(self, keeper: int, number: int) -> None:
        with self._lock, contextlib.suppress(ProcessLookupError):
            if keeper in self._keepers:
                signal.pidfd_send_signal(keeper, number)

    def stop(self) -> None:
        """End every running job and start no new one (safe in a signal handler)."""
        self._stopped = True
        for keeper in list(self._keepers):
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(keeper, signal.SIGTERM)

    def close(self) -> None:
        """Stop, then end the server (its keepers end their children when it goes)."""
        self.stop()
        with self._lock:
            self._shut_server()

    def _shut_server(self) -> None:
        if self._control is not None:
            self._control.close()  # the server sees the end of its input and exits
            self._control = None
        if self._server is not None:
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None


def _read_status(status_fd: int) -> int | None:
    """The child's exit code as the keeper wrote it; None if the keeper died without a word."""
    data = b""
    with contextlib.suppress(BlockingIOError):
        os.set_blocking(status_fd, False)
        data = os.read(status_fd, 64)
    with contextlib.suppress(ValueError):
        return int(data.decode("ascii").strip())
    return None


class RunningJob:
    """A long-lived job: one line out, one line back, each answer awaited with a timeout."""

    def __init__(self, spawner: Spawner, keeper: int, stdin: int, stdout: int, status: int) -> None:
        self._spawner = spawner
        self._keeper = keeper
        self._stdin, self._stdout, self._status = stdin, stdout, status
        self._buffer = b""
        self.closed = False

    def ask(self, line: bytes, timeout: float, limit: int = 1 << 20) -> bytes | None:
        """Send `line` (no newline in it) and return the job's next line; None if the job ended,
        said more than `limit` bytes, or took longer than `timeout` seconds (then it is ended)."""
        try:
            os.write(self._stdin, line + b"\n")  # a short line into an empty pipe: written whole
        except OSError:
            self.close()
            return None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(self._buffer) > limit or not select.select([self._stdout], [], [], remaining)[0]:
                self.close()
                return None
            chunk = os.read(self._stdout, 65536)
            if not chunk:
                self.close()
                return None
            self._buffer += chunk
        answer, _, self._buffer = self._buffer.partition(b"\n")
        return answer

    def close(self) -> None:
        """End the job (its keeper kills it) and release its pipes."""
        if self.closed:
            return
        self.closed = True
        self._spawner._signal(self._keeper, signal.SIGTERM)
        if not select.select([self._status], [], [], TERMINATE_GRACE_S)[0]:
            self._spawner._signal(self._keeper, signal.SIGKILL)
        self._spawner._forget(self._keeper)
        for fd in (self._stdin, self._stdout, self._status):
            os.close(fd)
