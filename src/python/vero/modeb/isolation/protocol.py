"""The pipe protocol between the trusted `IsolatedAgent` (inside harbor) and the candidate's process.

A frame is an 8-byte header (two big-endian lengths), one UTF-8 JSON object, and a binary
payload: the tar of an upload, of a download's reply or of the agent's logs (empty otherwise;
raw bytes, so a transfer is not base64-encoded and escaped into JSON). A payload is either sized
(its length in the header, the bytes follow; a receiver keeps one larger than `SPOOL_BYTES` in a
temporary file) or, with the length `STREAMED`, chunked as it is packed (`streaming`): uploads
and download replies stream, so packing, sending and unpacking overlap. Either way a transfer
holds a bounded amount of memory whatever its size. The candidate's process
asks for environment operations (`Request`) and reports each phase (`Done`); the trusted side
answers (`Reply`). Everything the trusted side reads is hostile until one of these strict models
accepted it: sizes are bounded, paths and names are checked, unknown fields are errors, and a
payload is accepted only on the messages that carry one.

Runs in vero's interpreter and in harbor's (CPython >= 3.11): stdlib and pydantic only.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import tempfile
from dataclasses import dataclass, field
from typing import IO, Annotated, Literal, Union

from pydantic import Field, JsonValue, TypeAdapter, ValidationError, field_validator

from vero.modeb.isolation.errors import ProtocolError
from vero.modeb.isolation.streaming import CHUNK_BYTES, PayloadStream
from vero.models import StrictModel, describe

MAX_TRANSFER_BYTES = 64 * 1024 * 1024
# The JSON of a message: an exec reply carries up to MAX_TRANSFER_BYTES of output, escaped.
MAX_FRAME_BYTES = MAX_TRANSFER_BYTES * 4 // 3 + 1024 * 1024
MAX_PATH_CHARS = 4096
MAX_COMMAND_CHARS = 1_000_000
MAX_ENV_ENTRIES = 1000
MAX_TIMEOUT_SEC = 7 * 24 * 3600
_HEADER = struct.Struct(">II")
# Payloads up to this size are kept in memory; larger ones go to a temporary file.
SPOOL_BYTES = 1024 * 1024
# The payload length of a frame whose payload is streamed in chunks (`streaming`).
STREAMED = 0xFFFF_FFFF
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?")


def _no_nul(value: str, what: str) -> str:
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL character")
    return value


def check_container_path(value: str) -> str:
    """A path inside the task container: absolute, no NUL, bounded."""
    _no_nul(value, "path")
    if not value.startswith("/"):
        raise ValueError("container paths must be absolute")
    if len(value) > MAX_PATH_CHARS:
        raise ValueError(f"path longer than {MAX_PATH_CHARS} characters")
    return value


def check_file_name(value: str) -> str:
    """One path component: the base name an uploaded or downloaded file keeps."""
    _no_nul(value, "file name")
    if value in ("", ".", "..") or "/" in value or len(value) > 255:
        raise ValueError(f"not a plain file name: {value!r}")
    return value


@dataclass(frozen=True)
class Frame:
    """One frame as read: the message's JSON and its payload (empty when it carries none): in
    `payload`, in the temporary file `spooled` when it is larger than SPOOL_BYTES, or still on
    the pipe in `stream` when it is streamed (whoever takes the frame reads it or `release`s it)."""

    body: bytes
    payload: bytes = b""
    spooled: IO[bytes] | None = field(default=None, compare=False)
    stream: PayloadStream | None = field(default=None, compare=False)

    @property
    def has_payload(self) -> bool:
        """Whether the frame carries a payload."""
        return bool(self.payload) or self.spooled is not None or self.stream is not None

    def payload_file(self) -> IO[bytes]:
        """The payload as a readable file, from its start."""
        if self.spooled is None:
            return io.BytesIO(self.payload)
        self.spooled.seek(0)
        return self.spooled

    def close(self) -> None:
        """Remove the temporary file of a spooled payload."""
        if self.spooled is not None:
            self.spooled.close()

    async def release(self) -> None:
        """Done with the frame: `close` it and drop what is left of a streamed payload."""
        self.close()
        if self.stream is not None:
            await self.stream.drain()


def spool() -> IO[bytes]:
    """A file for an archive being built: memory up to SPOOL_BYTES, then a temporary file."""
    return tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)


# --- candidate -> trusted ---------------------------------------------------------------------


class ExecCall(StrictModel):
    """`environment.exec(...)` in the task container."""

    op: Literal["exec"]
    command: str = Field(max_length=MAX_COMMAND_CHARS)
    cwd: str | None = None
    env: dict[str, str] | None = None
    timeout_sec: int | None = Field(default=None, ge=1, le=MAX_TIMEOUT_SEC)
    user: str | int | None = None

    @field_validator("command")
    @classmethod
    def _command(cls, value: str) -> str:
        return _no_nul(value, "command")

    @field_validator("cwd")
    @classmethod
    def _cwd(cls, value: str | None) -> str | None:
        return None if value is None else check_container_path(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_ENV_ENTRIES:
            raise ValueError(f"more than {MAX_ENV_ENTRIES} environment variables")
        for key, item in value.items():
            if not _ENV_NAME.fullmatch(key):
                raise ValueError(f"invalid environment variable name {key[:80]!r}")
            _no_nul(item, f"environment variable {key}")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | int | None) -> str | int | None:
        if isinstance(value, int) and not 0 <= value < 2**31:
            raise ValueError("uid out of range")
        if isinstance(value, str) and (len(value) > 65 or not _USER_NAME.fullmatch(value)):
            raise ValueError(f"invalid user {value[:80]!r}")
        return value


class UploadCall(StrictModel):
    """`upload_file` (one regular file named `name`) or `upload_dir` (a directory's contents); the
    frame's payload is their tar."""

    op: Literal["upload"]
    kind: Literal["file", "dir"]
    target: str
    name: str | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, value: str) -> str:
        return check_container_path(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_file_name(value)


class DownloadCall(StrictModel):
    """`download_file` / `download_dir` from the task container; the reply carries a tar."""

    op: Literal["download"]
    kind: Literal["file", "dir"]
    source: str

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        return check_container_path(value)


Call = Annotated[Union[ExecCall, UploadCall, DownloadCall], Field(discriminator="op")]


class Ready(StrictModel):
    """The candidate's agent was imported and constructed."""

    type: Literal["ready"]
    name: str = Field(min_length=1, max_length=200)
    version: str | None = Field(default=None, max_length=200)


class Request(StrictModel):
    """One environment operation; answered by a `Reply` with the same id."""

    type: Literal["request"]
    id: int = Field(ge=0, lt=2**53)
    call: Call


class ErrorInfo(StrictModel):
    """An exception of the candidate's agent, as text."""

    type: str = Field(max_length=200)
    message: str = Field(max_length=4000)
    traceback: str = Field(default="", max_length=20_000)


class Done(StrictModel):
    """A phase ended: `start` (import and construction), `setup` or `run`. The frame's payload, if
    any, is the tar of the agent's logs dir."""

    type: Literal["done"]
    phase: Literal["start", "setup", "run"]
    ok: bool
    error: ErrorInfo | None = None
    context: dict[str, JsonValue] | None = None


CandidateMessage = Annotated[Union[Ready, Request, Done], Field(discriminator="type")]
_CANDIDATE_MESSAGE: TypeAdapter[Ready | Request | Done] = TypeAdapter(CandidateMessage)


def parse_candidate_message(frame: Frame) -> Ready | Request | Done:
    """Validate one frame from the candidate's process; a bad one is a ProtocolError."""
    try:
        message = _CANDIDATE_MESSAGE.validate_json(frame.body)
    except ValidationError as exc:
        raise ProtocolError(f"invalid message at {describe(exc)}") from None
    uploads = isinstance(message, Request) and isinstance(message.call, UploadCall)
    if uploads and not frame.has_payload:
        raise ProtocolError("an upload request carries no payload")
    if frame.has_payload and not (uploads or isinstance(message, Done)):
        raise ProtocolError(f"a {message.type!r} message carries no payload")
    if frame.stream is not None and not uploads:
        raise ProtocolError("only an upload streams its payload")
    return message


# --- trusted -> candidate ---------------------------------------------------------------------


class Start(StrictModel):
    """Import `candidate` (`module:Class`) and construct it with these arguments."""

    type: Literal["start"] = "start"
    candidate: str
    model_name: str | None = None
    kwargs: dict[str, JsonValue] = Field(default_factory=dict)
    extra_env: dict[str, str] = Field(default_factory=dict)
    mcp_servers: list[dict[str, JsonValue]] = Field(default_factory=list)
    skills_dir: str | None = None


class EnvironmentState(StrictModel):
    """What the candidate's stand-in environment shows of the real one."""

    default_user: str | int | None = None
    session_id: str = ""
    environment_name: str = ""
    task_env_config: dict[str, JsonValue] = Field(default_factory=dict)


class PhaseCall(StrictModel):
    """Run `setup(environment)` or `run(instruction, environment, context)`."""

    type: Literal["call"] = "call"
    phase: Literal["setup", "run"]
    instruction: str | None = None
    environment: EnvironmentState


class ExecOutput(StrictModel):
    """The result of an exec in the task container."""

    stdout: str | None = None
    stderr: str | None = None
    return_code: int


class Reply(StrictModel):
    """The answer to one `Request`: `ok` with a result, or a refusal/failure message. The reply to
    a download names what was read; the frame's payload is its tar."""

    type: Literal["reply"] = "reply"
    id: int
    ok: bool
    error: str | None = None
    exec_output: ExecOutput | None = None
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_file_name(value)


TrustedMessage = Annotated[Union[Start, PhaseCall, Reply], Field(discriminator="type")]
_TRUSTED_MESSAGE: TypeAdapter[Start | PhaseCall | Reply] = TypeAdapter(TrustedMessage)


def parse_trusted_message(frame: Frame) -> Start | PhaseCall | Reply:
    """Parse one frame from the trusted side (in the candidate's process); its payload is the
    reply's tar, if any."""
    try:
        message = _TRUSTED_MESSAGE.validate_json(frame.body)
    except ValidationError as exc:
        raise ProtocolError(f"invalid message from the trusted side at {describe(exc)}") from None
    if frame.stream is not None and not isinstance(message, Reply):
        raise ProtocolError("only a reply streams its payload")
    return message


def tail_within(text: str, limit: int) -> str:
    """The end of `text`, cut so that it takes at most `limit` bytes as a JSON string.

    A character takes 1 to 6 bytes there (a control character becomes `\\u00XX`), so a cut by
    characters alone could still overflow the frame; such a reply could not be sent at all.
    """
    if len(text) * 6 + 2 <= limit:
        return text
    cut = text[-limit:]
    while cut and (size := len(json.dumps(cut, ensure_ascii=False).encode("utf-8", "surrogatepass"))) > limit:
        cut = cut[len(cut) - int(len(cut) * limit / size * 0.98):]
    return cut


# --- framing ----------------------------------------------------------------------------------


def _head(message: StrictModel, payload_length: int) -> bytes:
    body = message.model_dump_json(exclude_none=True).encode("utf-8")
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"message larger than {MAX_FRAME_BYTES} bytes")
    return _HEADER.pack(len(body), payload_length) + body


