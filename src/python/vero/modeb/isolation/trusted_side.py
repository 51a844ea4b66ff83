"""The trusted end of the isolation pipe: start the candidate's process and serve its requests.

`CandidateProcess` runs `python -m vero.modeb.isolation.candidate_host` confined (`vero.core.confine`: the
harness user without capabilities, its own pid namespace, rlimits) in a fresh scratch HOME, sends it
the agent's constructor arguments, and then serves each phase: every `Request` is validated
(`vero.modeb.isolation.protocol`), checked against the policy below and performed on the real Harbor
environment, while the candidate's own process never touches the socket, the task files or the
trial directory. Policy:

- `exec`: any command in the task container, but only as the task's agent user when the task
  sets one (harbor's `default_user`), never as another user the candidate names;
- `upload`: the bytes come over the pipe (the candidate read them with its own permissions);
  they are unpacked into a private directory, links kept inside it, then uploaded;
- `download`: the file or directory is downloaded into a private directory and sent back as a
  tar of regular files, directories and links (the trusted side never follows a link there); a
  file's source must end in a plain file name (`/x/..` is refused);
- the candidate's logs come back as a tar when each phase ends and are written into harbor's
  `logs_dir` without following links (the task container can plant links there);
- the AgentContext fields come back as JSON and are validated with harbor's own model.

Duck-typed against Harbor (environment and context objects are passed in), so it does not
import harbor. Runs in harbor's interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import posixpath
import shutil
import stat
import sys
import tempfile
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

from vero.core.confine import kill_confined
from vero.core.incidents import new_error_id
from vero.modeb.isolation.errors import CandidateAgentError, IsolationError, ProtocolError, RelayRefused
from vero.modeb.isolation.protocol import (
    Done,
    DownloadCall,
    EnvironmentState,
    ErrorInfo,
    ExecCall,
    ExecOutput,
    Frame,
    PhaseCall,
    Ready,
    Reply,
    Request,
    Start,
    UploadCall,
    check_file_name,
    frame_head,
    parse_candidate_message,
    read_frame,
    stream_head,
    tail_within,
)
from vero.modeb.isolation.spec import QUIET_ENV, SAFE_PATH, IsolationSpec, scratch_dir
from vero.modeb.isolation.streaming import ABORT_MARK, CHUNK_BYTES, END_MARK, BlockingPayload, wire_chunks
from vero.modeb.isolation.transfer import extract, extract_stream, tar_pieces, write_text_nofollow

STDERR_LOG = "vero-isolation.log"
PRIVATE_PREFIX = "vero-relay-"
STDERR_TAIL_BYTES = 64 * 1024
# Seconds to wait for the candidate's process to exit (and its pipes, which asyncio waits for
# too, to close) once it should be gone.
EXIT_WAIT_SEC = 5.0


def environment_state(environment: Any) -> EnvironmentState:
    """What the candidate's stand-in environment shows: user, names, and the task's environment
    config without its `env` (resolved values may be host secrets; harbor applies them itself)."""
    config: Any = getattr(environment, "task_env_config", None)
    dumped = config.model_dump(mode="json", exclude={"env"}) if hasattr(config, "model_dump") else {}
    user = getattr(environment, "default_user", None)
    return EnvironmentState(default_user=user if isinstance(user, (str, int)) else None,
                            session_id=str(getattr(environment, "session_id", "")),
                            environment_name=str(getattr(environment, "environment_name", "")),
                            task_env_config=dumped)


def _describe(error: ErrorInfo | None) -> str:
    if error is None:
        return "the candidate's agent failed"
    return f"the candidate's agent raised {error.type}: {error.message}"


class _StderrTail:
    """Reads the candidate's stderr to its end, keeping only the last STDERR_TAIL_BYTES."""

    def __init__(self, stream: asyncio.StreamReader) -> None:
        self._data = b""
        self.task = asyncio.ensure_future(self._drain(stream))

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while chunk := await stream.read(65536):
                self._data = (self._data + chunk)[-STDERR_TAIL_BYTES:]

    def text(self) -> str:
        return self._data.decode("utf-8", errors="replace")


