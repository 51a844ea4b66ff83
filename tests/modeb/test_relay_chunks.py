"""Streamed payloads (vero.modeb.isolation.streaming): chunked framing that a hostile sender cannot
use to make the reader hang, over-read or lose step, and tars packed and unpacked as they stream."""

from __future__ import annotations

import asyncio
import io
import os
import struct
import tarfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from vero.modeb.isolation.errors import ProtocolError, TransferError
from vero.modeb.isolation.protocol import (
    Done,
    Frame,
    PhaseCall,
    Request,
    encode_frame,
    parse_candidate_message,
    parse_trusted_message,
    read_frame,
    stream_head,
)
from vero.modeb.isolation.streaming import (
    ABORT_MARK,
    CHUNK_BYTES,
    END_MARK,
    BlockingPayload,
    PayloadStream,
    wire_chunks,
)
from vero.modeb.isolation.transfer import extract_stream, pack, tar_pieces

T = TypeVar("T")
UPLOAD = Request.model_validate({"type": "request", "id": 1, "call": {"op": "upload", "kind": "dir", "target": "/x"}})
EXEC = Request.model_validate({"type": "request", "id": 2, "call": {"op": "exec", "command": "true"}})
LIMIT = 1 << 20


def _on(wire: bytes, use: Callable[[asyncio.StreamReader], Awaitable[T]]) -> T:
    async def run() -> T:
        reader = asyncio.StreamReader(limit=CHUNK_BYTES)
        reader.feed_data(wire)
        reader.feed_eof()
        return await use(reader)
    return asyncio.run(run())


async def _chunks(stream: PayloadStream) -> list[bytes]:
    chunks = []
    while chunk := await stream.read_chunk():
        chunks.append(chunk)
    await stream.finished()
    return chunks


def test_a_streamed_payload_arrives_in_bounded_chunks_and_the_next_frame_follows() -> None:
    data = os.urandom(2 * CHUNK_BYTES + 5)
    wire = stream_head(UPLOAD) + b"".join(wire_chunks([data[:7], data[7:]])) + encode_frame(EXEC)

    async def use(reader: asyncio.StreamReader) -> tuple[list[bytes], Frame | None]:
        frame = await read_frame(reader)
        assert frame is not None and frame.stream is not None and frame.has_payload
        assert isinstance(parse_candidate_message(frame), Request)
        return await _chunks(frame.stream), await read_frame(reader)

    chunks, after = _on(wire, use)
    assert b"".join(chunks) == data and [len(c) for c in chunks] == [CHUNK_BYTES, CHUNK_BYTES, 5]
    assert after is not None and parse_candidate_message(after) == EXEC


@pytest.mark.parametrize(("chunks", "error"), [
    (struct.pack(">I", CHUNK_BYTES + 1) + bytes(CHUNK_BYTES + 1) + END_MARK, "chunk of 1048577 bytes is larger than"),
    (struct.pack(">I", 0xFFFF_FFFE), "chunk of 4294967294 bytes is larger than"),
    (struct.pack(">I", 100) + bytes(10), "ended inside a streamed payload"),
    (struct.pack(">I", 10) + bytes(10), "ended inside a streamed payload"),   # no end mark
    (b"\0\0", "ended inside a streamed payload"),
    ((struct.pack(">I", CHUNK_BYTES) + bytes(CHUNK_BYTES)) * 2, "larger than its limit"),
])
def test_hostile_streams_are_one_protocol_error(chunks: bytes, error: str) -> None:
    async def use(reader: asyncio.StreamReader) -> None:
        stream = PayloadStream(reader, limit=CHUNK_BYTES + 10)
        with pytest.raises(ProtocolError, match=error):
            await _chunks(stream)
        # The reader that waits for the payload's end learns it too, and so does a later read.
        with pytest.raises(ProtocolError, match=error):
            await stream.finished()
        with pytest.raises(ProtocolError, match=error):
            await stream.read_chunk()

    _on(chunks, use)


def test_nothing_after_the_end_mark_is_taken_as_payload() -> None:
    wire = stream_head(UPLOAD) + b"".join(wire_chunks([b"tar"])) + struct.pack(">I", 5) + b"extra"

    async def use(reader: asyncio.StreamReader) -> list[bytes]:
        frame = await read_frame(reader)
        assert frame is not None and frame.stream is not None
        chunks = await _chunks(frame.stream)
        assert await frame.stream.read_chunk() == b""
        await frame.stream.drain()
        # The stray chunk is the next frame's header now, and a bad one.
        with pytest.raises(ProtocolError, match="larger than"):
            await read_frame(reader)
        return chunks

    assert _on(wire, use) == [b"tar"]