def frame_head(message: StrictModel, payload_size: int) -> bytes:
    """The header and message of a frame whose `payload_size` bytes of payload follow."""
    if payload_size > MAX_TRANSFER_BYTES:
        raise ProtocolError(f"transfer larger than {MAX_TRANSFER_BYTES} bytes")
    return _head(message, payload_size)


def stream_head(message: StrictModel) -> bytes:
    """The header and message of a frame whose payload follows in chunks (`streaming.wire_chunks`)."""
    return _head(message, STREAMED)


def encode_frame(message: StrictModel, payload: bytes = b"") -> bytes:
    """One frame: the header, the message as compact JSON, then `payload`."""
    return frame_head(message, len(payload)) + payload


def payload_size(payload: IO[bytes]) -> int:
    """The size of a spooled payload (its position is left at the start)."""
    size = payload.seek(0, io.SEEK_END)
    payload.seek(0)
    return size


async def _read_payload(reader: asyncio.StreamReader, length: int) -> bytes | IO[bytes]:
    if length <= SPOOL_BYTES:
        return await reader.readexactly(length) if length else b""
    spooled = tempfile.TemporaryFile()
    try:
        left = length
        while left:
            chunk = await reader.readexactly(min(left, CHUNK_BYTES))
            spooled.write(chunk)
            left -= len(chunk)
    except BaseException:
        spooled.close()
        raise
    return spooled


