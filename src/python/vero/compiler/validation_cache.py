"""A cache of what checking build inputs found, keyed by the sha256 of the inputs' content.

One JSON file per key under a section of the cache dir: `<cache dir>/checked/` for datasets
(`dataset`), `<cache dir>/passed/` for the build checks that ran the baseline and the scorer
(`check_cache`). The key is computed from the bytes being baked, so an entry can only ever
describe those bytes: changed data has another key and is checked again. The cache only saves
time: an entry that is missing, unreadable or not a valid model is a miss, and an entry that
cannot be written is skipped.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from vero.fsutil import atomic_write_text

CHECKED_DIR = "checked"
PASSED_DIR = "passed"
_KEY = re.compile(r"[0-9a-f]{64}")
M = TypeVar("M", bound=BaseModel)


CACHE_DIR_VAR = "VERO_CACHE_DIR"


def default_cache_dir(env: Mapping[str, str]) -> Path | None:
    """`$VERO_CACHE_DIR` (relative: to the working directory, e.g. the cache Pants mounts in the
    compiler's sandbox), else `$XDG_CACHE_HOME/vero`, else `$HOME/.cache/vero`; None when none is set."""
    own = env.get(CACHE_DIR_VAR)
    if own:
        return Path(os.path.abspath(own))
    xdg = env.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "vero"
    home = env.get("HOME")
    return Path(home) / ".cache" / "vero" if home else None


class ValidationCache:
    """Entries under `root`/`section` (no caching at all when `root` is None)."""

    def __init__(self, root: Path | None, section: str = CHECKED_DIR) -> None:
        self.root = root
        self.section = section

    def _path(self, key: str) -> Path | None:
        if self.root is None or not _KEY.fullmatch(key):
            return None
        return self.root / self.section / f"{key}.json"

    def get(self, key: str, model: type[M]) -> M | None:
        """The entry stored under `key`, or None."""
        path = self._path(key)
        if path is None:
            return None
        try:
            return model.model_validate_json(path.read_bytes())
        except (OSError, ValidationError):
            return None

    def put(self, key: str, value: BaseModel) -> None:
        """Store `value` under `key` (atomically: a concurrent build reads the old entry or this one)."""
        path = self._path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write_text(path, value.model_dump_json(), mode=0o600)
        except (OSError, ValueError):
            pass  # a read-only or full cache dir (or a value JSON cannot hold) costs time, nothing else
