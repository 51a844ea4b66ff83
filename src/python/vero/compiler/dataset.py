"""The Mode A dataset of a build: which split files to bake, baking them, and checking them.

A dataset is a directory with one `<split>.jsonl` per split. Only the splits the config names
are baked. Each file is read once: copied into the task and hashed on the way (`split_copies`:
the compiler copies them while it exports the agent repo). The copies are
then checked with the sidecar's own rules (`vero.core.datasets`: same row parser, same ids), so
a task that builds is a task whose sidecar can load its data, and what was checked is exactly
what was baked. What the check found does not depend on build.yaml, so it is cached by the
content's sha256 (`validation_cache`): an unchanged dataset is not parsed again, and a changed
one can never match an old entry. The checks against build.yaml (target sample ids,
label_fields) run on every build, on the cached or fresh facts.
"""

from __future__ import annotations

import difflib
import hashlib
from pathlib import Path

from pydantic import Field, JsonValue

from vero import __version__
from vero.compiler.config import ModeABuild
from vero.compiler.tree import TreeWriter
from vero.compiler.validation_cache import ValidationCache
from vero.core.datasets import ModeADataset, check_split_name, iter_split_rows, load_mode_a_dataset, sample_ids_from
from vero.errors import VeroError
from vero.fsutil import canonical_json
from vero.models import StrictModel

# The build's checks run the first rows of a split: the scorer probe one, the dry run three.
HEAD_ROWS = 3
# Bump when the rules of `validate_split_files` change: older cache entries then no longer match.
VALIDATION_FORMAT = 1


class SplitFacts(StrictModel):
    """What checking one split file found."""

    rows: int = Field(ge=1)
    ids: list[str] | None = Field(description="the sample ids in file order; None: the 0-based line indices")
    fields: list[str] = Field(description="every key of every row, sorted")
    head: list[dict[str, JsonValue]] = Field(description=f"the first {HEAD_ROWS} rows")

    def sample_ids(self) -> list[str]:
        """The sample ids in file order (see docs/design.md, "Sample ids")."""
        return self.ids if self.ids is not None else [str(i) for i in range(self.rows)]


class CheckedDataset(StrictModel):
    """What checking the baked split files found, keyed by their content."""

    content_key: str = Field(pattern=r"^[0-9a-f]{64}$")
    splits: dict[str, SplitFacts]

    def head_dataset(self) -> ModeADataset:
        """The first rows of every split with their sample ids: what the build's checks run."""
        return ModeADataset.from_rows({name: facts.head for name, facts in self.splits.items()},
                                      {name: facts.sample_ids()[:HEAD_ROWS] for name, facts in self.splits.items()})


def _close(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.5)
    if close:
        return f"did you mean {', '.join(map(repr, close))}?"
    return f"available: {', '.join(options) or 'none'}"


def dataset_files(root: Path, config: ModeABuild, where: str) -> list[str]:
    """The split files to bake (one per split the config names), checked to exist; nothing is read."""
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
    return [f"{split}.jsonl" for split in wanted]


def content_key(digests: dict[str, str]) -> str:
    """The cache key of split files with these sha256 digests (by file name), for these rules."""
    return hashlib.sha256(canonical_json({"files": digests, "format": VALIDATION_FORMAT,
                                          "vero": __version__}).encode("utf-8")).hexdigest()


def validate_split_files(directory: Path, files: list[str], key: str, shown: Path) -> CheckedDataset:
    """Check the split files under `directory` by the sidecar's rules, one row at a time (errors
    name the file under `shown`, the user's dataset directory)."""
    splits: dict[str, SplitFacts] = {}
    for name in files:
        split = name.removesuffix(".jsonl")
        check_split_name(split, str(shown / name))
        rows = 0
        id_values: list[object] = []
        fields: set[str] = set()
        head: list[dict[str, JsonValue]] = []
        for row in iter_split_rows(directory / name, where=str(shown / name)):
            rows += 1
            id_values.append(row.get("id"))
            fields.update(row)
            if len(head) < HEAD_ROWS:
                head.append(row)
        ids = sample_ids_from(id_values)
        indices = ids == [str(i) for i in range(rows)]  # the same sample ids, stored as nothing
        splits[split] = SplitFacts(rows=rows, ids=None if indices else ids, fields=sorted(fields), head=head)
    return CheckedDataset(content_key=key, splits=splits)


def check_against_config(dataset: CheckedDataset, config: ModeABuild, where: str) -> None:
    """The config's references into the data: target sample ids and label_fields."""
    for target in config.targets:
        known = set(dataset.splits[target.split].sample_ids())
        unknown = [i for i in target.sample_ids or [] if i not in known]
        if unknown:
            raise VeroError(f"targets: sample_ids {', '.join(map(repr, unknown[:5]))} are not in split "
                            f"{target.split!r} ({len(known)} samples)", where=where,
                            fix="use the rows' id values (0-based line numbers when rows have no unique ids)")
    fields = sorted({key for facts in dataset.splits.values() for key in facts.fields})
    missing = [f for f in config.label_fields if f not in fields]
    if missing:
        raise VeroError(f"label_fields {', '.join(map(repr, missing))} appear in no row of "
                        f"{', '.join(s + '.jsonl' for s in sorted(dataset.splits))} ({_close(missing[0], fields)})",
                        where=where, fix="fix the field names in label_fields")


def split_copies(root: Path, files: list[str], dest: str) -> list[tuple[str, Path, int]]:
    """The split files' copies into the task: (path in the task under `dest`, source, mode)."""
    return [(f"{dest}/{name}", root / name, 0o644) for name in files]


def check_baked_dataset(writer: TreeWriter, root: Path, files: list[str], dest: str, config: ModeABuild,
                        cache: ValidationCache, where: str) -> CheckedDataset:
    """Check the split files `split_copies` copied to `dest` (hashed as they were copied) unless
    the cache knows their content, then check the config against them."""
    key = content_key({name: writer.entries[f"{dest}/{name}"].sha256 for name in files})
    checked = cache.get(key, CheckedDataset)
    if checked is None or checked.content_key != key:
        checked = validate_split_files(writer.root / dest, files, key, shown=root)
        cache.put(key, checked)
    check_against_config(checked, config, where)
    return checked
