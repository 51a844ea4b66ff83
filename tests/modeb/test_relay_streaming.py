"""Relay payloads stream: large ones are spooled to a temporary file on both ends, never held whole."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from vero.modeb.isolation.errors import ProtocolError
from vero.modeb.isolation.protocol import (
    SPOOL_BYTES,
    Frame,
    Request,
    encode_frame,
    frame_head,
    payload_size,
    read_frame,
    spool,
)
from vero.modeb.isolation.transfer import extract, pack_into

UPLOAD = Request.model_validate({"type": "request", "id": 1, "call": {"op": "upload", "kind": "dir", "target": "/x"}})


def _read(data: bytes) -> Frame:
    async def run() -> Frame | None:
        reader = asyncio.StreamReader(limit=64 * 1024)
        reader.feed_data(data)
        reader.feed_eof()
        return await read_frame(reader)
    frame = asyncio.run(run())
    assert frame is not None
    return frame


def test_a_large_payload_is_spooled_and_a_small_one_kept(tmp_path: Path) -> None:
    big = os.urandom(3 * SPOOL_BYTES + 5)
    frame = _read(encode_frame(UPLOAD, big))
    assert frame.spooled is not None and frame.payload == b"" and frame.has_payload
    assert frame.payload_file().read() == big
    frame.close()
    small = _read(encode_frame(UPLOAD, b"tar"))
    assert small.spooled is None and small.payload_file().read() == b"tar"
    with pytest.raises(ProtocolError, match="inside a frame"):
        _read(encode_frame(UPLOAD, big)[:-1])


def test_a_spooled_archive_goes_over_the_wire_in_chunks(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    for index in range(5):
        (source / "sub" / f"f{index}").write_bytes(os.urandom(SPOOL_BYTES))
    os.symlink("sub/f0", source / "link")
    with spool() as out:
        size = pack_into(out, source, limit=64 * SPOOL_BYTES)
        assert payload_size(out) == size > 5 * SPOOL_BYTES
        wire = frame_head(UPLOAD, size) + out.read()
    frame = _read(wire)
    dest = tmp_path / "dest"
    dest.mkdir()
    report = extract(frame.payload_file(), dest, limit=64 * SPOOL_BYTES)
    frame.close()
    assert sorted(report.written) == ["link", "sub", "sub/f0", "sub/f1", "sub/f2", "sub/f3", "sub/f4"]
    assert (dest / "sub/f3").read_bytes() == (source / "sub/f3").read_bytes()
    assert os.readlink(dest / "link") == "sub/f0"
