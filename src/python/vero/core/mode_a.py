"""Mode A: run the candidate's entrypoint on each label-stripped row, score with the trusted scorer.

Each sample runs in a fresh `python3 -c <harness>` process in the candidate's worktree, as
the harness user, with a minimal environment. The harness reads the row (JSON) from stdin,
imports `module:function` from the worktree, calls it, and writes `{"ok": ..., "output": ...}`
to a reply file in a private scratch directory, so the candidate's own prints never mix with
its output. Scoring happens in the trusted process with the scorer loaded from the sidecar's
own path. Every result is put into the sample store as soon as it is known.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import CancelledError, ThreadPoolExecutor
from pathlib import Path

from pydantic import JsonValue, ValidationError

from vero.core.datasets import ModeADataset, strip_labels
from vero.core.records import SampleResult
from vero.core.sandbox import ProcessGroups, SandboxUser, StrayReaper, run_sandboxed
from vero.core.scorer import ScoreFunction, normalize_score
from vero.core.strategy import EvaluationCancelled, EvaluationContext, Progress
from vero.errors import VeroError
from vero.models import StrictModel

log = logging.getLogger(__name__)

MAX_REPLY_BYTES = 8 * 1024 * 1024
SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REPLY_FILE = "reply.json"
TRACEBACK_CHARS = 1500

# Runs inside the candidate's process. Reads stdin before any candidate code can, and reports
# exceptions (SystemExit included) as a reply instead of a traceback on stderr only.
HARNESS = r"""
import importlib, json, os, sys
entrypoint, reply_path = sys.argv[1], sys.argv[2]
def reply(obj):
    fd = os.open(reply_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(obj)
try:
    row = json.loads(sys.stdin.buffer.read())
    module_name, function_name = entrypoint.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    output = function(row)
except BaseException as exc:
    import traceback  # only on failure: the import costs milliseconds per sample
    reply(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                      "traceback": traceback.format_exc()[-4000:]}))
    sys.exit(0)
try:
    text = json.dumps({"ok": True, "output": output}, allow_nan=False)
except (TypeError, ValueError) as exc:
    reply(json.dumps({"ok": False, "error": f"output is not JSON-serialisable: {exc}"[:2000]}))
else:
    reply(text)
