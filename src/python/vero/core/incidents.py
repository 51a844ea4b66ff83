"""Failures whose details the optimizer must not see: a fixed message and an error id for it,
the details (what git, harbor or a scorer said) in an append-only log on the admin volume.

Anything a trusted tool prints may quote files the optimizer cannot read (a symlinked token,
label rows named in an alternates file), so it never goes back over HTTP verbatim. The admin
reads `incidents.jsonl` (and the sidecar log) to find an error id.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import TypeVar

from vero.errors import VeroError
from vero.models import StrictModel

log = logging.getLogger(__name__)

INCIDENTS = "incidents.jsonl"
MAX_DETAIL = 16_000
E = TypeVar("E", bound=VeroError)


def new_error_id() -> str:
    """A short random id that finds one failure in the admin log."""
    return "E-" + secrets.token_hex(5)


def withheld(error: type[E], what: str, detail: str, *, fix: str | None = None) -> E:
    """`error(what)` for the optimizer, with an error id; `detail` stays for the admin log."""
    error_id = new_error_id()
    return error(f"{what} (error id {error_id})", fix=fix, detail=detail, error_id=error_id)


class Incident(StrictModel):
    """One line of the incident log."""

    error_id: str
    at: float
    what: str
    detail: str


class IncidentLog:
    """Appends incidents to `<admin dir>/incidents.jsonl` (0600) and to the sidecar log."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(self, error_id: str, what: str, detail: str) -> None:
        """Keep one incident; a log that cannot be written costs the line, never the request."""
        log.warning("%s: %s\n%s", error_id, what, detail[-MAX_DETAIL:])
        if self.path is None:
            return
        line = Incident(error_id=error_id, at=time.time(), what=what,
                        detail=detail[-MAX_DETAIL:]).model_dump_json() + "\n"
        try:
            with self._lock:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, line.encode("utf-8"))
                finally:
                    os.close(fd)
        except OSError as exc:
            log.error("cannot write the incident log %s: %s", self.path, exc)
