"""Where Mode B tasks come from, and how partition names map to Harbor's include filters.

A partition may name a task by its `[task].name` (`org/name`) or by its directory name.
Harbor's `-i` filters match directory names while trial results record `task_name`, so a
local source resolves every name to its directory up front and trials are matched back by both.
A registry source is resolved the same way against a local registry (`registry_path`); without
one its names can only be style-checked (see `vero.modeb.registry`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib

from vero.errors import VeroError
from vero.modeb.config import check_registry_path, is_hub_package, is_registry_source
from vero.modeb.registry import LocalRegistry, RegistryDataset, RegistryTask, check_names, resolve_names

_REQUIRED = ("task.toml", "instruction.md", "environment", "tests/test.sh")


@dataclass(frozen=True)
class TaskRef:
    """One partition entry: the sample id as written, its directory (local sources) and task name."""

    sample_id: str
    dir_name: str | None
    task_name: str

    @property
    def label(self) -> str:
        """How messages name the task: the sample id, plus the directory when it differs."""
        if self.dir_name and self.dir_name != self.sample_id:
            return f"{self.sample_id!r} (dir {self.dir_name})"
        return repr(self.sample_id)


def fnmatch_literal(name: str) -> str:
    """A glob that matches exactly `name` (Harbor's `-i` patterns go through fnmatch)."""
    return "".join(f"[{ch}]" if ch in "*?[" else ch for ch in name)


def _task_name_of(task_dir: Path) -> str:
    """`[task].name` of a task dir, else its directory name (Harbor's own rule)."""
    toml_path = task_dir / "task.toml"
    try:
        data = tomllib.loads(toml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise VeroError(f"cannot read task.toml: {exc}", where=str(toml_path),
                        fix="make it valid TOML (check it with `harbor lint`)") from None
    section = data.get("task")
    if section is None:
        return task_dir.name
    name = section.get("name") if isinstance(section, dict) else None
    if not isinstance(name, str) or not name:
        raise VeroError("[task] has no string `name`", where=str(toml_path),
                        fix='set [task].name = "org/name" or remove the [task] table')
    return name


def _is_task_dir(path: Path) -> bool:
    return (path / "task.toml").is_file()


def _missing_parts(task_dir: Path) -> list[str]:
    return [part for part in _REQUIRED if not (task_dir / part).exists()]


class TaskSource:
    """The inner tasks of a Mode B benchmark: a local task or dataset dir, or a registry dataset
    (listed when a local registry.json holds it)."""

    def __init__(self, spec: str, *, local_root: Path | None, tasks: dict[str, str],
                 registry: LocalRegistry | None = None, dataset: RegistryDataset | None = None) -> None:
        self.spec = spec
        self.local_root = local_root
        self._tasks = tasks          # dir name -> task name (local sources only)
        self.registry = registry
        self.dataset = dataset
        self._registry_tasks: dict[str, RegistryTask] = {}   # dir name -> task, once resolved

    @classmethod
    def open(cls, task_source: str, base_dir: Path, registry_path: str | None = None) -> TaskSource:
        """Open a task source; relative local paths (source, registry) are resolved against `base_dir`."""
        try:
            check_registry_path(task_source, registry_path)
        except ValueError as exc:
            raise VeroError(str(exc), where="harbor.registry_path",
                            fix="drop registry_path, or set task_source to a name@version dataset of it") from None
        if is_registry_source(task_source):
            if registry_path is None:
                return cls(task_source, local_root=None, tasks={})
            registry = LocalRegistry.load((Path(base_dir) / registry_path).resolve())
            return cls(task_source, local_root=None, tasks={}, registry=registry,
                       dataset=registry.dataset(task_source))
        root = (Path(base_dir) / task_source).resolve()
        if not root.is_dir():
            raise VeroError(f"task source {task_source!r} is not a directory", where=str(root),
                            fix="point harbor.task_source at a Harbor task dir or a dir of task dirs")
        if _is_task_dir(root):
            candidates = [root]
        else:
            candidates = sorted(child for child in root.iterdir() if child.is_dir() and _is_task_dir(child))
        if not candidates:
            raise VeroError("no Harbor task (a dir with task.toml) found", where=str(root),
                            fix="point harbor.task_source at a Harbor task dir or a dir of task dirs")
        tasks = {task_dir.name: _task_name_of(task_dir) for task_dir in candidates}
        return cls(task_source, local_root=root, tasks=tasks)

    @property
    def is_single_task(self) -> bool:
        """True when the local source is itself one task (Harbor then takes no include filter)."""
        return self.local_root is not None and _is_task_dir(self.local_root)

    def task_dir(self, ref: TaskRef) -> Path | None:
        """The directory of a resolved local task."""
        if self.local_root is None or ref.dir_name is None:
            return None
        return self.local_root if self.is_single_task else self.local_root / ref.dir_name

    def registry_task(self, ref: TaskRef) -> RegistryTask | None:
        """The local registry's entry of a resolved registry task."""
        return self._registry_tasks.get(ref.dir_name) if ref.dir_name is not None else None

    def resolve(self, names: Sequence[str], *, where: str = "partition") -> list[TaskRef]:
        """Map partition names to tasks; unknown or ambiguous names are one VeroError listing them all."""
        if self.local_root is None:
            return self._resolve_registry(names, where)
        by_task_name: dict[str, list[str]] = {}
        for dir_name, task_name in self._tasks.items():
            by_task_name.setdefault(task_name, []).append(dir_name)
        refs: list[TaskRef] = []
        problems: list[str] = []
        claimed: dict[str, str] = {}
        for name in names:
            if name in self._tasks:
                dir_name = name
            elif len(by_task_name.get(name, [])) == 1:
                dir_name = by_task_name[name][0]
            elif name in by_task_name:
                dirs = ", ".join(by_task_name[name])
                problems.append(f"{name!r} is the [task].name of several dirs ({dirs}); "
                                "name one by its directory")
                continue
            else:
                close = difflib.get_close_matches(name, [*self._tasks, *by_task_name], n=3, cutoff=0.5)
                hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
                problems.append(f"{name!r} is not a task in {self.local_root}{hint}")
                continue
            if dir_name in claimed:
                problems.append(f"{name!r} and {claimed[dir_name]!r} are the same task (dir {dir_name})")
                continue
            claimed[dir_name] = name
            refs.append(TaskRef(sample_id=name, dir_name=dir_name, task_name=self._tasks[dir_name]))
        for ref in refs:
            task_dir = self.task_dir(ref)
            missing = _missing_parts(task_dir) if task_dir is not None else []
            if missing:
                problems.append(f"{ref.label} is not a valid Harbor task: missing {', '.join(missing)}")
        if problems:
            raise VeroError("unknown or invalid task names: " + "; ".join(problems), where=where,
                            fix=f"use directory names or [task].name values of the tasks in {self.spec}")
        return refs

    def _resolve_registry(self, names: Sequence[str], where: str) -> list[TaskRef]:
        if self.registry is not None and self.dataset is not None:
            resolved, problems = resolve_names(self.dataset, names)
            if problems:
                raise VeroError(f"unknown or ambiguous task names (registry {self.registry.path}): "
                                + "; ".join(problems), where=where,
                                fix=f"use directory names, registry names or [task].name values of the tasks "
                                    f"of {self.spec}")
            for item in resolved:
                self._registry_tasks[item.task.dir_name] = item.task
            return [TaskRef(sample_id=item.sample_id, dir_name=item.task.dir_name, task_name=item.task_name)
                    for item in resolved]
        problems = check_names(self.spec, names)
        if problems:
            raise VeroError("registry task names that Harbor cannot select: " + "; ".join(problems), where=where,
                            fix="fix the partition's task names")
        if is_hub_package(self.spec):
            # Hub tasks are selected and recorded by their org/name: the name is all there is.
            return [TaskRef(sample_id=name, dir_name=None, task_name=name) for name in names]
        # A registry dataset is selected by directory name: the name IS the directory.
        return [TaskRef(sample_id=name, dir_name=name, task_name=name) for name in names]

    def harbor_args(self, refs: Sequence[TaskRef]) -> list[str]:
        """`-p`/`-d` (plus `--registry-path`) and one exact include filter per task (none for a single
        local task)."""
        if self.local_root is None:
            source = ["-d", self.spec]
            if self.registry is not None:
                source += ["--registry-path", str(self.registry.path)]
            return [*source, *[arg for ref in refs for arg in ("-i", fnmatch_literal(ref.dir_name or ref.sample_id))]]
        if self.is_single_task:
            return ["-p", str(self.local_root)]
        includes = [arg for ref in refs if ref.dir_name for arg in ("-i", fnmatch_literal(ref.dir_name))]
        return ["-p", str(self.local_root), *includes]
