"""Loading a Mode B benchmark for the runner: from build.yaml, a harbor.yaml, or plain flags.

build.yaml is read by the compiler's own strict loader (`vero.compiler.loader`), so a file the
compiler refuses is refused here with the same message; the runner then uses its Mode B part
(`harbor`, `partition`, `inner_task`). Relative paths are resolved against the directory of the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vero.compiler.config import ModeBBuild
from vero.compiler.loader import load_build_config
from vero.core.datasets import make_partition
from vero.errors import VeroError
from vero.modeb.config import CollationSettings, HarborConfig
from vero.models import describe

_FIX_HARBOR_YAML = ("a harbor.yaml holds `harbor:` (HarborConfig fields) and "
                    "`partition:` ({split: [task names]})")


def read_yaml(path: Path, what: str) -> Any:
    """Parse a YAML (or JSON) file; a missing or malformed file is one VeroError naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise VeroError(f"cannot read {what}: {exc.strerror or exc}", where=str(path),
                        fix=f"pass an existing {what} file") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise VeroError(f"malformed YAML{at}: {getattr(exc, 'problem', None) or exc}", where=str(path),
                        fix=f"fix the syntax of the {what}") from None


def _mapping(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VeroError(f"{what} must be a mapping, got {type(value).__name__}", where=where,
                        fix=_FIX_HARBOR_YAML)
    return value


def _partition(value: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(n, str) for n in v)
            for k, v in value.items()):
        raise VeroError("partition must map each split name to a list of task names", where=where,
                        fix="write partition: {train: [task-a, org/task-b], test: [...]}")
    make_partition(value, where)  # the sidecar's rules
    return value


@dataclass(frozen=True)
class BenchmarkInput:
    """A Mode B benchmark as loaded: raw harbor settings (validated on use) and the partition."""

    harbor: dict[str, Any]
    partition: dict[str, list[str]]
    base_dir: Path
    origin: str
    overrides: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, overrides: Mapping[str, Any]) -> BenchmarkInput:
        """The same benchmark with command-line overrides of HarborConfig fields (None = unset)."""
        given = {key: value for key, value in overrides.items() if value is not None}
        return BenchmarkInput(self.harbor, self.partition, self.base_dir, self.origin,
                              {**self.overrides, **given})

    def _validated(self, model: type[BaseModel], keys: set[str] | None) -> Any:
        data = {**self.harbor, **self.overrides}
        if keys is not None:
            data = {key: value for key, value in data.items() if key in keys}
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            raise VeroError(f"invalid Harbor settings at {describe(exc, under='harbor')}", where=self.origin,
                            fix="fix the file or the command-line option") from None

    def harbor_config(self) -> HarborConfig:
        """The full HarborConfig (what `run` needs)."""
        config: HarborConfig = self._validated(HarborConfig, None)
        return config

    def collation(self) -> CollationSettings:
        """Only the collation settings (what `collate` needs; no agent required)."""
        settings: CollationSettings = self._validated(CollationSettings, set(CollationSettings.model_fields))
        return settings

    @property
    def task_source(self) -> str:
        """The task source as configured (relative paths are against `base_dir`)."""
        value = self.overrides.get("task_source", self.harbor.get("task_source"))
        if not isinstance(value, str) or not value:
            raise VeroError("no task source", where=self.origin,
                            fix="set harbor.task_source (or inner_task in build.yaml), or pass --task-source")
        return value

    @property
    def registry_path(self) -> str | None:
        """The local registry.json of a registry source, as configured (relative to `base_dir`)."""
        value = self.overrides.get("registry_path", self.harbor.get("registry_path"))
        return value if isinstance(value, str) and value else None

    def split(self, split: str) -> list[str]:
        """The task names of one split, as written."""
        if split not in self.partition:
            splits = ", ".join(sorted(self.partition))
            raise VeroError(f"split {split!r} is not in the partition (splits: {splits})", where=self.origin,
                            fix="pass --split with one of the partition's splits")
        return self.partition[split]


def from_harbor_yaml(path: Path) -> BenchmarkInput:
    """Load a runner file: `harbor:` (HarborConfig) and `partition:`."""
    path = Path(path)
    data = _mapping(read_yaml(path, "harbor config"), str(path), "the harbor config")
    unknown = sorted(set(data) - {"harbor", "partition"})
    if unknown:
        raise VeroError(f"unknown top-level key(s) {unknown}", where=str(path), fix=_FIX_HARBOR_YAML)
    for key in ("harbor", "partition"):
        if key not in data:
            raise VeroError(f"missing `{key}:`", where=str(path), fix=_FIX_HARBOR_YAML)
    harbor = _mapping(data["harbor"], f"{path}: harbor", "harbor")
    return BenchmarkInput(harbor=dict(harbor), partition=_partition(data["partition"], f"{path}: partition"),
                          base_dir=path.resolve().parent, origin=str(path))


def from_build_yaml(path: Path) -> BenchmarkInput:
    """A Mode B build.yaml, validated as the compiler validates it: its `harbor` settings (with
    `inner_task` as the task source when set) and its partition."""
    path = Path(path)
    config = load_build_config(path).config
    if not isinstance(config, ModeBBuild):
        raise VeroError(f"the runner needs a Mode B benchmark, this one has mode {config.mode!r}",
                        where=f"{path}: mode", fix="point --build-config at a build.yaml with `mode: B`")
    # Only what the file set: a command-line option still overrides it, and defaults stay HarborConfig's.
    harbor = config.harbor.model_dump(exclude_unset=True)
    if config.inner_task is not None:
        harbor["task_source"] = config.inner_task
    return BenchmarkInput(harbor=harbor, partition=config.partition, base_dir=path.resolve().parent,
                          origin=str(path))


def from_flags(partition_path: Path, task_source: str | None, agent: str | None) -> BenchmarkInput:
    """A benchmark from `--partition FILE --task-source DIR [--agent module:Class]` (relative to cwd)."""
    partition_path = Path(partition_path)
    partition = _partition(read_yaml(partition_path, "partition"), str(partition_path))
    harbor: dict[str, Any] = {}
    if task_source is not None:
        harbor["task_source"] = task_source
    if agent is not None:
        harbor["agent"] = agent
    return BenchmarkInput(harbor=harbor, partition=partition, base_dir=Path.cwd(), origin="command line")
