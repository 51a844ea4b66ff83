"""Mode A: run the candidate's entrypoint on each label-stripped row, score with the trusted scorer.

Each sample runs in its own process in the candidate's checkout, forked by the candidate
spawner (`vero.core.spawner`) and confined before any candidate code runs (its own pid
namespace, rlimits, the harness user) with a minimal environment. The harness reads the row
(JSON) from stdin, imports `module:function` from the checkout, calls it, and writes
`{"ok": ..., "output": ...}` to a reply file in a private scratch directory, so the candidate's
own prints never mix with its output. The
trusted scorer (loaded from the sidecar's own path) scores in worker processes with a timeout
(`vero.core.scorer_pool`). Every result is put into the sample store as soon as it is known.

A failed sample's `error` is fixed text plus an error id (what the optimizer may read); the
candidate's exception message and traceback, its stderr and the scorer's traceback go to
`error_detail`, which stays on the admin volume.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from pydantic import JsonValue, ValidationError

from vero.core.confine import SAFE_PATH, Confinement
from vero.core.datasets import ModeADataset, strip_labels
from vero.core.incidents import new_error_id
from vero.core.records import SampleResult
from vero.core.scorer_pool import ScorerFailed, ScorerPool
from vero.core.spawner import Spawner, SpawnerStopped, harness_job
from vero.core.strategy import Evaluation, EvaluationCancelled, EvaluationContext, Progress, StrategyEnv
from vero.errors import VeroError
from vero.models import StrictModel

MAX_REPLY_BYTES = 8 * 1024 * 1024
REPLY_FILE = "reply.json"
# An exception's class name is shown to the optimizer only when it looks like one.
_TYPE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,99}$")

def _cancelled() -> EvaluationCancelled:
    return EvaluationCancelled("the sidecar is shutting down; the evaluation was interrupted",
                               fix="evaluate again after the restart (finished samples are kept)")


class HarnessReply(StrictModel):
    """What the harness writes for one sample."""

    ok: bool
    output: JsonValue = None
    raised: str | None = None
    error: str | None = None
    traceback: str | None = None


class SampleFailure(Exception):
    """Why a sample has no score: `public` for the optimizer, `detail` for the admin volume."""

    def __init__(self, public: str, detail: str = "") -> None:
        super().__init__(public)
        self.public = public
        self.detail = detail


class ModeASection(Protocol):
    """serve.json's `mode_a` section, as far as the strategy reads it."""

    @property
    def entrypoint(self) -> str: ...

    @property
    def label_fields(self) -> Sequence[str]: ...

    @property
    def scorer(self) -> str: ...

    @property
    def sample_timeout(self) -> float: ...


class ModeAStrategy:
    """The Mode A `EvaluationStrategy`. One shared pool bounds concurrency across evaluations."""

    def __init__(self, dataset: ModeADataset, *, entrypoint: str, label_fields: Sequence[str],
                 scorer: ScorerPool, sample_timeout: float, max_concurrency: int,
                 confinement: Confinement, python: str = "python3", scratch_dir: Path | None = None,
                 secret_env: Mapping[str, str] | None = None,
                 evaluation_timeout: float | None = None) -> None:
        self.dataset = dataset
        self.entrypoint = entrypoint
        self.label_fields = list(label_fields)
        self.scorer = scorer
        self.sample_timeout = sample_timeout
        self.confinement = confinement
        self.scratch_dir = Path(scratch_dir) if scratch_dir is not None else Path(tempfile.gettempdir())
        self.secret_env = dict(secret_env or {})
        self.evaluation_timeout = evaluation_timeout
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="vero-sample")
        self._spawner = Spawner(confinement, python)

    def stop(self) -> None:
        """Kill running candidates and start no new sample (safe in a signal handler)."""
        self._spawner.stop()

    def close(self) -> None:
        """Stop, then release the pool once its threads have returned, and the scorer's workers."""
        self.stop()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._spawner.close()
        self.scorer.close()

    def agent_inputs(self, split: str, sample_ids: Sequence[str]) -> dict[str, JsonValue]:
        """The rows of the samples as the candidate (and a viewable split's optimizer) sees them."""
        return {sample_id: strip_labels(self.dataset.row(split, sample_id), self.label_fields)
                for sample_id in sample_ids}

    def evaluate(self, context: EvaluationContext) -> Evaluation:
        """Run and score every pending sample of `context`; results in request order."""
        ids = list(context.sample_ids)
        for sample_id in ids:
            self.dataset.row(context.split, sample_id)  # KeyError now rather than in a worker
        done = context.store.done_ids(ids)
        pending = [sid for sid in ids if sid not in done]
        deadline = time.monotonic() + self.evaluation_timeout if self.evaluation_timeout else None
        finished = len(done)
        passing = sum(1 for sid in done if (r := context.store.get(sid)) is not None and (r.score or 0.0) > 0)
        # One writer per evaluation: the next sample starts while a result is being made durable,
        # and a sample is counted and reported only once its result file is durable.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vero-store")

        def store(result: SampleResult) -> None:
            nonlocal finished, passing
            context.store.put(result)
            finished += 1
            passing += 1 if result.ok and (result.score or 0.0) > 0 else 0
            if context.progress is not None:
                context.progress(Progress(total=len(ids), done=finished, passing=passing))

        def one(sample_id: str) -> Future[None]:
            return writer.submit(store, self._run_sample(context, sample_id, deadline))

        if self._spawner.stopped:
            writer.shutdown()
            raise _cancelled()
        futures = [self._pool.submit(one, sid) for sid in pending]
        first_error: BaseException | None = None
        try:
            for future in futures:
                try:
                    future.result().result()
                except CancelledError:
                    first_error = first_error or _cancelled()  # close() dropped it before it started
                except BaseException as exc:
                    first_error = first_error or exc
        finally:
            writer.shutdown(wait=True)
        if first_error is not None:
            if isinstance(first_error, VeroError):
                raise first_error
            raise VeroError("the evaluation failed inside the eval sidecar", fix="see the sidecar log",
                            detail=f"{type(first_error).__name__}: {first_error}") from first_error
        results = []
        for sample_id in ids:
            result = context.store.get(sample_id)
            if result is None:
                raise VeroError(f"sample {sample_id!r} has no stored result",
                                where=str(context.store.directory))
            results.append(result)
        return Evaluation(samples=results)

    def _env(self, worktree: Path, home: Path) -> dict[str, str]:
        return {**self.secret_env, "PATH": SAFE_PATH, "HOME": str(home), "LANG": "C.UTF-8",
                "PYTHONPATH": str(worktree), "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": str(home)}

    def _run_sample(self, context: EvaluationContext, sample_id: str, deadline: float | None) -> SampleResult:
        if self._spawner.stopped:
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
        try:
            output = self._run_candidate(context, row)
        except SampleFailure as failure:
            return _failed(result, failure)
        try:
            scored = self.scorer.score(output, row)
        except ScorerFailed as exc:
            return _failed(result, SampleFailure(exc.reason, exc.detail), output=output)
        return result(score=scored.score, metrics=scored.metrics, output=output)

    def _run_candidate(self, context: EvaluationContext, row: dict[str, JsonValue]) -> JsonValue:
        """The entrypoint's output on the label-stripped `row`; raises `SampleFailure`."""
        stdin = json.dumps(strip_labels(row, self.label_fields)).encode("utf-8")
        # scratch (root, 0711) holds home (the candidate's, 0700): the candidate cannot move
        # home itself, so the reply path cannot be redirected through a swapped directory.
        scratch = Path(tempfile.mkdtemp(prefix="sample-", dir=self.scratch_dir))
        try:
            scratch.chmod(0o711)
            home = scratch / "home"
            home.mkdir(mode=0o700)
            user = self.confinement.user
            if user is not None:
                os.chown(home, user.uid, user.gid)
            try:
                run = self._spawner.run(harness_job(self.entrypoint, [str(context.worktree)], home / REPLY_FILE),
                                        cwd=context.worktree, env=self._env(context.worktree, home),
                                        stdin_data=stdin, timeout=self.sample_timeout)
            except SpawnerStopped:
                raise _cancelled() from None
            if self._spawner.stopped:
                raise _cancelled()
            if run.timed_out:
                raise SampleFailure(f"timed out after {self.sample_timeout:g} s", run.stderr_tail)
            reply = _read_reply(home, run.returncode, run.stderr_tail)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if reply.ok:
            return reply.output
        detail = "\n".join(part for part in (reply.error, reply.traceback) if part)
        if reply.raised is None:
            raise SampleFailure("the output is not JSON-serialisable", detail)
        shown = reply.raised if _TYPE_NAME.fullmatch(reply.raised) else "an exception"
        raise SampleFailure(f"the entrypoint raised {shown}", detail)


