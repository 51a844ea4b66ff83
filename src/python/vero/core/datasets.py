"""Datasets: Mode A rows per split and Mode B partitions, with stable content-addressed ids.

A dataset id is the sha256 of a canonical encoding of the content (sorted keys, no
whitespace), so the same rows give the same id on any machine and any change gives a new one.
Registered datasets live under `$VERO_HOME/datasets/<id>/` (default `~/.vero`).

Hugging Face `save_to_disk` directories are not read: that needs the `datasets`/`pyarrow`
dependencies, which the sidecar image does not carry. They are detected and refused with a
message that says how to export them as JSON Lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import JsonValue, ValidationError

from vero.core.benchmark import SPLIT_NAME_PATTERN
from vero.errors import VeroError
from vero.fsutil import atomic_write_model, atomic_write_text, fsync_dir
from vero.models import StrictModel

Row = dict[str, JsonValue]
DatasetKind = Literal["mode_a", "mode_b_partition"]

_SPLIT_NAME = re.compile(SPLIT_NAME_PATTERN)
_HF_MARKERS = ("dataset_dict.json", "state.json", "dataset_info.json")
MANIFEST = "DATASET.json"
PARTITION_FILE = "partition.json"


def vero_home() -> Path:
    """The vero home directory: `$VERO_HOME`, else `~/.vero`."""
    configured = os.environ.get("VERO_HOME")
    return Path(configured) if configured else Path.home() / ".vero"


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
        raise VeroError(f"invalid split name {name!r}", where=where,
                        fix="use letters, digits, '_', '.', '-' (at most 64, starting with a letter "
                            "or digit)")


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


def make_partition(mapping: Mapping[str, Sequence[str]], where: str = "partition") -> Partition:
    """Validate a Mode B partition `{split: [task names]}`: names unique across splits."""
    if not mapping:
        raise VeroError("the partition has no splits", where=where, fix="list the task names of each split")
    seen: dict[str, str] = {}
    splits: dict[str, list[str]] = {}
    for split in sorted(mapping):
        check_split_name(split, where)
        names = list(mapping[split])
        if not names:
            raise VeroError(f"split {split!r} lists no tasks", where=where,
                            fix="add task names or drop the split")
        for name in names:
            if not isinstance(name, str) or not name.strip() or name != name.strip():
                raise VeroError(f"split {split!r} has an invalid task name {name!r}", where=where,
                                fix="use non-empty names without surrounding whitespace")
            if name in seen:
                raise VeroError(f"task {name!r} is listed in split {seen[name]!r} and {split!r}", where=where,
                                fix="each task belongs to exactly one split")
            seen[name] = split
        splits[split] = names
    return Partition(splits=splits, dataset_id=content_id("mode_b_partition", splits))


class DatasetManifest(StrictModel):
    """DATASET.json of a registered dataset."""

    dataset_id: str
    kind: DatasetKind
    splits: dict[str, int]


class DatasetStore:
    """Content-addressed registry: `<home>/datasets/<dataset id>/`."""

    def __init__(self, home: Path | None = None) -> None:
        self.root = (Path(home) if home is not None else vero_home()) / "datasets"

    def path_for(self, dataset_id: str) -> Path:
        """Directory of a registered dataset."""
        if not re.fullmatch(r"[0-9a-f]{64}", dataset_id):
            raise VeroError(f"invalid dataset id {dataset_id!r}",
                            fix="dataset ids are 64 lowercase hex digits")
        return self.root / dataset_id

    def register(self, dataset: ModeADataset | Partition) -> Path:
        """Store `dataset` under its id (idempotent) and return its directory."""
        target = self.path_for(dataset.dataset_id)
        if (target / MANIFEST).is_file():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dataset.dataset_id[:12]}.", dir=self.root))
        try:
            if isinstance(dataset, ModeADataset):
                kind: DatasetKind = "mode_a"
                counts = {name: len(rows) for name, rows in dataset.splits.items()}
                for name, rows in dataset.splits.items():
                    lines = "".join(_canonical_bytes(row).decode("utf-8") + "\n" for row in rows)
                    atomic_write_text(staging / f"{name}.jsonl", lines)
            else:
                kind = "mode_b_partition"
                counts = {name: len(names) for name, names in dataset.splits.items()}
                atomic_write_text(staging / PARTITION_FILE,
                                  json.dumps({k: list(v) for k, v in dataset.splits.items()}, sort_keys=True))
            atomic_write_model(staging / MANIFEST, DatasetManifest(dataset_id=dataset.dataset_id, kind=kind,
                                                                    splits=counts))
            staging.chmod(0o755)
            try:
                staging.rename(target)
            except OSError:
                if not (target / MANIFEST).is_file():
                    raise
                # Another process registered the same content first: identical by construction.
                shutil.rmtree(staging)
            fsync_dir(self.root)
        except BaseException:
            if staging.exists():
                shutil.rmtree(staging)
            raise
        return target

    def load(self, dataset_id: str) -> ModeADataset | Partition:
        """Load a registered dataset and check that its content still has its id."""
        directory = self.path_for(dataset_id)
        try:
            manifest = DatasetManifest.model_validate_json((directory / MANIFEST).read_bytes())
        except FileNotFoundError:
            raise VeroError(f"dataset {dataset_id} is not registered", where=str(self.root),
                            fix="register it first") from None
        except (OSError, ValidationError) as exc:
            raise VeroError(f"corrupt dataset manifest: {exc}", where=str(directory / MANIFEST),
                            fix="delete the directory and register the dataset again") from None
        loaded: ModeADataset | Partition
        if manifest.kind == "mode_a":
            loaded = load_mode_a_dataset(directory)
        else:
            try:
                raw = json.loads((directory / PARTITION_FILE).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise VeroError(f"corrupt partition: {exc}", where=str(directory / PARTITION_FILE),
                                fix="delete the directory and register the dataset again") from None
            if not isinstance(raw, dict):
                raise VeroError("partition is not a JSON object", where=str(directory / PARTITION_FILE),
                                fix="delete the directory and register the dataset again")
            loaded = make_partition(raw, str(directory / PARTITION_FILE))
        if loaded.dataset_id != dataset_id:
            raise VeroError(f"content hashes to {loaded.dataset_id}, not {dataset_id}", where=str(directory),
                            fix="the store was modified: delete the directory and register the dataset again")
        return loaded


def strip_labels(row: Row, label_fields: Sequence[str]) -> Row:
    """The row as the candidate sees it: every label field removed."""
    hidden = set(label_fields)
    return {key: value for key, value in row.items() if key not in hidden}
