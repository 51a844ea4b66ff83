"""Telling a full disk apart from other failures, so that it gets one clear error of its own."""

from __future__ import annotations

import errno
import os
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Below this much free space a failed write is blamed on the disk.
LOW_SPACE_BYTES = 256 * 1024
_NO_SPACE = os.strerror(errno.ENOSPC)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, is a full disk."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def tool_failed_for_space(output: str, path: Path) -> OSError | None:
    """An `ENOSPC` error when a tool that wrote under `path` failed for lack of space, else None.

    Tools do not always say so (git reports a lock file it "couldn't write" without the
    reason), so a filesystem with almost no free space left counts too.
    """
    if _NO_SPACE not in output:
        try:
            stats = os.statvfs(path)
        except OSError:
            return None
        if stats.f_bfree * stats.f_frsize >= LOW_SPACE_BYTES:
            return None
    return OSError(errno.ENOSPC, _NO_SPACE, str(path))
