"""Publishing a build: a temporary sibling directory renamed into place, never a partial output.

A directory vero created carries the marker file `.vero-task`; vero replaces only such a
directory (or an empty one) and refuses anything else, so it never deletes a user's files.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import glob
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


def _build_prefix(out: Path) -> str:
    return f".{out.name}.vero-build-"


def _remove_abandoned_stages(out: Path) -> None:
    """Remove the staging directories of builds of `out` that were killed (SIGKILL, OOM): a live
    build holds a lock on its own, so a stage whose lock can be taken has no owner left."""
    for stage in out.parent.glob(glob.escape(_build_prefix(out)) + "*"):
        if stage.is_symlink() or not stage.is_dir():
            continue
        try:
            fd = os.open(stage, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue   # a build in progress
        else:
            shutil.rmtree(stage, ignore_errors=True)
        finally:
            os.close(fd)


@contextlib.contextmanager
def staging_dir(out: Path) -> Iterator[Path]:
    """A fresh directory beside `out`, locked while this build runs; removed unless `publish`
    moved it into place. Stages that killed builds of `out` left behind are removed first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_stages(out)
    # Made under another name and locked before it gets the name other builds look for.
    fresh = Path(tempfile.mkdtemp(prefix=f".{out.name}.vero-new-", dir=out.parent))
    fd = os.open(fresh, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        stage = fresh.with_name(_build_prefix(out) + fresh.name.rsplit("-", 1)[1])
        os.rename(fresh, stage)
        try:
            yield stage
        finally:
            if stage.exists():
                shutil.rmtree(stage)
    finally:
        os.close(fd)
        if fresh.exists():
            fresh.rmdir()


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
