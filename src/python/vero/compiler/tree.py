"""Writing the output tree: normalised modes, no timestamps, and a sha256 of every file as it is written.

`TreeWriter` records each file's digest while copying, so sealing does not read the output again;
on request it also records the file's git blob id in the same pass, so the baseline commit does
not read the files again either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from vero.baseline import git_object_hash
from vero.compiler.copying import copy_hashed
from vero.errors import VeroError

CHUNK = 1 << 20
FILE_MODE = 0o644
EXEC_MODE = 0o755
# Never part of any baked tree: VCS metadata and interpreter caches differ between machines.
SKIPPED_NAMES = frozenset({".git", "__pycache__"})


@dataclass(frozen=True)
class Entry:
    """One file of the output: a regular file (sha256 of its bytes) or a symlink (its target)."""

    mode: int
    size: int
    sha256: str
    symlink: str | None = None
    git_blob: str | None = None    # recorded when the copy was asked for it (baseline files)


def git_blob_id(data: bytes) -> str:
    """The id git gives a blob of these bytes (a symlink's blob is its target)."""
    return git_object_hash("blob", len(data), data).hexdigest()


def normalised_mode(mode: int) -> int:
    """0755 when any execute bit is set, else 0644."""
    return EXEC_MODE if mode & 0o111 else FILE_MODE


def check_relpath(rel: str, where: str) -> None:
    """Accept a clean relative POSIX path, or raise a VeroError naming it."""
    if _is_plain(rel):  # the common case, decided without pathlib (it runs once per file)
        return
    pure = PurePosixPath(rel)
    if not rel or pure.is_absolute() or ".." in pure.parts or str(pure) != rel.rstrip("/"):
        raise VeroError(f"unsafe path {rel!r}", where=where, fix="use plain relative paths inside the tree")
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise VeroError(f"file name {rel.encode('utf-8', 'surrogateescape')!r} is not valid UTF-8",
                        where=where, fix="rename the file") from None


def check_symlink(rel: str, target: str, where: str) -> None:
    """Refuse a symlink that is absolute or points outside the tree it belongs to."""
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    if target.startswith("/") or joined == ".." or joined.startswith("../"):
        raise VeroError(f"symlink {rel!r} -> {target!r} points outside the tree", where=where,
                        fix="replace it by a relative link inside the directory, or by a copy")


_UNPLAIN_PARTS = frozenset({"", ".", ".."})


def _is_plain(rel: str) -> bool:
    """True for a path `check_relpath` accepts as it is: ASCII, relative, no part to normalise."""
    return (bool(rel) and rel[0] != "/" and rel.isascii()
            and not any(part in _UNPLAIN_PARTS for part in rel.split("/")))


class TreeWriter:
    """Creates files under `root` (a directory vero owns) and records what it wrote."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.entries: dict[str, Entry] = {}
        self._made_dirs: set[str] = {""}  # relative to root
        self._prefix = os.path.join(self.root, "")

    def _target(self, rel: str) -> str:
        """The absolute path of the new file `rel`, its directory made. Plain strings, not
        pathlib: this runs once per file of the task (thousands for a big agent repo)."""
        check_relpath(rel, str(self.root))
        if rel in self.entries:
            raise VeroError(f"{rel!r} would be written twice", where=str(self.root),
                            fix="report this as a vero bug")
        parent = rel.rstrip("/").rpartition("/")[0]
        if parent not in self._made_dirs:  # thousands of files share a few directories
            os.makedirs(self._prefix + parent, exist_ok=True)
            while parent:
                self._made_dirs.add(parent)
                parent = parent.rpartition("/")[0]
        return self._prefix + rel

    def write_bytes(self, rel: str, data: bytes, mode: int = FILE_MODE) -> None:
        """Create `rel` with `data`."""
        path = self._target(rel)
        with open(path, "xb") as handle:
            handle.write(data)
        os.chmod(path, normalised_mode(mode))
        self.entries[rel] = Entry(normalised_mode(mode), len(data), hashlib.sha256(data).hexdigest())

    def write_text(self, rel: str, text: str, mode: int = FILE_MODE) -> None:
        """Create `rel` with UTF-8 `text`."""
        self.write_bytes(rel, text.encode("utf-8"), mode)

    def copy_file(self, rel: str, src: Path, mode: int | None = None, *, git_blob: bool = False) -> None:
        """Copy `src` to `rel`, reading it once and hashing on the way (sha256, and with `git_blob`
        its git blob id too); the mode is normalised from `src` unless given."""
        def mode_for(source_mode: int) -> int:
            return normalised_mode(source_mode if mode is None else mode)
        copied = copy_hashed(src, self._target(rel), mode_for, git_blob=git_blob)
        self.entries[rel] = Entry(copied.mode, copied.size, copied.sha256, git_blob=copied.git_blob)

    @contextlib.contextmanager
    def copying_alongside(self, copies: Sequence[tuple[str, Path, int]]) -> Iterator[None]:
        """Copy `copies` (path in the tree, source, mode) on a second thread while the body writes
        other files: a big file's reads, writes and hashing release the GIL, so its copy overlaps a
        body busy with many small files. Returns once every copy is done; the body's error wins."""
        def copy_all() -> None:
            for rel, src, mode in copies:
                self.copy_file(rel, src, mode)
        with ThreadPoolExecutor(1, thread_name_prefix="vero-copy") as pool:
            done = pool.submit(copy_all)
            try:
                yield
            finally:
                error = done.exception()  # waits: nothing may still write once the body's error unwinds
            if error is not None:
                raise error

    def link(self, rel: str, existing: str) -> None:
        """Make `rel` a hard link of the file `existing` written earlier (same bytes, same mode)."""
        entry = self.entries[existing]
        if entry.symlink is not None:
            self.symlink(rel, entry.symlink)
            return
        os.link(self._prefix + existing, self._target(rel))
        self.entries[rel] = entry

    def symlink(self, rel: str, target: str) -> None:
        """Create a relative symlink `rel` -> `target`."""
        path = self._target(rel)
        os.symlink(target, path)
        data = target.encode("utf-8")
        self.entries[rel] = Entry(0o777, len(data), hashlib.sha256(data).hexdigest(), symlink=target,
                                  git_blob=git_blob_id(data))

    def chmod(self, rel: str, mode: int) -> None:
        """Change the (normalised) mode of a regular file written earlier."""
        entry = self.entries[rel]
        if entry.symlink is not None:
            raise VeroError(f"{rel!r} is a symlink; it has no mode of its own", where=str(self.root),
                            fix="make it a regular file")
        os.chmod(self.root / rel, normalised_mode(mode))
        self.entries[rel] = dataclasses.replace(entry, mode=normalised_mode(mode))

    def copy_tree(self, rel: str, src: Path, *, where: str) -> int:
        """Copy the directory `src` to `rel` (see `walk_tree`); returns the number of files."""
        count = 0
        for sub, path, link in walk_tree(src, where=where):
            dest = f"{rel}/{sub}" if rel else sub
            if link is not None:
                self.symlink(dest, link)
            else:
                self.copy_file(dest, path)
            count += 1
        return count


def walk_tree(src: Path, *, where: str, strict: bool = True) -> list[tuple[str, Path, str | None]]:
    """Every file under `src` as (relative path, path, symlink target or None), sorted.

    Strict (for inputs): skips `.git` and `__pycache__` at any depth and refuses special files and
    symlinks leaving `src`. Not strict (for auditing an output): lists everything, special files
    included (as a path with no link target; callers must lstat before reading).
    """
    src = Path(src)
    skipped = SKIPPED_NAMES if strict else frozenset()
    found: list[tuple[str, Path, str | None]] = []
    for dirpath, dirnames, filenames in os.walk(src, onerror=_walk_error(where)):
        base = Path(dirpath)
        kept = []
        for name in sorted(dirnames):
            if name in skipped:
                continue
            if (base / name).is_symlink():
                filenames.append(name)
            else:
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            if name in skipped:
                continue
            path = base / name
            rel = path.relative_to(src).as_posix()
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = os.readlink(path)
                if strict:
                    check_relpath(rel, where)
                    check_symlink(rel, target, where)
                found.append((rel, path, target))
            elif stat.S_ISREG(info.st_mode) or not strict:
                if strict:
                    check_relpath(rel, where)
                found.append((rel, path, None))
            else:
                raise VeroError(f"{rel!r} is not a regular file, directory or symlink", where=where,
                                fix="remove special files (sockets, fifos, devices) from the input")
    found.sort(key=lambda item: item[0])
    return found


def _walk_error(where: str) -> Callable[[OSError], None]:
    def raise_it(exc: OSError) -> None:
        raise VeroError(f"cannot read {exc.filename}: {exc.strerror}", where=where,
                        fix="check that the input exists and is readable")
    return raise_it
