"""Streamed payloads: a transfer goes over the pipe in chunks while it is packed and is unpacked
while it arrives, so neither end spools it whole and packing, sending and unpacking overlap.

On the wire a streamed payload follows its frame's message (`protocol.read_frame`) as chunks, each
a 4-byte big-endian length and that many bytes: a length of 0 ends the payload, `ABORTED` ends it
because the sender failed while packing (the receiver's request fails, the pipe stays usable).
Any other length above CHUNK_BYTES, more than the transfer limit in all, or an end of stream
before the end marker is a ProtocolError: the pipe can no longer be read in step.

The pipe carries nothing else until a streamed payload is read to its end, so whoever receives
one must read it to the end or `drain` it. Runs in vero's interpreter and in harbor's: stdlib only.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import struct
from collections.abc import Iterable, Iterator

from vero.modeb.isolation.errors import ProtocolError, TransferError

CHUNK_BYTES = 1024 * 1024
_LENGTH = struct.Struct(">I")
ABORTED = 0xFFFF_FFFF
END_MARK = _LENGTH.pack(0)
ABORT_MARK = _LENGTH.pack(ABORTED)


def wire_chunks(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """The wire form of a payload produced as `pieces` of any size: chunks of CHUNK_BYTES (the
    last one shorter), each with its length, then the end mark. Few large chunks keep the
    per-chunk cost of both ends small; an exception of `pieces` propagates (the sender then
    writes ABORT_MARK)."""
    buffer = bytearray(_LENGTH.size)
    for piece in pieces:
        buffer += piece
        while len(buffer) - _LENGTH.size >= CHUNK_BYTES:
            chunk = buffer[:_LENGTH.size + CHUNK_BYTES]
            _LENGTH.pack_into(chunk, 0, CHUNK_BYTES)
            yield bytes(chunk)
            buffer[_LENGTH.size:] = buffer[_LENGTH.size + CHUNK_BYTES:]
    if len(buffer) > _LENGTH.size:
        _LENGTH.pack_into(buffer, 0, len(buffer) - _LENGTH.size)
        yield bytes(buffer)
    yield END_MARK


class PayloadStream:
    """A streamed payload as it is read from the pipe, at most `limit` bytes in all.

    `read_chunk` returns the next chunk (b"" at the end) and raises TransferError when the sender
    aborted and ProtocolError when the stream is malformed; `finished` waits until the payload was
    read to its end (the frame reader waits on it before it reads the next frame).
    """

    def __init__(self, reader: asyncio.StreamReader, limit: int) -> None:
        self._reader = reader
        self._left = limit
        self._lock = asyncio.Lock()
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def ended(self) -> bool:
        """Whether the payload was read to its end (or found malformed)."""
        return self._ended.done()

    async def read_chunk(self) -> bytes:
        """The next chunk of the payload, b"" once it ended."""
        async with self._lock:   # an abandoned reader (a thread) and `drain` may overlap
            if self._ended.done():
                self._ended.result()   # a malformed stream stays an error
                return b""
            try:
                return await self._next()
            except ProtocolError as exc:
                self._ended.set_exception(exc)
                self._ended.exception()   # retrieved here: nobody may wait on `finished`
                raise

    async def _next(self) -> bytes:
        try:
            (length,) = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))
            if length == ABORTED:
                self._ended.set_result(None)
                raise TransferError("the sender could not finish this transfer")
            if length > CHUNK_BYTES:
                raise ProtocolError(f"chunk of {length} bytes is larger than {CHUNK_BYTES}")
            if length > self._left:
                raise ProtocolError("streamed transfer larger than its limit")
            self._left -= length
            data = await self._reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise ProtocolError("the stream ended inside a streamed payload") from None
        if not data:
            self._ended.set_result(None)
        return data

    async def drain(self) -> None:
        """Read and drop what is left of the payload (an aborted one included)."""
        while not self.ended:
            try:
                await self.read_chunk()
            except TransferError:
                return

    async def finished(self) -> None:
        """Wait until the payload was read to its end; a malformed stream raises ProtocolError."""
        await asyncio.shield(self._ended)


class BlockingPayload:
    """A PayloadStream as a blocking, readable file for a worker thread (such as tarfile's
    stream mode). Chunks are fetched from the event loop `loop` that reads the pipe, one ahead:
    while the thread works on a chunk the loop already reads the next (two chunks at most)."""

    def __init__(self, stream: PayloadStream, loop: asyncio.AbstractEventLoop) -> None:
        self._stream = stream
        self._loop = loop
        self._chunk = memoryview(b"")
        self._next: concurrent.futures.Future[bytes] | None = self._fetch()

    def _fetch(self) -> concurrent.futures.Future[bytes]:
        return asyncio.run_coroutine_threadsafe(self._stream.read_chunk(), self._loop)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all the rest for a negative size); b"" at the end."""
        if size < 0:
            return b"".join(iter(lambda: self.read(CHUNK_BYTES), b""))
        if not self._chunk and self._next is not None:
            chunk = self._next.result()
            self._next = self._fetch() if chunk else None
            self._chunk = memoryview(chunk)
        data, self._chunk = self._chunk[:size], self._chunk[size:]
        return bytes(data)