"""


def _cancelled() -> EvaluationCancelled:
    return EvaluationCancelled("the sidecar is shutting down; the evaluation was interrupted",
                               fix="evaluate again after the restart (finished samples are kept)")


class HarnessReply(StrictModel):
    """What the harness writes for one sample."""

    ok: bool
    output: JsonValue = None
    error: str | None = None
    traceback: str | None = None


class ModeAStrategy:
    """The Mode A `EvaluationStrategy`. One shared pool bounds concurrency across evaluations."""

    def __init__(self, dataset: ModeADataset, *, entrypoint: str, label_fields: Sequence[str],
                 scorer: ScoreFunction, sample_timeout: float, max_concurrency: int,
                 user: SandboxUser | None, python: str = "python3", scratch_dir: Path | None = None,
                 secret_env: Mapping[str, str] | None = None,
                 evaluation_timeout: float | None = None) -> None:
        self.dataset = dataset
        self.entrypoint = entrypoint
        self.label_fields = list(label_fields)
        self.scorer = scorer
        self.sample_timeout = sample_timeout
        self.user = user
        self.python = python
        self.scratch_dir = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
        self.secret_env = dict(secret_env or {})
        self.evaluation_timeout = evaluation_timeout
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="vero-sample")
        self._groups = ProcessGroups()
        self._reaper = StrayReaper(self.user)

    def stop(self) -> None:
        """Kill running candidates and start no new sample (safe in a signal handler)."""
        self._groups.kill_all()

    def close(self) -> None:
        """Stop, then release the pool once its threads have returned."""
        self.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def agent_input(self, split: str, sample_id: str) -> JsonValue:
        """The row of a sample as the candidate (and a viewable split's optimizer) sees it."""
        return strip_labels(self.dataset.row(split, sample_id), self.label_fields)

    def evaluate(self, context: EvaluationContext) -> list[SampleResult]:
        """Run and score every pending sample of `context`; results in request order.

        When the last evaluation in flight ends, every process the candidates left behind
        (detached with `setsid`, so outside their killed process groups) is killed.
        """
        with self._reaper.evaluation():
            return self._evaluate(context)

    def _evaluate(self, context: EvaluationContext) -> list[SampleResult]:
        ids = list(context.sample_ids)
        for sample_id in ids:
            self.dataset.row(context.split, sample_id)  # KeyError now rather than in a worker
        done = context.store.done_ids(ids)
        pending = [sid for sid in ids if sid not in done]
        deadline = time.monotonic() + self.evaluation_timeout if self.evaluation_timeout else None
        counter_lock = threading.Lock()
        finished = len(done)
        passing = sum(1 for sid in done if (r := context.store.get(sid)) is not None and (r.score or 0.0) > 0)

        def one(sample_id: str) -> None:
            nonlocal finished, passing
            result = self._run_sample(context, sample_id, deadline)
            context.store.put(result)
            with counter_lock:
                finished += 1
                passing += 1 if result.ok and (result.score or 0.0) > 0 else 0
                snapshot = Progress(total=len(ids), done=finished, passing=passing)
            if context.progress is not None:
                context.progress(snapshot)

        if self._groups.closed:
            raise _cancelled()
        futures = [self._pool.submit(one, sid) for sid in pending]
        first_error: BaseException | None = None
        for future in futures:
            try:
                future.result()
            except CancelledError:
                first_error = first_error or _cancelled()  # close() dropped it before it started
            except BaseException as exc:
                first_error = first_error or exc
        if first_error is not None:
            if isinstance(first_error, VeroError):
                raise first_error
            raise VeroError(f"evaluation failed: {type(first_error).__name__}: {first_error}",
                            fix="see the sidecar log") from first_error
        results = []
        for sample_id in ids:
            result = context.store.get(sample_id)
            if result is None:
                raise VeroError(f"sample {sample_id!r} has no stored result",
                                where=str(context.store.directory))
            results.append(result)
        return results

    def _env(self, worktree: Path, home: Path) -> dict[str, str]:
        return {**self.secret_env, "PATH": SAFE_PATH, "HOME": str(home), "LANG": "C.UTF-8",
                "PYTHONPATH": str(worktree), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(home)}

    def _run_sample(self, context: EvaluationContext, sample_id: str, deadline: float | None) -> SampleResult:
        if self._groups.closed:
            raise _cancelled()
        started_at = time.time()
        started = time.monotonic()

        def result(**fields: object) -> SampleResult:
            return SampleResult.model_validate({"sample_id": sample_id, "split": context.split,
                                                "commit": context.commit, "started_at": started_at,
                                                "duration_s": time.monotonic() - started, **fields})

        if deadline is not None and started >= deadline:
            return result(error=f"evaluation timeout ({self.evaluation_timeout:g} s) reached "
                                "before this sample ran")
        row = self.dataset.row(context.split, sample_id)
        stdin = json.dumps(strip_labels(row, self.label_fields)).encode("utf-8")
        # scratch (root, 0711) holds home (the candidate's, 0700): the candidate cannot move
        # home itself, so the reply path cannot be redirected through a swapped directory.
        scratch = Path(tempfile.mkdtemp(prefix="sample-", dir=self.scratch_dir))
        try:
            scratch.chmod(0o711)
            home = scratch / "home"
            home.mkdir(mode=0o700)
            if self.user is not None:
                os.chown(home, self.user.uid, self.user.gid)
            run = run_sandboxed([self.python, "-B", "-c", HARNESS, self.entrypoint, str(home / REPLY_FILE)],
                                cwd=context.worktree, env=self._env(context.worktree, home),
                                timeout=self.sample_timeout, user=self.user, stdin_data=stdin,
                                groups=self._groups)
            if self._groups.closed:
                raise _cancelled()
            if run.timed_out:
                return result(error=f"timed out after {self.sample_timeout:g} s")
            reply = _read_reply(home, run.returncode, run.stderr_tail)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if isinstance(reply, str):
            return result(error=reply)
        if not reply.ok:
            message = reply.error or "the entrypoint failed"
            if reply.traceback:
                message += "\n" + reply.traceback[-TRACEBACK_CHARS:]
            return result(error=message, output=None)
        try:
            raw_score = self.scorer(reply.output, row)
        except Exception as exc:
            # The message may quote labels; keep it in the sidecar log, not in the result.
            log.exception("scorer failed on sample %s of split %s", sample_id, context.split)
            return result(error=f"scorer raised {type(exc).__name__}", output=reply.output)
        try:
            score, metrics = normalize_score(raw_score)
        except ValueError as exc:
            return result(error=f"unusable score: {exc}", output=reply.output)
        return result(score=score, metrics=metrics, output=reply.output)


def _read_reply(home: Path, returncode: int | None, stderr_tail: str) -> HarnessReply | str:
    """The harness reply, or an error message saying why there is none.

    The candidate owns `home`: the reply is opened without following symlinks and must be a
    regular file, so the trusted process cannot be tricked into reading another file.
    """
    def no_reply(why: str) -> str:
        tail = stderr_tail.strip()[-1000:]
        return f"{why} (exit code {returncode})" + (f": {tail}" if tail else "")

    try:
        dir_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        return no_reply(f"the candidate's scratch directory is unusable: {exc.strerror}")
    try:
        fd = os.open(REPLY_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        return no_reply("the candidate process exited without a result")
    except OSError as exc:
        return no_reply(f"cannot read the candidate's result: {exc.strerror}")
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return no_reply("the candidate's result is not a regular file")
        raw = handle.read(MAX_REPLY_BYTES + 1)
    if len(raw) > MAX_REPLY_BYTES:
        return f"the output is larger than {MAX_REPLY_BYTES} bytes"
    try:
        return HarnessReply.model_validate_json(raw)
    except ValidationError:
        return no_reply("the candidate process wrote an unreadable result")