def build_strategy(section: ModeASection, dataset: ModeADataset, env: StrategyEnv) -> ModeAStrategy:
    """The eval sidecar's Mode A strategy: the trusted scorer in `max_concurrency` worker processes,
    candidates confined as the sidecar says, in its work dir, with the declared secrets."""
    scorer = ScorerPool(Path(section.scorer), workers=env.max_concurrency,
                        timeout=env.confinement.limits.scorer_timeout)
    return ModeAStrategy(dataset, entrypoint=section.entrypoint, label_fields=section.label_fields, scorer=scorer,
                         sample_timeout=section.sample_timeout, max_concurrency=env.max_concurrency,
                         confinement=env.confinement, scratch_dir=env.work_dir, secret_env=env.secret_env,
                         evaluation_timeout=env.evaluation_timeout)


def _failed(result: Callable[..., SampleResult], failure: SampleFailure, output: JsonValue = None) -> SampleResult:
    """An error sample: the fixed message and a fresh error id; the detail for the admin only."""
    error_id = new_error_id()
    return result(error=f"{failure.public} (error id {error_id})", error_detail=failure.detail or None,
                  output=output)


def _exit_text(returncode: int | None) -> str:
    """How the candidate's process ended; a signal usually means a limit was hit."""
    number = -returncode if returncode is not None and returncode < 0 else (
        returncode - 128 if returncode is not None and returncode > 128 else None)
    if number is not None:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(number).name}: a limit may have been reached"
    return f"exit code {returncode}"


def _read_reply(home: Path, returncode: int | None, stderr_tail: str) -> HarnessReply:
    """The harness reply; raises `SampleFailure` saying why there is none.

    The candidate owns `home`: the reply is opened without following symlinks and must be a
    regular file, so the trusted process cannot be tricked into reading another file.
    """
    def no_reply(why: str) -> SampleFailure:
        return SampleFailure(f"{why} ({_exit_text(returncode)})", stderr_tail)

    try:
        dir_fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        raise no_reply("the candidate's scratch directory is unusable") from exc
    try:
        fd = os.open(REPLY_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except FileNotFoundError:
        raise no_reply("the candidate process exited without a result") from None
    except OSError:
        raise no_reply("the candidate's result cannot be read") from None
    finally:
        os.close(dir_fd)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise no_reply("the candidate's result is not a regular file")
        raw = handle.read(MAX_REPLY_BYTES + 1)
    if len(raw) > MAX_REPLY_BYTES:
        raise SampleFailure(f"the output is larger than {MAX_REPLY_BYTES} bytes")
    try:
        return HarnessReply.model_validate_json(raw)
    except ValidationError:
        raise no_reply("the candidate process wrote an unreadable result") from None
