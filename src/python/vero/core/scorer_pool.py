"""The trusted scorer, run in worker processes with a timeout per sample.

The scorer is the benchmark owner's code, but what it scores is the candidate's output: a
pathological output (a regular expression that backtracks, a huge nested structure) must cost
one sample, not the sidecar. Each worker imports the scorer once and scores one sample at a
time; a call that outlives `timeout` kills its worker (a fresh one is started on demand) and
fails that sample. Workers run as the sidecar's user (they read the labels) and talk JSON over
pipes: `[4-byte length][JSON]` in each direction.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import JsonValue

from vero.core.scorer import normalize_score
from vero.errors import VeroError

_HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
START_TIMEOUT = 120.0
WORKER_CODE = "from vero.core.scorer_pool import serve_worker; serve_worker()"
# Where this process found vero and its dependencies, made absolute now: a relative entry (a test
# runner's source root) would mean something else after a chdir.
_IMPORT_PATH = os.pathsep.join(os.path.abspath(entry) for entry in sys.path if entry)


class ScorerFailed(Exception):
    """The scorer raised, returned something unusable, timed out or died; `reason` is fixed text
    for the optimizer, `detail` (a traceback, a message that may quote labels) is for the admin."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Score:
    """A normalized score and its metrics."""

    score: float
    metrics: dict[str, float]


def _write_frame(stream: IO[bytes], payload: Any) -> None:
    data = json.dumps(payload, allow_nan=False).encode("utf-8")
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks = []
    while size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int, deadline: float | None) -> Any:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    if size > MAX_FRAME:
        raise EOFError
    return json.loads(_read_exact(fd, size, deadline))


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """A killed sidecar must not leave a worker spinning on a hostile output."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request was made
        os._exit(1)


def serve_worker() -> None:
    """The worker's main loop (`python -c WORKER_CODE <scorer path>`): import once, then score."""
    from vero.core.scorer import load_scorer

    _die_with_parent()
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a scorer's prints must not corrupt the frames
    try:
        score = load_scorer(Path(sys.argv[1]))
    except VeroError as exc:
        _write_frame(stdout, {"ready": False, "error": exc.what})
        return
    _write_frame(stdout, {"ready": True})
    fd = stdin.fileno()
    while True:
        try:
            request = _read_frame(fd, None)
        except EOFError:
            return
        _write_frame(stdout, _score_one(score, request))


def _score_one(score: Any, request: dict[str, Any]) -> dict[str, Any]:
    try:
        raw = score(request["output"], request["row"])
    except Exception as exc:
        return {"ok": False, "reason": f"the scorer raised {type(exc).__name__}",
                "detail": traceback.format_exc()[-8000:]}
    try:
        value, metrics = normalize_score(raw)
    except ValueError as exc:
        return {"ok": False, "reason": "the scorer returned an unusable score", "detail": str(exc)}
    return {"ok": True, "score": value, "metrics": metrics}


class _Worker:
    def __init__(self, path: Path) -> None:
        env = {**os.environ, "PYTHONPATH": _IMPORT_PATH}
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER_CODE, str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env, close_fds=True)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.fd = self.proc.stdout.fileno()
        try:
            hello = _read_frame(self.fd, time.monotonic() + START_TIMEOUT)
        except (EOFError, TimeoutError, ValueError):
            self.kill()
            raise VeroError("the scorer's worker process did not start", where=str(path),
                            fix="check that the scorer imports cleanly (see the sidecar log)") from None
        if not hello.get("ready"):
            self.kill()
            raise VeroError(str(hello.get("error", "the scorer cannot be imported")), where=str(path),
                            fix="fix the scorer module so it imports cleanly and defines score(output, row)")

    def call(self, request: dict[str, JsonValue], timeout: float) -> Any:
        _write_frame(self.stdin, request)
        return _read_frame(self.fd, time.monotonic() + timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


class ScorerPool:
    """Up to `workers` scorer processes, each scoring one sample at a time (module docstring)."""

    def __init__(self, path: Path, *, workers: int, timeout: float) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        self._slots = threading.BoundedSemaphore(workers)
        self._all: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._idle.put(self._start())  # the scorer must import now, not at the first sample

    def _start(self) -> _Worker:
        worker = _Worker(self.path)
        with self._lock:
            self._all.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
        worker.kill()

    def score(self, output: JsonValue, row: dict[str, JsonValue]) -> Score:
        """Score one sample; raises `ScorerFailed` (the sample's error) for any failure of the scorer."""
        with self._slots:
            if self._closed:
                raise ScorerFailed("the sidecar is shutting down")
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                worker = self._start()
            try:
                reply = worker.call({"output": output, "row": row}, self.timeout)
            except TimeoutError:
                self._retire(worker)
                raise ScorerFailed(f"the scorer took longer than {self.timeout:g} s") from None
            except (EOFError, OSError, ValueError) as exc:
                self._retire(worker)
                raise ScorerFailed("the scorer's process died", f"{type(exc).__name__}: {exc}") from None
            self._idle.put(worker)
        if not reply.get("ok"):
            raise ScorerFailed(str(reply.get("reason")), str(reply.get("detail", "")))
        return Score(score=float(reply["score"]), metrics={str(k): float(v) for k, v in reply["metrics"].items()})

    def close(self) -> None:
        """Kill every worker."""
        with self._lock:
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        for worker in workers:
            worker.kill()
