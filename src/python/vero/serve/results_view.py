"""The optimizer's view of results on the shared results volume.

After each optimizer evaluation the split's directory `<results_dir>/<split>/` is replaced
by the new evaluation's view: `summary.json` always, `samples/<sample>.json` only for a
viewable split. The new directory is built beside the old one and swapped in by renames, so
the destination is cleared first and a reader never sees a mix of two evaluations. A view
that is a summary alone, replacing another such view, only needs its one file replaced
atomically: two `fsync` calls and one rename on every non_viewable evaluation, where the swap
takes three and two and makes and removes two directories. Admin evaluations and no_access
splits write nothing. A process killed between the two renames of a swap leaves the old view
aside; `recover_views` puts it back at the next start.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

from vero.core.sample_store import SampleStore
from vero.core.tiers import Disclosure
from vero.fsutil import atomic_write_bytes, fsync_dir, model_json, remove_unfinished_writes, write_new_durably

SUMMARY = "summary.json"
SAMPLES = "samples"
_STAGING, _ASIDE = "new", "old"
# mkdtemp's random part has no dots; a split name may.
_LEFTOVER = re.compile(rf"\.(?P<split>.+)\.(?P<kind>{_STAGING}|{_ASIDE})\.[a-z0-9_]+")

_lock = threading.Lock()


def write_agent_view(results_dir: Path, disclosure: Disclosure) -> Path:
    """Replace `<results_dir>/<split>/` with `disclosure`; return that directory."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    split = disclosure.summary.split
    target = results_dir / split
    summary = model_json(disclosure.summary).encode()
    if disclosure.samples is None and _summary_only(target):
        atomic_write_bytes(target / SUMMARY, summary)
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{split}.{_STAGING}.", dir=results_dir))
    try:
        staging.chmod(0o755)
        # Nobody sees the staging directory before the swap: its files need no rename each, only
        # their data and the directory entries made durable before the swap publishes them.
        write_new_durably(staging / SUMMARY, summary)
        if disclosure.samples is not None:
            store_dir = staging / SAMPLES
            store_dir.mkdir(mode=0o755)
            store = SampleStore(store_dir)
            for sample in disclosure.samples:
                write_new_durably(store.path_for(sample.sample_id), model_json(sample).encode())
            fsync_dir(store_dir)
        fsync_dir(staging)
        with _lock:
            old: Path | None = None
            if target.exists() or target.is_symlink():
                old = Path(tempfile.mkdtemp(prefix=f".{split}.{_ASIDE}.", dir=results_dir))
                os.replace(target, old / "view")
            os.replace(staging, target)
            fsync_dir(results_dir)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging)
        raise
    return target


def _summary_only(view: Path) -> bool:
    """Whether `view` is a directory (not a link to one) holding a summary and nothing else."""
    if view.is_symlink() or not view.is_dir():
        return False
    with os.scandir(view) as entries:
        return [entry.name for entry in entries if not entry.name.startswith(".")] == [SUMMARY]


def recover_views(results_dir: Path) -> list[str]:
    """Clean up after a killed `write_agent_view` (call at start); return the splits whose view
    was put back. Only the `.<split>.new.*` / `.<split>.old.*` directories it makes, and the temp
    files of a summary's replacement, are touched."""
    results_dir = Path(results_dir)
    restored = []
    for view in results_dir.iterdir():
        if not view.name.startswith(".") and view.is_dir() and not view.is_symlink():
            remove_unfinished_writes(view)
    # Sorted, so a split's staging copy (".new.") goes before its old view (".old.") comes back.
    for path in sorted(results_dir.iterdir()):
        leftover = _LEFTOVER.fullmatch(path.name)
        if leftover is None or path.is_symlink() or not path.is_dir():
            continue
        kind, target = leftover["kind"], results_dir / leftover["split"]
        if kind == _ASIDE and (path / "view").is_dir() and not (target.exists() or target.is_symlink()):
            os.replace(path / "view", target)
            restored.append(target.name)
        shutil.rmtree(path)
    fsync_dir(results_dir)
    return restored
