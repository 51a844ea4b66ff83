"""Publishing a build: a temporary sibling directory renamed into place, never a partial output.

A directory vero created carries the marker file `.vero-task`; vero replaces only such a
directory (or an empty one) and refuses anything else, so it never deletes a user's files.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vero.errors import VeroError
from vero.fsutil import fsync_dir

MARKER = ".vero-task"


def check_output(out: Path) -> None:
    """Refuse an output that exists and is not a directory vero made (or an empty directory)."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise VeroError("the output path exists and is not a directory", where=str(out),
                        fix="choose another -o, or remove it yourself")
    if out.is_dir() and not (out / MARKER).is_file() and any(out.iterdir()):
        raise VeroError(f"the output directory is not empty and has no {MARKER} marker, so vero did not "
                        "create it and will not replace it", where=str(out),
                        fix="choose a new or empty -o directory, or one an earlier `vero harbor build` wrote")


def flush_filesystem(path: Path) -> None:
    """Write the file system holding `path` to disk: one syncfs(2) instead of an fsync per file
    (thousands of them for a big agent repo); a whole-system sync where syncfs is unavailable."""
    libc = ctypes.CDLL(None, use_errno=True)
    syncfs = getattr(libc, "syncfs", None)
    if syncfs is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), f"syncfs failed for {path}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh directory beside `out`; removed unless `publish` moved it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.vero-build-", dir=out.parent))
    try:
        yield stage
    finally:
        if stage.exists():
            shutil.rmtree(stage)


def publish(stage: Path, out: Path) -> None:
    """Move the finished `stage` to `out`, replacing an earlier vero output or an empty directory."""
    check_output(out)  # again: the directory may have changed while we were building
    flush_filesystem(stage)  # the files' data is on disk before any name points at them
    if not out.exists():
        os.rename(stage, out)
        fsync_dir(out.parent)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.vero-old-", dir=out.parent))
    os.rename(out, old)  # onto the empty placeholder: atomic on POSIX
    try:
        os.rename(stage, out)
    except OSError:
        os.rename(old, out)
        raise
    fsync_dir(out.parent)
    shutil.rmtree(old)
