"""Checkouts of imported commits that the evaluations of one commit share.

A checkout (`TrustedRepo.check_out`) is written from the stored blobs and owned by the sidecar's
user, directories 0755 and files 0644: when candidate code runs as another user, nothing it does
can change it. Then a second evaluation of a commit (another split, more samples) uses the
checkout the first one made instead of writing the tree again. The checkouts of the last `keep`
commits stay; one in use is never removed. `clear` removes them when the sidecar stops; a killed
sidecar leaves `wt-*` directories in its work dir, which the next start removes.
"""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vero.core.gitops import TrustedRepo

KEEP = 4


@dataclass
class _Checkout:
    path: Path
    users: int


class SharedCheckouts:
    """Read-only checkouts under `parent`, one per commit, shared while candidates cannot write them."""

    def __init__(self, repo: TrustedRepo, parent: Path, keep: int = KEEP) -> None:
        self.repo = repo
        self.parent = Path(parent)
        self.keep = keep
        self._lock = threading.Lock()
        self._checkouts: OrderedDict[str, _Checkout] = OrderedDict()   # least recently used first

    @contextmanager
    def checkout(self, commit: str) -> Iterator[Path]:
        """The checkout of `commit`, made now unless a kept one exists."""
        checkout = self._take(commit)
        if checkout is None:
            made = self.repo.check_out(commit, self.parent)
            with self._lock:
                checkout = self._checkouts.get(commit)
                if checkout is None:
                    checkout = self._checkouts[commit] = _Checkout(path=made, users=0)
                checkout.users += 1
            if checkout.path != made:   # another evaluation of the commit made one meanwhile
                shutil.rmtree(made, ignore_errors=True)
        try:
            yield checkout.path
        finally:
            self._release(commit)

    def _take(self, commit: str) -> _Checkout | None:
        with self._lock:
            checkout = self._checkouts.get(commit)
            if checkout is not None:
                checkout.users += 1
                self._checkouts.move_to_end(commit)
            return checkout

    def _release(self, commit: str) -> None:
        with self._lock:
            self._checkouts[commit].users -= 1
            idle = [c for c, checkout in self._checkouts.items() if checkout.users == 0]
            evicted = [self._checkouts.pop(c).path for c in idle[:max(0, len(self._checkouts) - self.keep)]]
        for path in evicted:
            shutil.rmtree(path, ignore_errors=True)

    def clear(self) -> None:
        """Remove every checkout not in use (the sidecar is stopping)."""
        with self._lock:
            idle = [commit for commit, checkout in self._checkouts.items() if checkout.users == 0]
            paths = [self._checkouts.pop(commit).path for commit in idle]
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)
