"""Checking a Mode A dataset before anything is written, and choosing the files to bake.

A dataset is a directory with one `<split>.jsonl` per split (one JSON object per line), or a
Hugging Face `save_to_disk` directory (`dataset_dict.json` + one directory per split).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vero.build.config import ModeABuild
from vero.errors import VeroError

HF_MARKER = "dataset_dict.json"


@dataclass(frozen=True)
class DatasetInfo:
    """What the compiler bakes: the kind, the files relative to the dataset dir, rows per split."""

    kind: Literal["jsonl", "hf"]
    files: list[str]
    rows: dict[str, int]


def sample_ids(row_ids: list[Any]) -> list[str]:
    """Mode A sample ids (docs/design.md) from each row's `id` value (None when absent): the ids as
    strings when every row has a unique one, else the 0-based line index as a string."""
    as_text = [str(i) for i in row_ids if i is not None and not isinstance(i, (dict, list))]
    if len(as_text) == len(row_ids) and len(set(as_text)) == len(row_ids):
        return as_text
    return [str(index) for index in range(len(row_ids))]


def _close(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if close:
        return f"did you mean {', '.join(map(repr, close))}?"
    return f"available: {', '.join(options) or 'none'}"


def inspect_dataset(root: Path, config: ModeABuild, where: str) -> DatasetInfo:
    """Check that every split the config names exists and parses; return what to bake."""
    if not root.is_dir():
        raise VeroError(f"dataset {root} is not a directory", where=where,
                        fix="point dataset at a directory of <split>.jsonl files")
    if (root / HF_MARKER).is_file():
        return _inspect_hf(root, config, where)
    available = sorted(p.stem for p in root.glob("*.jsonl") if p.is_file())
    wanted = config.referenced_splits()
    rows: dict[str, int] = {}
    seen_fields: set[str] = set()
    for split in wanted:
        path = root / f"{split}.jsonl"
        if not path.is_file():
            raise VeroError(f"dataset has no {split}.jsonl for split {split!r} ({_close(split, available)})",
                            where=where, fix=f"add {path} or fix the split name in build.yaml")
        row_ids = _scan_jsonl(path, seen_fields)
        if not row_ids:
            raise VeroError(f"{split}.jsonl has no rows", where=str(path), fix="add rows or drop the split")
        rows[split] = len(row_ids)
        for target in config.targets:
            if target.split == split and target.sample_ids:
                known = set(sample_ids(row_ids))
                unknown = [i for i in target.sample_ids if i not in known]
                if unknown:
                    raise VeroError(f"targets: sample_ids {', '.join(map(repr, unknown[:5]))} are not in "
                                    f"split {split!r} ({len(known)} samples)", where=where,
                                    fix="use the rows' id values (0-based line numbers when ids are absent)")
    missing = [f for f in config.label_fields if f not in seen_fields]
    if missing:
        raise VeroError(f"label_fields {', '.join(map(repr, missing))} appear in no row of "
                        f"{', '.join(s + '.jsonl' for s in wanted)} "
                        f"({_close(missing[0], sorted(seen_fields))})",
                        where=where, fix="fix the field names in label_fields")
    return DatasetInfo(kind="jsonl", files=[f"{s}.jsonl" for s in sorted(wanted)], rows=rows)


def _scan_jsonl(path: Path, fields: set[str]) -> list[Any]:
    """Parse every line; add the rows' keys to `fields`; return each row's `id` (None if absent)."""
    row_ids: list[Any] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                raise VeroError(f"line {number} is blank", where=str(path),
                                fix="remove blank lines: sample ids are line numbers when rows have no id")
            try:
                row = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise VeroError(f"line {number} is not valid JSON: {exc}", where=str(path),
                                fix="write one JSON object per line") from None
            if not isinstance(row, dict):
                raise VeroError(f"line {number} is a JSON {type(row).__name__}, not an object",
                                where=str(path), fix="write one JSON object per line")
            fields.update(row)
            row_ids.append(row.get("id"))
    return row_ids


def _inspect_hf(root: Path, config: ModeABuild, where: str) -> DatasetInfo:
    marker = root / HF_MARKER
    try:
        splits = json.loads(marker.read_text(encoding="utf-8"))["splits"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise VeroError(f"unreadable {HF_MARKER}: {exc}", where=str(marker),
                        fix="write the dataset with datasets.DatasetDict.save_to_disk") from None
    if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
        raise VeroError(f"{HF_MARKER} has no list of split names", where=str(marker),
                        fix="write the dataset with datasets.DatasetDict.save_to_disk")
    for split in config.referenced_splits():
        if split not in splits or not (root / split).is_dir():
            raise VeroError(f"dataset has no split {split!r} ({_close(split, sorted(splits))})", where=where,
                            fix="fix the split name in build.yaml or add the split to the dataset")
    # Sample ids and label fields of Arrow files are checked by the sidecar when it loads them.
    return DatasetInfo(kind="hf", files=[], rows={})
