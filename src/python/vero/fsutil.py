"""Crash-safe file writes: a reader sees the old content or the new one, never a mix."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def fsync_dir(directory: Path) -> None:
    """Persist a rename or creation inside `directory`."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to a temp file beside `path`, fsync it, chmod it and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_new_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create `path` (it must not exist; a link is not followed) holding `data`, fsynced.

    For files in a directory nobody else sees yet (a staging directory swapped in later): the
    rename that publishes the directory makes them visible, so each needs no rename of its own.
    The caller fsyncs the directory once before publishing it.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_unfinished_writes(directory: Path) -> None:
    """Delete the temp files that atomic writes into `directory` left when their process was
    killed before the rename. Only for a directory whose writers are all known to be gone."""
    for leftover in Path(directory).glob(".*.tmp"):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink()


def atomic_write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """UTF-8 text variant of `atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"), mode)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, two-space indent, trailing newline."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: Path, obj: Any, mode: int = 0o644) -> None:
    """Write `obj` as canonical JSON, atomically."""
    atomic_write_text(path, canonical_json(obj), mode)


def model_json(model: BaseModel) -> str:
    """A pydantic model as canonical JSON (the form every model file on disk has)."""
    return canonical_json(model.model_dump(mode="json"))


def atomic_write_model(path: Path, model: BaseModel, mode: int = 0o644) -> None:
    """Write a pydantic model as canonical JSON, atomically."""
    atomic_write_text(path, model_json(model), mode)