class CandidateProcess:
    """One candidate agent instance in its own process; see the module docstring."""

    def __init__(self, spec: IsolationSpec, proc: asyncio.subprocess.Process, scratch: Path,
                 stderr: _StderrTail, logger: logging.Logger) -> None:
        self.spec = spec
        self.proc = proc
        self.scratch = scratch
        self.stderr = stderr
        self.logger = logger
        self._write_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def start(cls, spec: IsolationSpec, start: Start, logger: logging.Logger) -> CandidateProcess:
        """Start the candidate's process and send it `start`."""
        scratch, home = scratch_dir(spec)
        env = {"PATH": SAFE_PATH, "HOME": str(home), "TMPDIR": str(home), "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join([*spec.pythonpath, spec.worktree]),
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", **QUIET_ENV,
               **{name: os.environ[name] for name in spec.forward_env if name in os.environ}}
        argv = spec.confinement().argv([spec.python or sys.executable, "-B", "-m",
                                        "vero.modeb.isolation.candidate_host"])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, cwd=home, env=env, start_new_session=True, close_fds=True,
                # A streamed chunk is read whole: buffer that much before pausing the pipe.
                limit=CHUNK_BYTES)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise CandidateAgentError(f"cannot start the candidate's process: {exc.strerror or exc}",
                                      ) from None
        assert proc.stderr is not None
        process = cls(spec, proc, scratch, _StderrTail(proc.stderr), logger)
        await process._send(start)
        return process

    async def _send(self, message: Start | PhaseCall | Reply) -> None:
        """Write one frame without a payload."""
        assert self.proc.stdin is not None
        head = frame_head(message, 0)
        async with self._write_lock:
            try:
                self.proc.stdin.write(head)
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise CandidateAgentError(await self._died()) from None

    async def _send_streamed(self, message: Reply, chunks: Iterator[bytes]) -> None:
        """Write one frame whose payload follows as `chunks` (`streaming.wire_chunks`), each drained
        before the next is made. If making one fails, the payload ends with the abort mark: the
        candidate's transfer fails and the pipe stays in step."""
        assert self.proc.stdin is not None
        head = stream_head(message)
        ended = False
        async with self._write_lock:
            try:
                self.proc.stdin.write(head)
                while not ended:
                    try:
                        chunk = next(chunks)
                    except Exception as exc:   # a file that changed while it was packed, say
                        self.logger.warning("a download for the candidate's agent was cut off: %s: %s",
                                            type(exc).__name__, str(exc)[:4000])
                        chunk = ABORT_MARK
                    ended = chunk is END_MARK or chunk is ABORT_MARK
                    self.proc.stdin.write(chunk)
                    await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                raise CandidateAgentError(await self._died()) from None
            except asyncio.CancelledError:
                # Only `drain` waits, so whole chunks are out: end the payload, keep the pipe in step.
                if not ended:
                    with contextlib.suppress(Exception):
                        self.proc.stdin.write(ABORT_MARK)
                raise

    async def _died(self) -> str:
        try:
            code = await asyncio.wait_for(self.proc.wait(), EXIT_WAIT_SEC)
        except asyncio.TimeoutError:
            code = None
        tail = self.stderr.text().strip().splitlines()
        last = tail[-1][-500:] if tail else ""
        return f"the candidate's process ended (exit code {code})" + (f": {last}" if last else "")

    async def _next(self) -> tuple[Ready | Request | Done, Frame]:
        """The candidate's next message and its frame (for the payload)."""
        assert self.proc.stdout is not None
        try:
            frame = await read_frame(self.proc.stdout)
        except ProtocolError as exc:
            raise CandidateAgentError(f"the candidate's process broke the protocol: {exc}") from None
        if frame is None:
            raise CandidateAgentError(await self._died())
        try:
            return parse_candidate_message(frame), frame
        except ProtocolError as exc:
            frame.close()
            raise CandidateAgentError(f"the candidate's process broke the protocol: {exc}") from None

    async def ready(self) -> Ready:
        """Wait until the candidate's agent is constructed; its import or constructor error raises."""
        message, _ = await self._next()
        if isinstance(message, Ready):
            return message
        if isinstance(message, Done) and message.phase == "start" and not message.ok:
            raise CandidateAgentError(_describe(message.error))
        raise CandidateAgentError(f"the candidate's process sent {message.type!r} before it was ready")

    async def phase(self, phase: str, environment: Any, *, logs_dir: Path, instruction: str | None = None,
                    context: Any = None) -> None:
        """Run `setup` or `run` in the candidate's process, serving its requests until it is done."""
        call = PhaseCall.model_validate({"phase": phase, "instruction": instruction,
                                         "environment": environment_state(environment)}, strict=False)
        await self._send(call)
        tasks: set[asyncio.Task[None]] = set()
        done: Done | None = None
        logs = Frame(b"")
        try:
            while done is None:
                message, payload = await self._next()
                if isinstance(message, Request):
                    if len(tasks) >= self.spec.max_parallel_requests:
                        await self._release(payload)
                        await self._send(Reply(id=message.id, ok=False,
                                               error=f"more than {self.spec.max_parallel_requests} "
                                                     "requests in flight"))
                        continue
                    task = asyncio.create_task(self._serve(message, payload, environment))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    if payload.stream is not None:
                        # The upload's chunks come first: the next frame follows its end.
                        await self._release(payload, payload.stream.finished())
                elif isinstance(message, Done) and message.phase == phase:
                    done, logs = message, payload
                else:
                    raise CandidateAgentError(f"the candidate's process sent {message.type!r} during {phase}")
        finally:
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        try:
            self._apply(done, logs, context, logs_dir)
        finally:
            logs.close()
        if not done.ok:
            raise CandidateAgentError(_describe(done.error))

    @staticmethod
    async def _release(frame: Frame, waiting: Awaitable[None] | None = None) -> None:
        """Wait for `waiting` (the end of a streamed payload), or release the frame; a malformed
        stream ends the phase."""
        try:
            await (frame.release() if waiting is None else waiting)
        except ProtocolError as exc:
            raise CandidateAgentError(f"the candidate's process broke the protocol: {exc}") from None

    async def _serve(self, request: Request, payload: Frame, environment: Any) -> None:
        reply_payload: Iterator[bytes] | None = None
        # Holds the request's private dir until the reply is sent (a download is packed from it
        # while it is sent).
        async with contextlib.AsyncExitStack() as cleanup:
            try:
                reply, reply_payload = await self._perform(request, payload, environment, cleanup)
            except RelayRefused as exc:
                self.logger.warning("refused a request of the candidate's agent: %s", exc)
                reply = Reply(id=request.id, ok=False, error=f"refused: {exc}")
            except IsolationError as exc:   # a bad archive or message: the candidate may read why
                reply = Reply(id=request.id, ok=False, error=str(exc))
            except Exception as exc:
                # What harbor or docker said may name host paths or other trials: the log keeps it.
                error_id = new_error_id()
                self.logger.warning("a %s request of the candidate's agent failed (%s): %s: %s",
                                    request.call.op, error_id, type(exc).__name__, str(exc)[:4000])
                reply = Reply(id=request.id, ok=False,
                              error=f"the {request.call.op} failed in the task environment (error id {error_id})")
            finally:
                payload.close()
            # Not when cancelled (above): then the phase ends and nobody reads the pipe any more.
            with contextlib.suppress(IsolationError):   # a malformed stream: the phase ends on it
                await payload.release()
            try:
                if reply_payload is None:
                    await self._send(reply)
                else:
                    await self._send_streamed(reply, reply_payload)
            except CandidateAgentError:
                pass   # the candidate's process is gone: nobody waits for the reply
            except Exception as exc:
                # A reply that cannot be framed must still be answered, or the candidate waits forever.
                with contextlib.suppress(CandidateAgentError):
                    await self._send(Reply(id=request.id, ok=False,
                                           error=f"the reply could not be sent: {exc}"[:4000]))

    @staticmethod
    def _private_dir(cleanup: contextlib.AsyncExitStack) -> Path:
        """A private dir for one transfer, removed by `cleanup` in a thread, so the candidate
        never waits for the removal."""
        private = Path(tempfile.mkdtemp(prefix=PRIVATE_PREFIX))

        async def remove() -> None:
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, private, True)

        cleanup.push_async_callback(remove)
        return private

    async def _perform(self, request: Request, payload: Frame, environment: Any,
                       cleanup: contextlib.AsyncExitStack) -> tuple[Reply, Iterator[bytes] | None]:
        """Carry out one request; the reply and its payload (a download's tar, as wire chunks
        packed while they are sent from a private dir that `cleanup` removes)."""
        call = request.call
        if isinstance(call, ExecCall):
            default = getattr(environment, "default_user", None)
            if call.user is not None and default is not None and str(call.user) != str(default):
                raise RelayRefused(f"exec as {call.user!r}: this task's agent runs as {default!r}")
            result = await environment.exec(call.command, cwd=call.cwd, env=call.env,
                                            timeout_sec=call.timeout_sec, user=call.user)
            half = self.spec.max_transfer_bytes // 2
            return Reply(id=request.id, ok=True, exec_output=ExecOutput(
                stdout=None if result.stdout is None else tail_within(str(result.stdout), half),
                stderr=None if result.stderr is None else tail_within(str(result.stderr), half),
                return_code=int(result.return_code))), None
        private = self._private_dir(cleanup)
        if isinstance(call, UploadCall):
            await self._upload(call, payload, environment, private)
            return Reply(id=request.id, ok=True), None
        assert isinstance(call, DownloadCall)
        name, data = await self._download(call, environment, private)
        return Reply(id=request.id, ok=True, name=name), data

    async def _upload(self, call: UploadCall, data: Frame, environment: Any, private: Path) -> None:
        staged = private / "upload"
        staged.mkdir()
        limit = self.spec.max_transfer_bytes
        if (stream := data.stream) is not None:
            # Unpacked as it arrives, in a thread: writing files overlaps reading the pipe.
            loop = asyncio.get_running_loop()
            report = await loop.run_in_executor(None, lambda: extract_stream(
                BlockingPayload(stream, loop), staged, limit=limit))
        else:
            report = extract(data.payload_file(), staged, limit=limit)
        if call.kind == "dir":
            await environment.upload_dir(staged, call.target)
            return
        if call.name is None or report.written != [call.name] or report.skipped:
            raise RelayRefused("a file upload must hold exactly one regular file, named as the request says")
        source = staged / call.name
        if not stat.S_ISREG(source.lstat().st_mode):
            raise RelayRefused("a file upload must be a regular file")
        await environment.upload_file(source, call.target)

    async def _download(self, call: DownloadCall, environment: Any, private: Path) -> tuple[str, Iterator[bytes]]:
        if call.kind == "dir":
            target = private / "download"
            target.mkdir()
            await environment.download_dir(call.source, target)
            return "download", self._packed(target)
        name = posixpath.basename(call.source.rstrip("/"))
        try:
            check_file_name(name)
        except ValueError:
            # `/x/..` would name the parent of the private dir, and pack would send it all back.
            raise RelayRefused(f"download of {call.source[:200]!r}: the source must end in a file name") from None
        target = private / "file"
        await environment.download_file(call.source, target)
        return name, self._packed(target, as_name=name)

    def _packed(self, path: Path, as_name: str | None = None) -> Iterator[bytes]:
        """The tar of `path` as wire chunks, read while they are sent. The first chunk is made
        here, so what fails early (a tree over the limit, a special file) is the reply's error."""
        chunks = wire_chunks(tar_pieces(path, limit=self.spec.max_transfer_bytes, as_name=as_name))
        return itertools.chain([next(chunks)], chunks)

    def _apply(self, done: Done, logs: Frame, context: Any, logs_dir: Path) -> None:
        """Copy the AgentContext fields and the candidate's logs back; a bad part is logged, not fatal."""
        if context is not None and done.context is not None:
            try:
                validated = type(context).model_validate(done.context)
                for field in type(context).model_fields:
                    setattr(context, field, getattr(validated, field))
            except Exception as exc:
                self.logger.warning("ignored the candidate's agent context: %s", str(exc)[:500])
        if logs.has_payload:
            try:
                report = extract(logs.payload_file(), logs_dir, limit=self.spec.max_transfer_bytes,
                                 allow_symlinks=False)
            except IsolationError as exc:
                self.logger.warning("ignored the candidate's logs: %s", exc)
            else:
                for skipped in report.skipped[:20]:
                    self.logger.warning("did not copy the candidate's log %s", skipped)

    async def close(self, logs_dir: Path | None = None) -> None:
        """Kill the candidate (`kill_confined`), keep its stderr tail in `logs_dir`, remove its scratch dir.

        With namespaces the candidate's first process is its pid namespace's init: killing it
        ends every process the candidate started, detached or not.
        Without (development), a detached process may survive and hold the pipes open, so every
        wait is bounded.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.proc.returncode is None:  # once reaped, its pid may name another process
                kill_confined(self.proc.pid)
            try:
                await asyncio.wait_for(self.proc.wait(), EXIT_WAIT_SEC)
            except asyncio.TimeoutError:
                self.logger.warning("the candidate's pipes stay open after its process was killed "
                                    "(a detached process holds them); not waiting for them")
        finally:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.stderr.task), 1.0)
            self.stderr.task.cancel()
            if logs_dir is not None:
                tail = self.stderr.text()
                if tail:
                    try:
                        write_text_nofollow(logs_dir, STDERR_LOG, tail)
                    except OSError as exc:
                        self.logger.warning("cannot keep the candidate's stderr: %s", exc)
            shutil.rmtree(self.scratch, ignore_errors=True)
