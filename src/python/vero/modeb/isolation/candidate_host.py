"""The candidate's end of the isolation pipe: `python -m vero.modeb.isolation.candidate_host`.

Started by `vero.modeb.isolation.agent_shim.IsolatedAgent` (through `trusted_side`) as the unprivileged
harness user, with the candidate's worktree on PYTHONPATH and a scratch HOME. It imports the
candidate's `module:Class`, constructs it (its `logs_dir` is `$HOME/agent-logs`, sent back after
each phase), and runs `setup` and `run` against `RelayEnvironment`, a stand-in whose exec,
upload and download travel over the pipe to the trusted side. Local paths of uploads and
downloads are read and written here, with the candidate's own permissions.

Nothing in this process is trusted: the trusted side validates every message it sends. The
pipe is the process's original stdin/stdout; fd 1 is pointed at stderr first, so the candidate's
prints cannot corrupt it. Without harbor installed (tests), plain stand-ins replace harbor's
environment base class and AgentContext.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import importlib
import itertools
import logging
import math
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, ConfigDict, JsonValue

from vero.modeb.isolation.errors import ProtocolError, RelayError, TransferError
from vero.modeb.isolation.protocol import (
    MAX_TRANSFER_BYTES,
    Done,
    EnvironmentState,
    ErrorInfo,
    Frame,
    PhaseCall,
    Ready,
    Reply,
    Request,
    Start,
    frame_head,
    parse_trusted_message,
    payload_size,
    read_frame,
    spool,
    stream_head,
)
from vero.modeb.isolation.streaming import ABORT_MARK, CHUNK_BYTES, BlockingPayload, wire_chunks
from vero.modeb.isolation.transfer import extract_stream, pack_into, tar_pieces

LOGS_DIR = "agent-logs"
PIPE_BYTES = 1024 * 1024
log = logging.getLogger("vero.candidate")


def _harbor(module: str, name: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


class _PlainContext(BaseModel):
    """AgentContext's stand-in when harbor is not installed."""

    model_config = ConfigDict(extra="allow")

    n_input_tokens: int | None = None
    n_output_tokens: int | None = None
    cost_usd: float | None = None
    metadata: dict[str, JsonValue] | None = None


class _PlainExecResult(BaseModel):
    stdout: str | None = None
    stderr: str | None = None
    return_code: int


_EnvironmentBase: Any = _harbor("harbor.environments.base", "BaseEnvironment") or object
_ExecResult: Any = _harbor("harbor.environments.base", "ExecResult") or _PlainExecResult
_AgentContext: Any = _harbor("harbor.models.agent.context", "AgentContext") or _PlainContext
_EnvironmentConfig: Any = _harbor("harbor.models.task.config", "EnvironmentConfig")
_MCPServerConfig: Any = _harbor("harbor.models.task.config", "MCPServerConfig")


