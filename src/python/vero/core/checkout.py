"""Checking a commit out as the bytes git stores: no attributes, filters or hooks.

`git checkout` applies the commit's own `.gitattributes` (`eol`, `ident`,
`working-tree-encoding`, filters), so the bytes a candidate runs on could differ from the
blobs the read-only-path check compared. Here every blob is written exactly as stored, through
directory file descriptors that never follow a link, after the tree passed `tree_problems`
(entry names, depth, number and size of files).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from vero.core.limits import RepoLimits

MAX_DEPTH = 128
MAX_PATH_BYTES = 4000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class TreeEntry:
    """One non-tree entry of a recursive `git ls-tree -l`."""

    mode: str
    kind: str
    object_id: str
    size: int
    path: str


def parse_ls_tree(raw: bytes) -> Iterator[TreeEntry]:
    """Entries of `git ls-tree -r -z -l --full-tree` output."""
    for record in raw.split(b"\0"):
        if not record:
            continue
        meta, _, path = record.partition(b"\t")
        mode, kind, object_id, size = meta.split()
        yield TreeEntry(mode=mode.decode(), kind=kind.decode(), object_id=object_id.decode(),
                        size=int(size) if size != b"-" else 0, path=path.decode("utf-8", "surrogateescape"))


def tree_problems(entries: list[TreeEntry], limits: RepoLimits) -> list[str]:
    """Why the tree cannot be checked out safely (empty when it can)."""
    problems = []
    if len(entries) > limits.tree_files:
        problems.append(f"{len(entries)} files (the limit is {limits.tree_files})")
    total = sum(entry.size for entry in entries)
    if total > limits.tree_mb * 1024 * 1024:
        problems.append(f"{total} bytes of files (the limit is {limits.tree_mb} MiB)")
    for entry in entries:
        parts = entry.path.split("/")
        bad = [p for p in parts if p in ("", ".", "..") or p.lower() == ".git"]
        if bad or "\0" in entry.path:
            problems.append(f"path {entry.path[:200]!r} has a forbidden component")
        elif len(parts) > MAX_DEPTH or len(os.fsencode(entry.path)) > MAX_PATH_BYTES:
            problems.append(f"path {entry.path[:200]!r}... is nested deeper than {MAX_DEPTH} directories or "
                            f"longer than {MAX_PATH_BYTES} bytes")
        elif entry.mode not in ("100644", "100755", "120000", "160000"):
            problems.append(f"path {entry.path[:200]!r} has the unknown mode {entry.mode}")
        if len(problems) >= 5:
            break
    return problems


class _Dirs:
    """Directory file descriptors under a root, created on first use and cached."""

    def __init__(self, root: Path) -> None:
        self._fds: dict[str, int] = {"": os.open(root, _DIR_FLAGS)}

    def fd(self, directory: str) -> int:
        if directory in self._fds:
            return self._fds[directory]
        parent, _, name = directory.rpartition("/")
        parent_fd = self.fd(parent)
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent_fd)
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        self._fds[directory] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _read_exact(stream: IO[bytes], size: int, sink: IO[bytes] | None) -> bytes:
    """Read `size` bytes: into `sink` when given (returns b""), else returned."""
    chunks = []
    left = size
    while left:
        chunk = stream.read(min(left, _COPY_CHUNK))
        if not chunk:
            raise OSError("git cat-file ended early")
        left -= len(chunk)
        if sink is None:
            chunks.append(chunk)
        else:
            sink.write(chunk)
    return b"".join(chunks)


def write_tree(entries: list[TreeEntry], dest: Path, cat_file: subprocess.Popen[bytes]) -> None:
    """Write `entries` (checked by `tree_problems`) into the empty directory `dest`, reading blobs
    from a running `git cat-file --batch`."""
    assert cat_file.stdin is not None and cat_file.stdout is not None
    dirs = _Dirs(dest)
    try:
        for entry in entries:
            parent, _, name = entry.path.rpartition("/")
            parent_fd = dirs.fd(parent)
            if entry.mode == "160000":  # a submodule: git leaves an empty directory too
                os.mkdir(name, 0o755, dir_fd=parent_fd)
                continue
            cat_file.stdin.write(entry.object_id.encode() + b"\n")
            cat_file.stdin.flush()
            header = cat_file.stdout.readline().split()
            if len(header) != 3 or header[1] != b"blob":
                raise OSError(f"git cat-file gave no blob for {entry.path!r}: {header!r}")
            size = int(header[2])
            if entry.mode == "120000":
                target = _read_exact(cat_file.stdout, size, None)
                os.symlink(target, name, dir_fd=parent_fd)
            else:
                mode = 0o755 if entry.mode == "100755" else 0o644
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                             dir_fd=parent_fd)
                os.fchmod(fd, mode)  # whatever the umask
                with os.fdopen(fd, "wb") as handle:
                    _read_exact(cat_file.stdout, size, handle)
            cat_file.stdout.read(1)  # the newline after each object
    finally:
        dirs.close()
