"""Copying one input file into the output in a single read pass, hashed on the way.

A small file (most of an agent repo) is read whole with one `read`, hashed and written with one
`write`: no buffered file objects, no per-chunk loop. A big file (a dataset split, the runtime
PEX) streams through one reused buffer, small enough to stay in the CPU cache between being
read, hashed and written (a bigger one measured slower: every pass then goes to memory).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vero.baseline import git_object_hash
from vero.errors import VeroError

SMALL_FILE = 1 << 20   # read whole up to this size
CHUNK = 1 << 20        # the streaming buffer


@dataclass(frozen=True)
class Copied:
    """What copying wrote: the copy's mode, the size and digests of its bytes."""

    mode: int
    size: int
    sha256: str
    git_blob: str | None


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def copy_hashed(src: Path | str, dest: Path | str, mode_for: Callable[[int], int], *, git_blob: bool) -> Copied:
    """Create `dest` (it must not exist) with the bytes of `src` and the mode `mode_for` gives for
    the source's, reading `src` once; with `git_blob`, also its git blob id."""
    source = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = os.fstat(source)
        out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            mode = mode_for(info.st_mode)
            os.fchmod(out, mode)
            if info.st_size <= SMALL_FILE:
                return _copy_whole(source, out, mode, info.st_size, git_blob)
            return _copy_streaming(source, out, mode, info.st_size, git_blob, src)
        finally:
            os.close(out)
    finally:
        os.close(source)


def _copy_whole(source: int, out: int, mode: int, size: int, git_blob: bool) -> Copied:
    data = os.read(source, size + 1)  # one byte more tells a file that grew since fstat
    if len(data) > size:
        rest = [data]
        while part := os.read(source, SMALL_FILE):
            rest.append(part)
        data = b"".join(rest)
    _write_all(out, data)
    # The blob id is of the bytes read (and written), whatever the size said.
    blob = git_object_hash("blob", len(data), data).hexdigest() if git_blob else None
    return Copied(mode, len(data), hashlib.sha256(data).hexdigest(), blob)


def _copy_streaming(source: int, out: int, mode: int, size: int, git_blob: bool, src: Path | str) -> Copied:
    digest = hashlib.sha256()
    blob = git_object_hash("blob", size) if git_blob else None
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    copied = 0
    while count := os.readv(source, [buffer]):
        chunk = view[:count]
        digest.update(chunk)
        if blob is not None:
            blob.update(chunk)
        _write_all(out, chunk)
        copied += count
    if blob is not None and copied != size:
        raise VeroError(f"{src} changed while it was read ({size} bytes, then {copied})",
                        where=str(src), fix="build again once nothing writes to the inputs")
    return Copied(mode, copied, digest.hexdigest(), blob.hexdigest() if blob else None)
