"""The archive container: one deterministic `tar.gz` with a manifest first, read back strictly.

Deterministic: members in a fixed order (the manifest, then sorted names), every header with
mtime 0, owner 0:0 without names, mode 0644, and a gzip header without a file name and with
mtime 0. So the same members always give the same bytes.

Reading checks everything before anything is used: the gzip and tar framing (a corrupt or
truncated file names the member it broke in), only regular files with plain relative names, no
duplicates, the manifest's list against the members found, and each member's sha256. Each
problem is one `VeroError` that names the archive and the member.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from vero.errors import VeroError
from vero.fsutil import canonical_json
from vero.models import parse_model
from vero.session.model import MANIFEST, Manifest, MemberDigest, Producer

# A member larger than this is refused when reading: no session needs one, and a hostile file
# must not make `vero report` allocate without bound.
MAX_MEMBER_BYTES = 2 << 30
_FIX_CORRUPT = "take the archive again from the trial directory (or the sidecar); a partial copy cannot be read"


def json_member(value: Any) -> bytes:
    """A JSON member: sorted keys, compact (the C encoder: an indented dump of ten thousand
    sample results takes seconds), UTF-8, one trailing newline."""
    return (json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def digest(data: bytes) -> MemberDigest:
    """sha256 and size of one member."""
    return MemberDigest(sha256=hashlib.sha256(data).hexdigest(), size=len(data))


def pack(members: Mapping[str, bytes], producer: Producer) -> bytes:
    """The archive bytes: `session.json` (listing every member) first, then the members by name."""
    for name in members:
        _check_name(name, "(new archive)")
    manifest = Manifest(producer=producer, members={name: digest(members[name]) for name in sorted(members)})
    ordered = [(MANIFEST, canonical_json(manifest.model_dump(mode="json")).encode())]
    ordered += [(name, members[name]) for name in sorted(members)]
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ordered:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def _check_name(name: str, where: str) -> None:
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise VeroError(f"member {name!r} has an unsafe name", where=where,
                        fix="this file was not written by vero; use the archive vero wrote")


def _corrupt(where: str, current: str | None, last_done: str | None, why: str) -> VeroError:
    if current is not None:
        at = f"in member {current}"
    elif last_done is not None:
        at = f"after member {last_done}"
    else:
        at = "before its first member"
    return VeroError(f"the archive is corrupt or truncated {at}: {why}", where=where, fix=_FIX_CORRUPT)


def _foreign(where: str, what: str) -> VeroError:
    return VeroError(what, where=where, fix="this file was not written by vero; use the archive vero wrote")


def _read_members(raw: bytes, where: str) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    current: str | None = None
    last_done: str | None = None
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r|gz") as tar:
            for info in tar:
                current = info.name
                if not info.isreg():
                    raise _foreign(where, f"member {info.name!r} is not a regular file")
                _check_name(info.name, where)
                if info.name in members:
                    raise _foreign(where, f"member {info.name} appears twice")
                if info.size > MAX_MEMBER_BYTES:
                    raise _foreign(where, f"member {info.name} is {info.size} bytes, more than vero reads")
                handle = tar.extractfile(info)
                assert handle is not None  # a regular file
                data = handle.read()
                if len(data) != info.size:
                    raise _corrupt(where, current, last_done, f"{len(data)} of {info.size} bytes")
                members[info.name] = data
                last_done, current = info.name, None
        # The tar stream ends before the gzip trailer: its CRC and length catch a cut or damaged end.
        gzip.decompress(raw)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, OSError) as exc:
        raise _corrupt(where, current, last_done, str(exc) or type(exc).__name__) from None
    return members


def unpack(path: Path) -> tuple[Manifest, dict[str, bytes]]:
    """The manifest and every other member of the archive at `path`, each checked against it."""
    where = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise VeroError(f"cannot read the session archive: {exc.strerror or exc}", where=where,
                        fix="pass a session.tar.gz, a trial dir or a jobs dir") from None
    if not raw.startswith(b"\x1f\x8b"):
        raise VeroError("not a session archive (no gzip header)", where=where,
                        fix="pass a session.tar.gz written by vero, a trial dir or a jobs dir")
    members = _read_members(raw, where)
    manifest_bytes = members.pop(MANIFEST, None)
    if manifest_bytes is None:
        raise VeroError(f"member {MANIFEST} is missing", where=where,
                        fix="this is not a vero session archive, or it was cut short")
    manifest = parse_model(manifest_bytes, Manifest, what=f"member {MANIFEST}", where=where,
                           fix="read it with a vero of the version that wrote it")
    for name in sorted(manifest.members):
        if name not in members:
            raise VeroError(f"member {name} is missing (session.json lists it)", where=where, fix=_FIX_CORRUPT)
    for name in sorted(members):
        expected = manifest.members.get(name)
        if expected is None:
            raise VeroError(f"member {name} is not listed in session.json", where=where,
                            fix="the archive was changed after vero wrote it")
        if digest(members[name]) != expected:
            raise VeroError(f"member {name} does not match its sha256 in session.json", where=where,
                            fix="the archive was changed or damaged after vero wrote it")
    return manifest, members
