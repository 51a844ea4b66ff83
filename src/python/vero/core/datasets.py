"""Datasets: Mode A rows per split and Mode B partitions, with stable content-addressed ids.

A dataset id is the sha256 of a canonical encoding of the content (sorted keys, no
whitespace), so the same rows give the same id on any machine and any change gives a new one.

Hugging Face `save_to_disk` directories are not read: that needs the `datasets`/`pyarrow`
dependencies, which the sidecar image does not carry. They are detected and refused with a
message that says how to export them as JSON Lines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import JsonValue

from vero.core.benchmark import SPLIT_NAME_PATTERN, SPLIT_NAME_RULE
from vero.errors import VeroError

Row = dict[str, JsonValue]
DatasetKind = Literal["mode_a", "mode_b_partition"]

_SPLIT_NAME = re.compile(SPLIT_NAME_PATTERN)
_HF_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")


def _canonical_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def content_id(kind: DatasetKind, splits: Mapping[str, Any]) -> str:
    """The dataset id: sha256 of the canonical encoding of `kind` and the split contents."""
    return hashlib.sha256(_canonical_bytes({"kind": kind, "splits": dict(splits)})).hexdigest()


class SplitCatalog(Protocol):
    """What the engine needs to know about a dataset: its id, splits and sample ids."""

    @property
    def dataset_id(self) -> str:
        """The content-addressed id."""
        ...

    def split_names(self) -> list[str]:
        """Every split, sorted."""
        ...

    def sample_ids(self, split: str) -> list[str]:
        """The sample ids of `split` in split order (KeyError for an unknown split)."""
        ...


def sample_ids_from(id_values: Sequence[object]) -> list[str]:
    """Sample ids from the rows' `id` values (None where a row has none): the values as strings
    when every row has a unique str or int one, else the rows' indices."""
    ids: list[str] = []
    for value in id_values:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            return [str(i) for i in range(len(id_values))]
        ids.append(str(value))
    if len(set(ids)) != len(ids):
        return [str(i) for i in range(len(id_values))]
    return ids


@dataclass(frozen=True)
class ModeADataset:
    """Rows per split (in file order) and their sample ids (see docs/design.md)."""

    splits: Mapping[str, Sequence[Row]]
    _ids: Mapping[str, list[str]] = field(repr=False)
    _index: Mapping[str, Mapping[str, int]] = field(repr=False)

    @classmethod
    def from_rows(cls, splits: Mapping[str, Sequence[Row]],
                  sample_ids: Mapping[str, Sequence[str]] | None = None) -> ModeADataset:
        """Build a dataset (ids and index) from rows per split. `sample_ids` gives the ids of the
        rows when they are known already (the first rows of splits whose ids the whole split
        decides); by default they come from the rows (`sample_ids_from`)."""
        ordered = {name: list(splits[name]) for name in sorted(splits)}
        if sample_ids is None:
            ids = {name: sample_ids_from([row.get("id") for row in rows]) for name, rows in ordered.items()}
        else:
            ids = {name: list(sample_ids[name])[:len(rows)] for name, rows in ordered.items()}
        index = {name: {sid: i for i, sid in enumerate(split_ids)} for name, split_ids in ids.items()}
        return cls(splits=ordered, _ids=ids, _index=index)

    @cached_property
    def dataset_id(self) -> str:
        """The content id, computed on first use: hashing re-encodes every row, which the
        compiler's check of the dataset does not need (half its time on a 200 MB dataset)."""
        return content_id("mode_a", self.splits)

    def split_names(self) -> list[str]:
        """Every split, sorted."""
        return sorted(self.splits)

    def sample_ids(self, split: str) -> list[str]:
        """The sample ids of `split` in file order."""
        return list(self._ids[split])

    def row(self, split: str, sample_id: str) -> Row:
        """The full row (labels included) of one sample."""
        return self.splits[split][self._index[split][sample_id]]


@dataclass(frozen=True)
class Partition:
    """Mode B: the Harbor task names of each split; a task name is its sample id."""

    splits: Mapping[str, Sequence[str]]
    dataset_id: str

    def split_names(self) -> list[str]:
        """Every split, sorted."""
        return sorted(self.splits)

    def sample_ids(self, split: str) -> list[str]:
        """The task names of `split` in the order the partition lists them."""
        return list(self.splits[split])


def check_split_name(name: str, where: str) -> None:
    """Refuse a split name the sidecar would refuse."""
    if not _SPLIT_NAME.fullmatch(name):
        raise VeroError(f"invalid split name {name!r}", where=where, fix=f"use {SPLIT_NAME_RULE}")


