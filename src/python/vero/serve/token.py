"""The admin token: created at every sidecar start, readable only by its owner (root).

The file is born with mode 0600 (`O_CREAT | O_EXCL`, so there is no window in which another
user could open it) under a temporary name, then renamed over any token of a previous start:
a reader sees the old token or the new one, never a partial or world-readable file.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from vero.errors import VeroError
from vero.fsutil import fsync_dir

TOKEN_BYTES = 32


def write_admin_token(path: Path) -> str:
    """Create a fresh token at `path` (mode 0600, atomic replace) and return it."""
    path = Path(path)
    if path.is_dir():
        raise VeroError("the admin token path is a directory", where=str(path),
                        fix="point paths.token_file at a file inside the token volume")
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(TOKEN_BYTES)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the creation mode already is 0600 minus umask; never wider
        os.write(fd, (token + "\n").encode("ascii"))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return token


def read_token(path: Path) -> str:
    """The token stored at `path` (the verifier's side)."""
    try:
        token = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise VeroError(f"cannot read the admin token: {exc}", where=str(path),
                        fix="run as root (the verifier) with the token volume mounted") from None
    if not token:
        raise VeroError("the admin token file is empty", where=str(path), fix="restart the eval sidecar")
    return token


def token_matches(presented: str | None, expected: str) -> bool:
    """Constant-time check of an `Authorization: Bearer <token>` header value."""
    if not presented or not presented.startswith("Bearer "):
        return False
    return hmac.compare_digest(presented[len("Bearer "):].strip().encode(), expected.encode())