async def read_frame(reader: asyncio.StreamReader) -> Frame | None:
    """The next frame, or None at a clean end of stream; truncation and oversize are ProtocolErrors
    (both lengths are checked before anything is read). A payload above SPOOL_BYTES is read in
    chunks into a temporary file (`Frame.spooled`), never whole into memory; a streamed payload
    is left on the pipe (`Frame.stream`), and the next frame may be read only once it has ended."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("the stream ended inside a frame header") from None
        return None
    length, payload_length = _HEADER.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes is larger than {MAX_FRAME_BYTES}")
    if payload_length == STREAMED:
        try:
            body = await reader.readexactly(length)
        except asyncio.IncompleteReadError:
            raise ProtocolError("the stream ended inside a frame") from None
        return Frame(body=body, stream=PayloadStream(reader, MAX_TRANSFER_BYTES))
    if payload_length > MAX_TRANSFER_BYTES:
        raise ProtocolError(f"transfer of {payload_length} bytes is larger than {MAX_TRANSFER_BYTES}")
    try:
        body = await reader.readexactly(length)
        payload = await _read_payload(reader, payload_length)
    except asyncio.IncompleteReadError:
        raise ProtocolError("the stream ended inside a frame") from None
    if isinstance(payload, bytes):
        return Frame(body=body, payload=payload)
    return Frame(body=body, spooled=payload)