def test_an_aborted_payload_fails_its_transfer_and_keeps_the_pipe_in_step() -> None:
    wire = stream_head(UPLOAD) + struct.pack(">I", 3) + b"tar" + ABORT_MARK + encode_frame(EXEC)

    async def use(reader: asyncio.StreamReader) -> Frame | None:
        frame = await read_frame(reader)
        assert frame is not None and frame.stream is not None
        assert await frame.stream.read_chunk() == b"tar"
        with pytest.raises(TransferError, match="could not finish"):
            await frame.stream.read_chunk()
        await frame.stream.finished()
        return await read_frame(reader)

    after = _on(wire, use)
    assert after is not None and parse_candidate_message(after) == EXEC


def test_only_uploads_and_replies_stream() -> None:
    for message in (EXEC, Done(type="done", phase="run", ok=True)):
        frame = _on(stream_head(message) + END_MARK, read_frame)
        assert frame is not None
        with pytest.raises(ProtocolError, match="payload"):
            parse_candidate_message(frame)
    call = PhaseCall(phase="run", environment={})   # type: ignore[arg-type]
    frame = _on(stream_head(call) + END_MARK, read_frame)
    assert frame is not None
    with pytest.raises(ProtocolError, match="only a reply streams"):
        parse_trusted_message(frame)


def _unpack_streamed(wire_pieces: list[bytes], dest: Path, limit: int = LIMIT) -> list[str]:
    """Unpack `wire_pieces` (wire chunks) through a PayloadStream in a thread, as the relay does."""
    async def use(reader: asyncio.StreamReader) -> list[str]:
        stream = PayloadStream(reader, limit=64 * CHUNK_BYTES)
        loop = asyncio.get_running_loop()
        try:
            report = await loop.run_in_executor(
                None, lambda: extract_stream(BlockingPayload(stream, loop), dest, limit=limit))
        finally:
            await stream.drain()
        return report.written + report.skipped

    return _on(b"".join(wire_pieces), use)


def test_a_tree_streams_through_the_framing(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    for index in range(3):
        (source / "sub" / f"f{index}").write_bytes(os.urandom(CHUNK_BYTES // 2 + index))
    (source / ("long-" + "x" * 200)).write_text("a name that needs a PAX header")
    os.symlink("sub/f0", source / "link")
    dest = tmp_path / "dest"
    dest.mkdir()
    seen = _unpack_streamed(list(wire_chunks(tar_pieces(source, limit=LIMIT * 4))), dest, limit=LIMIT * 4)
    assert sorted(seen) == ["link", "long-" + "x" * 200, "sub", "sub/f0", "sub/f1", "sub/f2"]
    assert (dest / "sub/f2").read_bytes() == (source / "sub/f2").read_bytes()
    assert os.readlink(dest / "link") == "sub/f0"


def _tar(*members: tuple[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_hostile_streamed_archives(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    # Names that leave the destination are skipped as in `extract`.
    seen = _unpack_streamed(list(wire_chunks([_tar(("../up.txt", b"x"), ("/abs", b"x"), ("ok", b"ok"))])), dest)
    assert seen == ["ok", "../up.txt: outside the destination", "/abs: outside the destination"]
    assert not (tmp_path / "up.txt").exists()
    # Content over the limit stops before the member that crosses it is written.
    over = _tar(("a", bytes(600)), ("b", bytes(600)))
    with pytest.raises(TransferError, match="content larger than 1000 bytes"):
        _unpack_streamed(list(wire_chunks([over])), dest, limit=1000)
    assert (dest / "a").exists() and not (dest / "b").exists()
    # An archive cut inside a member, or not an archive at all.
    with pytest.raises(TransferError, match="tar archive"):
        _unpack_streamed(list(wire_chunks([_tar(("cut", bytes(5000)))[:2048]])), dest)
    with pytest.raises(TransferError, match="tar archive"):
        _unpack_streamed(list(wire_chunks([b"not a tar" * 100])), dest)


def test_a_file_that_shrinks_while_it_is_packed_fails_the_transfer(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    (source / "f").write_bytes(bytes(5000))
    pieces = tar_pieces(source, limit=LIMIT)
    next(pieces)   # the header, with the size the file had
    os.truncate(source / "f", 100)
    with pytest.raises(TransferError, match="shrank"):
        list(pieces)


def test_packing_checks_the_whole_tree_before_a_byte(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    for index in range(3):
        (source / f"f{index}").write_bytes(bytes(400))
    with pytest.raises(TransferError, match="larger than 1000 bytes"):
        next(tar_pieces(source, limit=1000))
    assert len(pack(source, limit=LIMIT)) > 1200