class Channel:
    """Requests out, replies and phase calls in; one writer at a time."""

    def __init__(self, reader: asyncio.StreamReader, out_fd: int) -> None:
        self.reader = reader
        self.out_fd = out_fd
        self.calls: asyncio.Queue[PhaseCall | None] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[tuple[Reply, Frame]]] = {}
        self._ids = itertools.count()
        self._lock = asyncio.Lock()
        self._dropping: set[asyncio.Future[None]] = set()

    async def send(self, message: Ready | Request | Done, payload: IO[bytes] | None = None) -> None:
        """Write one frame, a spooled `payload` chunk by chunk (in a thread: payloads can be large)."""
        head = frame_head(message, payload_size(payload) if payload is not None else 0)
        await self._write(lambda: _write_frame(self.out_fd, head, payload))

    async def send_streamed(self, message: Request, pieces: Iterator[bytes]) -> None:
        """Write one frame whose payload is streamed as `pieces` are made, in a thread: packing
        overlaps sending. A failure before the first chunk sends nothing."""
        head = stream_head(message)
        await self._write(lambda: _write_streamed(self.out_fd, head, wire_chunks(pieces)))

    async def _write(self, write: Callable[[], None]) -> None:
        """Run `write` in a thread, one at a time. A cancelled caller still holds the lock until
        its frame is out: another frame written into the middle of it would break the pipe."""
        async with self._lock:
            written = asyncio.get_running_loop().run_in_executor(None, write)
            try:
                await asyncio.shield(written)
            finally:
                if not written.done():
                    await asyncio.wait([written])

    async def request(self, call: dict[str, Any], pieces: Iterator[bytes] | None = None) -> tuple[Reply, Frame]:
        """Send one environment operation (with `pieces`, the streamed payload of an upload) and
        wait for its reply and the reply's frame (the caller releases it); a refusal raises RelayError."""
        request_id = next(self._ids)
        future: asyncio.Future[tuple[Reply, Frame]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        request = Request.model_validate({"type": "request", "id": request_id, "call": call}, strict=False)
        try:
            await (self.send(request) if pieces is None else self.send_streamed(request, pieces))
            reply, reply_payload = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                # The reply came, its caller is gone: its payload must still leave the pipe.
                dropping = asyncio.ensure_future(future.result()[1].release())
                self._dropping.add(dropping)
                dropping.add_done_callback(self._dropping.discard)
            raise
        finally:
            self._pending.pop(request_id, None)
        if not reply.ok:
            await reply_payload.release()
            raise RelayError(reply.error or "the environment operation failed")
        return reply, reply_payload

    async def pump(self) -> None:
        """Route replies to their requests and phase calls to `calls` until the trusted side closes."""
        try:
            while (frame := await read_frame(self.reader)) is not None:
                message = parse_trusted_message(frame)
                if isinstance(message, Reply):
                    future = self._pending.get(message.id)
                    if future is not None and not future.done():
                        future.set_result((message, frame))
                        if frame.stream is not None:
                            await frame.stream.finished()   # its reader reads it to its end
                    else:
                        await frame.release()
                elif isinstance(message, PhaseCall):
                    await self.calls.put(message)
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(RelayError("the trusted side closed the pipe"))
            await self.calls.put(None)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_frame(fd: int, head: bytes, payload: IO[bytes] | None) -> None:
    _write_all(fd, head)
    while payload is not None and (chunk := payload.read(CHUNK_BYTES)):
        _write_all(fd, chunk)


def _write_streamed(fd: int, head: bytes, chunks: Iterator[bytes]) -> None:
    """The head and `chunks`; once the head is out, a failure to make a chunk ends the payload
    with the abort mark (keeping the pipe in step) and is raised."""
    first = next(chunks)
    _write_all(fd, head + first)
    while True:
        try:
            chunk = next(chunks, None)
        except BaseException:
            _write_all(fd, ABORT_MARK)
            raise
        if chunk is None:
            return
        _write_all(fd, chunk)


def _packed(path: Path, *, follow: bool) -> IO[bytes]:
    """The tar of `path` in a spool (a temporary file once it is large)."""
    out = spool()
    try:
        pack_into(out, path, limit=MAX_TRANSFER_BYTES, follow=follow)
    except BaseException:
        out.close()
        raise
    return out


class RelayEnvironment(_EnvironmentBase):  # type: ignore[misc]
    """The environment the candidate's agent sees: harbor's API, performed by the trusted side.

    Harbor's `BaseEnvironment.__init__` checks a task definition on disk that this stand-in does
    not have, so the attributes its helper methods read are set here instead.
    """

    def __init__(self, channel: Channel, state: EnvironmentState) -> None:
        self._channel = channel
        self.default_user = state.default_user
        self.session_id = state.session_id
        self.environment_name = state.environment_name
        config = dict(state.task_env_config)
        self.task_env_config = (_EnvironmentConfig.model_validate(config) if _EnvironmentConfig is not None
                                else config)
        self.logger = logging.getLogger("vero.candidate.environment")
        self._persistent_env: dict[str, str] = {}
        self._mounts: list[Any] = []
        self._stream = False
        self._exec_env_overlays: contextvars.ContextVar[tuple[dict[str, str], ...]] = contextvars.ContextVar(
            "vero_exec_env_overlays", default=())
        self._output_callbacks: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
            "vero_output_callbacks", default=())

    @staticmethod
    def type() -> str:
        """Harbor's environment type name for this stand-in."""
        return "vero-relay"

    def _validate_definition(self) -> None:
        return None

    async def start(self, force_build: bool) -> None:
        """Not available to agents."""
        raise RelayError("an agent cannot start the environment")

    async def stop(self, delete: bool) -> None:
        """Not available to agents."""
        raise RelayError("an agent cannot stop the environment")

    async def exec(self, command: str, cwd: str | None = None, env: dict[str, str] | None = None,
                   timeout_sec: float | None = None, user: str | int | None = None) -> Any:
        """Run `command` in the task container (harbor's `exec`)."""
        merged = dict(env or {})
        for overlay in self._exec_env_overlays.get():
            merged.update(overlay)
        timeout = None if timeout_sec is None else max(1, math.ceil(timeout_sec))
        reply, _ = await self._channel.request({"op": "exec", "command": command, "cwd": cwd,
                                                "env": merged or None, "timeout_sec": timeout, "user": user})
        output = reply.exec_output
        if output is None:
            raise RelayError("the exec reply carries no result")
        return _ExecResult(stdout=output.stdout, stderr=output.stderr, return_code=output.return_code)

    async def upload_file(self, source_path: Path | str, target_path: str) -> None:
        """Copy a local file into the container."""
        source = Path(source_path)
        pieces = tar_pieces(source, limit=MAX_TRANSFER_BYTES, follow=True)
        _, reply_frame = await self._channel.request({"op": "upload", "kind": "file", "target": target_path,
                                                      "name": source.name}, pieces)
        await reply_frame.release()

    async def upload_dir(self, source_dir: Path | str, target_dir: str) -> None:
        """Copy a local directory's contents into the container."""
        pieces = tar_pieces(Path(source_dir), limit=MAX_TRANSFER_BYTES, follow=True)
        _, reply_frame = await self._channel.request({"op": "upload", "kind": "dir", "target": target_dir}, pieces)
        await reply_frame.release()

    async def download_file(self, source_path: str, target_path: Path | str) -> None:
        """Copy a file of the container to a local path."""
        reply, data = await self._channel.request({"op": "download", "kind": "file", "source": source_path})
        target = Path(target_path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as staging:
                await _extract_reply(data, Path(staging))
                os.replace(Path(staging) / (reply.name or ""), target)
        finally:
            await data.release()

    async def download_dir(self, source_dir: str, target_dir: Path | str) -> None:
        """Copy a directory of the container into a local directory."""
        _, data = await self._channel.request({"op": "download", "kind": "dir", "source": source_dir})
        target = Path(target_dir)
        try:
            target.mkdir(parents=True, exist_ok=True)
            await _extract_reply(data, target)
        finally:
            await data.release()


async def _extract_reply(data: Frame, dest: Path) -> None:
    """Unpack a download's streamed reply into `dest` as it arrives (in a thread)."""
    if data.stream is None:
        raise RelayError("the download reply carries no streamed payload")
    loop = asyncio.get_running_loop()
    source = BlockingPayload(data.stream, loop)
    await loop.run_in_executor(None, lambda: extract_stream(source, dest, limit=MAX_TRANSFER_BYTES))


def _error_info(exc: BaseException) -> ErrorInfo:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return ErrorInfo(type=type(exc).__name__[:200], message=str(exc)[:4000], traceback=text[-20_000:])


def _construct(start: Start, logs_dir: Path) -> Any:
    module_name, _, class_name = start.candidate.partition(":")
    agent_class = getattr(importlib.import_module(module_name), class_name)
    kwargs: dict[str, Any] = dict(start.kwargs)
    if start.mcp_servers and _MCPServerConfig is not None:
        kwargs["mcp_servers"] = [_MCPServerConfig.model_validate(server) for server in start.mcp_servers]
    if start.skills_dir is not None:
        kwargs["skills_dir"] = start.skills_dir
    return agent_class(logs_dir=logs_dir, model_name=start.model_name, logger=log,
                       extra_env=dict(start.extra_env), **kwargs)


async def _run_phase(agent: Any, call: PhaseCall, channel: Channel,
                     logs_dir: Path) -> tuple[Done, IO[bytes] | None]:
    """Run one phase of the agent: the Done message and the tar of its logs dir (spooled)."""
    environment = RelayEnvironment(channel, call.environment)
    context = _AgentContext() if call.phase == "run" else None
    error = None
    try:
        if call.phase == "setup":
            await agent.setup(environment)
        else:
            await agent.run(call.instruction or "", environment, context)
            populate = getattr(agent, "populate_context_post_run", None)
            if callable(populate):
                populate(context)
    except BaseException as exc:  # the candidate's SystemExit too: it is reported, not obeyed
        error = _error_info(exc)
    logs = None
    try:
        logs = _packed(logs_dir, follow=False)
    except TransferError as exc:
        log.warning("the agent's logs are not sent back: %s", exc)
    dumped = context.model_dump(mode="json") if context is not None else None
    done = Done.model_validate({"type": "done", "phase": call.phase, "ok": error is None, "error": error,
                                "context": dumped}, strict=False)
    return done, logs


async def serve(in_fd: int, out_fd: int) -> None:
    """Construct the agent from the first message, then run each phase the trusted side asks for."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK_BYTES)   # a streamed chunk is read whole
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                 os.fdopen(in_fd, "rb", buffering=0))
    channel = Channel(reader, out_fd)
    frame = await read_frame(reader)
    start = parse_trusted_message(frame) if frame is not None else None
    if not isinstance(start, Start):
        raise ProtocolError("the first message must be `start`")
    logs_dir = Path(os.environ.get("HOME") or tempfile.mkdtemp()) / LOGS_DIR
    logs_dir.mkdir(exist_ok=True)
    try:
        agent = _construct(start, logs_dir)
        ready = Ready(type="ready", name=str(agent.name())[:200] or "agent",
                      version=None if agent.version() is None else str(agent.version())[:200])
    except BaseException as exc:
        await channel.send(Done(type="done", phase="start", ok=False, error=_error_info(exc)))
        return
    await channel.send(ready)
    pump = asyncio.create_task(channel.pump())
    try:
        while (call := await channel.calls.get()) is not None:
            done, logs = await _run_phase(agent, call, channel, logs_dir)
            try:
                await channel.send(done, logs)
            finally:
                if logs is not None:
                    logs.close()
    finally:
        pump.cancel()


def main() -> None:
    """Keep the pipe on private descriptors, send fd 1 to stderr, serve."""
    in_fd, out_fd = os.dup(0), os.dup(1)
    for fd in (in_fd, out_fd):
        # Larger pipe buffers: fewer wake-ups per transfer; the system's limit may refuse it.
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(in_fd, out_fd))


if __name__ == "__main__":
    main()