def _reject_nan(token: str) -> Any:
    raise ValueError(f"{token} is not valid JSON")


def iter_split_rows(path: Path, where: str | None = None) -> Iterator[Row]:
    """The rows of one `<split>.jsonl` file in order, by the sidecar's rules: UTF-8, one JSON
    object per line, blank lines skipped, NaN/Infinity refused, at least one row. A broken file
    raises a VeroError naming the line and `where` (default: the file)."""
    where = str(path) if where is None else where
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VeroError(f"cannot read split file: {exc}", where=where,
                        fix="make it a readable UTF-8 JSON Lines file") from None
    found = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing one) carry no row
        try:
            value = json.loads(line, parse_constant=_reject_nan)
        except ValueError as exc:
            raise VeroError(f"line {lineno} is not valid JSON: {exc}", where=where,
                            fix="write one JSON object per line") from None
        if not isinstance(value, dict):
            raise VeroError(f"line {lineno} is a JSON {type(value).__name__}, not an object", where=where,
                            fix="write one JSON object per line")
        found = True
        yield value
    if not found:
        raise VeroError("split file has no rows", where=where, fix="add rows or remove the file")


def load_mode_a_dataset(directory: Path) -> ModeADataset:
    """Read a Mode A dataset directory: one `<split>.jsonl` per split."""
    directory = Path(directory)
    if not directory.is_dir():
        raise VeroError("dataset directory does not exist", where=str(directory),
                        fix="point `dataset` at a directory holding <split>.jsonl files")
    files = sorted(p for p in directory.iterdir() if p.suffix == ".jsonl" and p.is_file())
    if not files:
        if any((directory / marker).exists() for marker in _HF_MARKERS):
            raise VeroError("Hugging Face save_to_disk directories are not supported", where=str(directory),
                            fix="export each split as JSON Lines: ds[split].to_json(f'{split}.jsonl')")
        raise VeroError("no <split>.jsonl files in the dataset directory", where=str(directory),
                        fix="add one JSON Lines file per split, e.g. train.jsonl and test.jsonl")
    splits: dict[str, list[Row]] = {}
    for path in files:
        check_split_name(path.stem, str(path))
        splits[path.stem] = list(iter_split_rows(path))
    return ModeADataset.from_rows(splits)


_PARTITION_FIX = "list each split's task names: non-empty, no surrounding whitespace, each task in one split"


def partition_problems(mapping: Mapping[str, Sequence[str]]) -> list[str]:
    """Every way a Mode B partition `{split: [task names]}` breaks the rules (empty: none).

    The one rule for build.yaml, serve.json and the runner's files: at least one split; split
    names follow SPLIT_NAME_PATTERN; every split lists tasks; a task name is not empty and has no
    surrounding whitespace (Harbor compares names exactly, so ' a' would never match a task);
    each task belongs to exactly one split. Other characters are left to the task lookup.
    """
    if not mapping:
        return ["the partition has no splits"]
    problems: list[str] = []
    seen: dict[str, str] = {}
    for split in sorted(mapping):
        if not _SPLIT_NAME.fullmatch(split):
            problems.append(f"invalid split name {split!r}: use {SPLIT_NAME_RULE}")
        names = mapping[split]
        if not names:
            problems.append(f"split {split!r} lists no tasks")
        for name in names:
            if not name or name != name.strip():
                problems.append(f"split {split!r} has an invalid task name {name!r} (empty or with "
                                "surrounding whitespace)")
            elif name in seen:
                where = f"twice in split {split!r}" if seen[name] == split else (
                    f"in split {seen[name]!r} and {split!r}")
                problems.append(f"task {name!r} is listed {where}; each task belongs to exactly one split")
            else:
                seen[name] = split
    return problems


def make_partition(mapping: Mapping[str, Sequence[str]], where: str = "partition") -> Partition:
    """A validated Mode B partition (see `partition_problems`) with its content id."""
    problems = partition_problems(mapping)
    if problems:
        raise VeroError("invalid partition: " + "; ".join(problems), where=where, fix=_PARTITION_FIX)
    splits = {split: list(mapping[split]) for split in sorted(mapping)}
    return Partition(splits=splits, dataset_id=content_id("mode_b_partition", splits))


def strip_labels(row: Row, label_fields: Sequence[str]) -> Row:
    """The row as the candidate sees it: every label field removed."""
    hidden = set(label_fields)
    return {key: value for key, value in row.items() if key not in hidden}
