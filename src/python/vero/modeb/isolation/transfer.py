"""Files across the isolation boundary, as bounded tar archives, written without following links.

`tar_pieces` archives a file or a directory's contents (regular files, directories and symlinks
only) piece by piece as it reads them, for a streamed payload (`streaming`) or a spool
(`pack_into`), so an archive is never held whole in memory. `extract` (a seekable archive, every
header checked first) and `extract_stream` (an archive as it arrives) write an archive into a
directory through directory file descriptors: no member may
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

from vero.modeb.isolation.errors import TransferError

MAX_MEMBERS = 100_000
# The end of an archive: two zero blocks.
_END_BYTES = 2 * tarfile.BLOCKSIZE
_READ_BYTES = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class Readable(Protocol):
    """What `extract_stream` reads: sequential reads only (tarfile's stream mode)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to `size` bytes; b"" at the end."""


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


def _tar_info(arcname: str, st: os.stat_result) -> tarfile.TarInfo | None:
    """The header of a regular file, directory or symlink (None for anything else); a symlink's
    target is filled in by the caller."""
    info = tarfile.TarInfo(arcname)
    if stat.S_ISREG(st.st_mode):
        info.size = st.st_size
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
    else:
        return None
    info.mode = stat.S_IMODE(st.st_mode)
    # Whole seconds: a float would cost a PAX header per member, and extraction sets no mtime.
    info.mtime = int(st.st_mtime)
    return _normalized(info)


@dataclass(frozen=True)
class _Member:
    header: bytes
    size: int
    source: str | None   # where a regular file's contents are read


def _member(info: tarfile.TarInfo, source: str) -> _Member:
    header = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    return _Member(header, info.size, source if info.isreg() else None)


def _members(path: Path, as_name: str | None, follow: bool, limit: int) -> list[_Member]:
    """The members of the archive of `path`, listed (not read) before anything is packed, so a
    tree over `limit` or MAX_MEMBERS fails before a byte is sent. Depth first in name order."""
    st = os.stat(path) if follow else os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        # Opened (not only stat'ed): a link on the trusted side is refused as the open refuses it.
        fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW) | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        info = _tar_info(as_name or path.name, st)
        if info is None or not info.isreg():
            raise TransferError(f"{path} is not a regular file")
        found = [_member(info, str(path))]
    else:
        found = []
        stack = [(str(path), "", iter(sorted(os.listdir(path))))]
        while stack:
            directory, prefix, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                continue
            full = os.path.join(directory, child)
            info = _tar_info(prefix + child, os.lstat(full))
            if info is None:
                continue
            if info.issym():
                info.linkname = os.readlink(full)
            found.append(_member(info, full))
            if len(found) > MAX_MEMBERS:
                raise TransferError(f"{path} holds more than {MAX_MEMBERS} files")
            if info.isdir():
                stack.append((full, info.name + "/", iter(sorted(os.listdir(full)))))
    size = sum(len(m.header) + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE for m in found)
    if size + _END_BYTES > limit:
        raise TransferError(f"{path} is larger than {limit} bytes")
    return found


def _contents(source: str, size: int, follow: bool) -> Iterator[bytes]:
    """Exactly `size` bytes of the regular file `source`, then its padding to a tar block."""
    fd = os.open(source, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW) | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TransferError(f"{source} is not a regular file")
        left = size
        while left:
            data = os.read(fd, min(left, _READ_BYTES))
            if not data:
                raise TransferError(f"{source} shrank while it was packed")
            left -= len(data)
            yield data
    finally:
        os.close(fd)
    if size % tarfile.BLOCKSIZE:
        yield bytes(tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE)


def tar_pieces(path: Path, *, limit: int, as_name: str | None = None, follow: bool = False) -> Iterator[bytes]:
    """The tar of the regular file `path` (one member, `as_name` or its base name) or of a
    directory's contents (members relative to it), produced piece by piece as it is read, at most
    `limit` bytes in all. Only regular files, directories and symlinks are packed, without owners
    or special bits. Symlinks inside a directory are stored as links, never followed (nor is a
    member swapped for one while packing); `path` itself is followed only with `follow` (never on
    the trusted side, where a link could point at a file the candidate must not read)."""
    path = Path(path)
    try:
        members = _members(path, as_name, follow, limit)
        for member in members:
            yield member.header
            if member.source is not None:
                yield from _contents(member.source, member.size, follow and member.source == str(path))
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror or exc}") from None
    yield bytes(_END_BYTES)


def pack_into(out: IO[bytes], path: Path, *, limit: int, as_name: str | None = None, follow: bool = False) -> int:
    """Write `tar_pieces(path, ...)` to `out` (a spool: it decides the memory used); return its size."""
    size = 0
    for piece in tar_pieces(path, limit=limit, as_name=as_name, follow=follow):
        size += out.write(piece)
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


def extract_stream(source: Readable, dest: Path, *, limit: int, allow_symlinks: bool = True) -> ExtractReport:
    """Write the archive read sequentially from `source` (such as a streamed payload,
    `streaming.BlockingPayload`) into the existing directory `dest`, as `extract` does, but
    checking each member as it arrives: what came before a bad member or the end of the limit
    stays written, so `dest` must be a directory whose partial contents harm nobody (a private
    staging dir, or the candidate's own target). Raises TransferError like `extract`."""
    report = ExtractReport()
    try:
        root_fd = os.open(dest, _DIR_FLAGS)
    except OSError as exc:
        raise TransferError(f"cannot open {dest}: {exc.strerror}") from None
    try:
        count = content = 0
        with tarfile.open(fileobj=cast(IO[bytes], source), mode="r|") as archive:
            while (member := archive.next()) is not None:
                count += 1
                content += member.size if member.isreg() else 0
                if count > MAX_MEMBERS:
                    raise TransferError(f"more than {MAX_MEMBERS} files")
                if member.issparse() or content > limit:
                    raise TransferError(f"content larger than {limit} bytes")
                why = _extract_one(archive, member, root_fd, allow_symlinks)
                (report.skipped if why else report.written).append(
                    f"{member.name}: {why}" if why else member.name)
    except tarfile.TarError as exc:
        raise TransferError(f"not a tar archive or a corrupt one: {exc}") from None
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
