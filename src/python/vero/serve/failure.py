"""Why the sidecar could not start (or stopped): a file where Harbor collects it.

A sidecar that dies before it is healthy leaves the trial without a verifier run, and Harbor
deletes its container with the trial: the reason would live only in a container log nobody
keeps. The compiled task declares `paths.log_dir` of the `eval-sidecar` service as a Harbor
artifact, collected on every path, failures included, into the trial's `artifacts/` dir.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from vero.fsutil import atomic_write_text

FAILURE_FILE = "serve-error.txt"


def clear_failure(log_dir: Path) -> None:
    """Create the (root-only) log dir and drop the report of an earlier failed start."""
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(log_dir, 0o700)
    (log_dir / FAILURE_FILE).unlink(missing_ok=True)


def record_failure(log_dir: Path, report: str) -> None:
    """Write `report` (what failed, where, how to fix it) atomically; never raises: it runs while
    the sidecar is already failing, and the container log keeps the report too."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = f"vero harbor serve stopped at {stamp}:\n{report.rstrip()}\n"
    with contextlib.suppress(OSError):
        atomic_write_text(Path(log_dir) / FAILURE_FILE, text, mode=0o600)
