"""Checking a Mode A dataset before anything is written, and choosing the files to bake.

A dataset is a directory with one `<split>.jsonl` per split. Only the splits the config names
are baked, and they are checked with the sidecar's own loader (`vero.core.datasets`), so a
task that builds is a task whose sidecar can load its data (same ids, same rules).
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vero.compiler.config import ModeABuild
from vero.core.datasets import ModeADataset, load_mode_a_dataset
from vero.errors import VeroError


@dataclass(frozen=True)
class DatasetInfo:
    """What the compiler bakes: the split files (relative to the dataset dir) and rows per split,
    and those splits as the sidecar will load them (for the build-time checks)."""

    files: list[str]
    rows: dict[str, int]
    dataset: ModeADataset


def _close(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if close:
        return f"did you mean {', '.join(map(repr, close))}?"
    return f"available: {', '.join(options) or 'none'}"


def inspect_dataset(root: Path, config: ModeABuild, where: str) -> DatasetInfo:
    """Check that every split the config names exists and loads; return what to bake."""
    if not root.is_dir():
        raise VeroError(f"dataset {root} is not a directory", where=where,
                        fix="point dataset at a directory of <split>.jsonl files")
    available = sorted(p.stem for p in root.glob("*.jsonl") if p.is_file())
    wanted = sorted(config.referenced_splits())
    for split in wanted:
        if split not in available:
            if not available:
                load_mode_a_dataset(root)  # explains the directory (e.g. a Hugging Face dataset)
            raise VeroError(f"dataset has no {split}.jsonl for split {split!r} ({_close(split, available)})",
                            where=where,
                            fix=f"add {root / (split + '.jsonl')} or fix the split name in build.yaml")
    # The sidecar loads every *.jsonl of its dataset dir: load exactly the files that will be baked.
    with tempfile.TemporaryDirectory(prefix="vero-dataset-") as view:
        for split in wanted:
            os.symlink(root / f"{split}.jsonl", Path(view) / f"{split}.jsonl")
        try:
            dataset = load_mode_a_dataset(Path(view))
        except VeroError as exc:
            if exc.where and exc.where.startswith(view):
                exc.where = str(root) + exc.where[len(view):]  # name the user's file, not the view
            raise
    for target in config.targets:
        known = set(dataset.sample_ids(target.split))
        unknown = [i for i in target.sample_ids or [] if i not in known]
        if unknown:
            raise VeroError(f"targets: sample_ids {', '.join(map(repr, unknown[:5]))} are not in split "
                            f"{target.split!r} ({len(known)} samples)", where=where,
                            fix="use the rows' id values (0-based line numbers when rows have no unique ids)")
    fields = sorted({key for rows in dataset.splits.values() for row in rows for key in row})
    missing = [f for f in config.label_fields if f not in fields]
    if missing:
        raise VeroError(f"label_fields {', '.join(map(repr, missing))} appear in no row of "
                        f"{', '.join(s + '.jsonl' for s in wanted)} ({_close(missing[0], fields)})",
                        where=where, fix="fix the field names in label_fields")
    return DatasetInfo(files=[f"{s}.jsonl" for s in wanted],
                       rows={s: len(dataset.splits[s]) for s in wanted}, dataset=dataset)
