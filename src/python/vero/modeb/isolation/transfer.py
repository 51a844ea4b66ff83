"""Files across the isolation boundary, as bounded tar archives, written without following links.

`pack_into` archives a file or a directory's contents (regular files, directories and symlinks
only) into a file, normally a spool (`protocol.spool`), so an archive is never held whole in memory.
`extract` writes an archive into a directory through directory file descriptors: no member may
leave the directory, no existing symlink is followed (a member whose path meets one is skipped),
no special file is created, and only permission bits 0o755/0o644 survive. That makes it safe for
a directory someone else controls, such as a trial's `agent/` dir, which the task container also
writes (it is bind-mounted there).

Runs in vero's interpreter and in harbor's: stdlib only.
"""

from __future__ import annotations

import contextlib
import io
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from vero.modeb.isolation.errors import TransferError

MAX_MEMBERS = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


@dataclass
class ExtractReport:
    """What `extract` wrote and what it refused (with the reason)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _normalized(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() or info.mode & 0o111 else 0o644
    return info


def _keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """tarfile's `filter`: regular files, directories and symlinks only, without owners or special bits."""
    if not (info.isreg() or info.isdir() or info.issym()):
        return None
    return _normalized(info)


def pack_into(out: IO[bytes], path: Path, *, limit: int, as_name: str | None = None, follow: bool = False) -> int:
    """Write to `out` a tar of the regular file `path` (one member, `as_name` or its base name) or
    of a directory's contents (members relative to it); return its size. Symlinks inside a
    directory are stored as links, never followed; `path` itself is followed only with `follow`
    (never on the trusted side, where a link could point at a file the candidate must not read).
    Streams: file contents pass through in chunks, so `out` (a spool) decides the memory used."""
    path = Path(path)
    start = out.tell()
    try:
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
            if os.path.isdir(path) and (follow or not os.path.islink(path)):
                for child in sorted(os.listdir(path)):
                    archive.add(os.path.join(path, child), arcname=child, recursive=True, filter=_keep)
                    if out.tell() - start > limit:
                        raise TransferError(f"{path} is larger than {limit} bytes")
            else:
                fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW) | os.O_NONBLOCK)
                with os.fdopen(fd, "rb") as handle:
                    if not stat.S_ISREG(os.fstat(fd).st_mode):
                        raise TransferError(f"{path} is not a regular file")
                    if os.fstat(fd).st_size > limit:
                        raise TransferError(f"{path} is larger than {limit} bytes")
                    info = archive.gettarinfo(arcname=as_name or path.name, fileobj=handle)
                    archive.addfile(_normalized(info), handle)
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}") from None
    size = out.tell() - start
    if size > limit:
        raise TransferError(f"{path} is larger than {limit} bytes")
    return size


def pack(path: Path, *, limit: int, as_name: str | None = None, follow: bool = False) -> bytes:
    """`pack_into` an in-memory buffer: the archive as bytes (small archives)."""
    buffer = io.BytesIO()
    pack_into(buffer, path, limit=limit, as_name=as_name, follow=follow)
    return buffer.getvalue()


def _parts(name: str) -> list[str] | None:
    """The components of a member name, or None when it is absolute or leaves the directory."""
    if name.startswith("/") or "\0" in name:
        return None
    normal = posixpath.normpath(name)
    if normal == ".":
        return []
    parts = normal.split("/")
    if ".." in parts:
        return None
    return parts


def _link_stays_inside(parts: list[str], target: str) -> bool:
    if target.startswith("/") or "\0" in target:
        return False
    resolved = posixpath.normpath(posixpath.join(*parts[:-1], target) if parts[:-1] else target)
    return resolved != ".." and not resolved.startswith("../")


def _open_subdir(parent_fd: int, name: str, create: bool) -> int:
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _open_parent(root_fd: int, parts: list[str]) -> int:
    fd = os.dup(root_fd)
    try:
        for part in parts:
            child = _open_subdir(fd, part, create=True)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _replace_entry(dir_fd: int, name: str) -> None:
    """Remove a file or symlink in the way (never a directory); the caller then creates exclusively."""
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(name)
    os.unlink(name, dir_fd=dir_fd)


def _write_file(dir_fd: int, name: str, source: IO[bytes] | None, mode: int) -> None:
    _replace_entry(dir_fd, name)
    # O_EXCL + O_NOFOLLOW: if anything (a symlink included) reappeared since, this fails.
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=dir_fd)
    with os.fdopen(fd, "wb") as handle:
        if source is not None:
            while chunk := source.read(1 << 20):
                handle.write(chunk)


def extract(data: bytes | IO[bytes], dest: Path, *, limit: int, allow_symlinks: bool = True) -> ExtractReport:
    """Write the archive `data` (bytes, or a seekable file read from its start) into the existing
    directory `dest` (see the module docstring). Every member header is checked before anything
    is written; contents are copied in chunks.

    Raises TransferError for an archive that is malformed or over `limit` bytes of content;
    members that cannot be written safely are listed in `skipped`.
    """
    report = ExtractReport()
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data) if isinstance(data, bytes) else data, mode="r:")
    except tarfile.TarError as exc:
        raise TransferError(f"not a tar archive: {exc}") from None
    with archive:
        try:
            members = archive.getmembers()
        except tarfile.TarError as exc:
            raise TransferError(f"corrupt tar archive: {exc}") from None
        if len(members) > MAX_MEMBERS:
            raise TransferError(f"more than {MAX_MEMBERS} files")
        if any(m.issparse() for m in members) or sum(m.size for m in members if m.isreg()) > limit:
            raise TransferError(f"content larger than {limit} bytes")
        try:
            root_fd = os.open(dest, _DIR_FLAGS)
        except OSError as exc:
            raise TransferError(f"cannot open {dest}: {exc.strerror}") from None
        try:
            for member in members:
                why = _extract_one(archive, member, root_fd, allow_symlinks)
                (report.skipped if why else report.written).append(
                    f"{member.name}: {why}" if why else member.name)
        finally:
            os.close(root_fd)
    return report


def _extract_one(archive: tarfile.TarFile, member: tarfile.TarInfo, root_fd: int,
                 allow_symlinks: bool) -> str | None:
    """Write one member; the reason it was skipped, or None."""
    parts = _parts(member.name)
    if parts is None:
        return "outside the destination"
    if not parts:
        return None if member.isdir() else "no name"
    if member.issym():
        if not allow_symlinks:
            return "symlinks are not copied here"
        if not _link_stays_inside(parts, member.linkname):
            return "symlink leaves the destination"
    elif not (member.isreg() or member.isdir()):
        return "not a regular file, directory or symlink"
    try:
        parent_fd = _open_parent(root_fd, parts[:-1])
    except OSError as exc:
        return f"parent directory unusable ({exc.strerror})"
    try:
        name = parts[-1]
        if member.isdir():
            os.close(_open_subdir(parent_fd, name, create=True))
        elif member.issym():
            _replace_entry(parent_fd, name)
            os.symlink(member.linkname, name, dir_fd=parent_fd)
        else:
            source = archive.extractfile(member)
            _write_file(parent_fd, name, source, 0o755 if member.mode & 0o111 else 0o644)
    except OSError as exc:
        return f"cannot write ({exc.strerror or exc})"
    finally:
        os.close(parent_fd)
    return None


def write_text_nofollow(directory: Path, name: str, text: str) -> None:
    """Write one file into `directory` (which someone else may control) without following links."""
    dir_fd = os.open(directory, _DIR_FLAGS)
    try:
        _write_file(dir_fd, name, io.BytesIO(text.encode("utf-8")), 0o644)
    finally:
        os.close(dir_fd)
