"""Harbor registries as Mode B task sources: a local `registry.json` and the names of registry tasks.

Harbor 0.24 has two kinds of registry source (`harbor run -d ...`):

- `name@version`: a dataset of a registry. `--registry-path FILE` reads a local `registry.json`
  (a list of `{name, version, description, tasks: [{name, path, git_url?, git_commit_id?}]}`);
  without it Harbor fetches its default registry over the network. A task is a directory: a
  local path (absolute: Harbor resolves a relative one against its working directory) or a path
  inside a git repository (`git_url`, a `file://` URL works offline; `git_commit_id` pins it).
  Harbor's `-i` filters match the task's DIRECTORY name; its trials record `task_name` (the
  task's `[task].name`, else that directory name) and `task_id.path`.
- `org/name@version`: a Harbor Hub package, always fetched from the Hub. Its tasks are named
  `org/name` (Harbor's package rule), and `-i` filters match those names.

A local registry lets every partition name be resolved at build time, with close-match
suggestions; otherwise only the style of the names is checked (`check_names`).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vero.errors import VeroError
from vero.models import describe

# Harbor's rule for package and [task] names (harbor.constants.ORG_NAME_PATTERN), minus "..".
ORG_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]*/[a-zA-Z0-9][a-zA-Z0-9._-]*$")
# A registry task's directory name as a partition may write it: one plain path component.
DIR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_GIT_ENV = {"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"}


class _Lenient(BaseModel):
    # registry.json is Harbor's format: unknown keys (metrics, newer fields) are ignored, as Harbor does.
    model_config = ConfigDict(extra="ignore")


class RegistryTask(_Lenient):
    """One task of a registry dataset."""

    name: str = Field(min_length=1)
    path: str = Field(min_length=1)
    git_url: str | None = None
    git_commit_id: str | None = None

    @property
    def dir_name(self) -> str:
        """The directory name Harbor's `-i` filters and trial paths use."""
        return PurePosixPath(os.path.normpath(self.path)).name

    @property
    def local_dir(self) -> Path | None:
        """The task directory of a local (non-git) task."""
        return None if self.git_url is not None else Path(self.path)

    @property
    def git_repo(self) -> Path | None:
        """The repository directory of a task in a `file://` git repository."""
        if self.git_url is None:
            return None
        url = urlparse(self.git_url)
        return Path(unquote(url.path)) if url.scheme == "file" and not url.netloc else None

    @property
    def treeish(self) -> str:
        """`<commit>:<path>`: the task's tree in its repository (HEAD when unpinned, as Harbor clones it)."""
        return f"{self.git_commit_id or 'HEAD'}:{os.path.normpath(self.path)}"


class RegistryDataset(_Lenient):
    """One `name@version` dataset of a registry."""

    name: str
    version: str
    description: str = ""
    tasks: list[RegistryTask]

    @property
    def spec(self) -> str:
        """`name@version`, as `harbor run -d` takes it."""
        return f"{self.name}@{self.version}"


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False,
                          env={**os.environ, **_GIT_ENV}, stdin=subprocess.DEVNULL)


def _read_task_toml(task: RegistryTask) -> bytes | None:
    """task.toml of a local task or of a task in a `file://` repository; None when not readable here."""
    local = task.local_dir
    if local is not None:
        try:
            return (local / "task.toml").read_bytes()
        except OSError:
            return None
    repo = task.git_repo
    if repo is None:
        return None
    shown = _git(repo, "show", f"{task.treeish}/task.toml")
    return shown.stdout if shown.returncode == 0 else None


def task_name_of(task: RegistryTask) -> str | None:
    """The `[task].name` a trial of `task` records (else its dir name); None when it cannot be read here."""
    raw = _read_task_toml(task)
    if raw is None:
        return None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    section = data.get("task")
    name = section.get("name") if isinstance(section, dict) else None
    return name if isinstance(name, str) and name else task.dir_name


class LocalRegistry:
    """A local `registry.json` (Harbor's `--registry-path`)."""

    def __init__(self, path: Path, datasets: list[RegistryDataset]) -> None:
        self.path = path
        self.datasets = datasets

    @classmethod
    def load(cls, path: Path, *, where: str = "harbor.registry_path") -> LocalRegistry:
        """Read and check a registry.json; every problem is one VeroError naming the file."""
        path = Path(path)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise VeroError(f"cannot read the registry: {exc.strerror or exc}", where=f"{where}: {path}",
                            fix="point registry_path at a Harbor registry.json") from None
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise VeroError(f"the registry is not valid JSON ({exc})", where=str(path),
                            fix="fix the file: a JSON list of {name, version, description, tasks}") from None
        if not isinstance(data, list):
            raise VeroError("the registry must be a JSON list of datasets", where=str(path),
                            fix="write [{\"name\": ..., \"version\": ..., \"description\": ..., \"tasks\": [...]}]")
        datasets = []
        for index, row in enumerate(data):
            try:
                datasets.append(RegistryDataset.model_validate(row))
            except ValidationError as exc:
                raise VeroError(f"invalid dataset [{index}] at {describe(exc)}", where=str(path),
                                fix="each task needs `name` and `path` (plus `git_url` for a git task)") from None
        for dataset in datasets:
            for task in dataset.tasks:
                if task.git_url is None and not os.path.isabs(task.path):
                    raise VeroError(f"task {task.name!r} of {dataset.spec} has the relative local path "
                                    f"{task.path!r}", where=str(path),
                                    fix="use an absolute path: Harbor resolves a relative one against its "
                                        "working directory, which is the jobs directory")
        return cls(path, datasets)

    def dataset(self, spec: str) -> RegistryDataset:
        """The dataset `name@version`; an unknown one is a VeroError suggesting what the file has."""
        name, _, version = spec.partition("@")
        same_name = [d for d in self.datasets if d.name == name]
        for dataset in same_name:
            if dataset.version == version:
                return dataset
        if same_name:
            versions = ", ".join(sorted(d.version for d in same_name))
            raise VeroError(f"dataset {name!r} has no version {version!r} (it has {versions})",
                            where=str(self.path), fix="set task_source to one of those versions")
        specs = [d.spec for d in self.datasets]
        close = difflib.get_close_matches(spec, specs, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise VeroError(f"the registry has no dataset {spec!r}{hint}", where=str(self.path),
                        fix=f"use one of: {', '.join(specs) or '(the registry is empty)'}")


@dataclass(frozen=True)
class ResolvedTask:
    """A partition name resolved against a local registry."""

    sample_id: str
    task: RegistryTask
    task_name: str


def resolve_names(dataset: RegistryDataset, names: Sequence[str]) -> tuple[list[ResolvedTask], list[str]]:
    """Map partition names to tasks of a local registry dataset: by directory name, by the
    registry's task name, else by `[task].name`. Returns the resolved tasks and the problems
    (unknown names with close matches, ambiguous or repeated ones)."""
    by_dir: dict[str, list[RegistryTask]] = {}
    by_entry: dict[str, list[RegistryTask]] = {}
    for task in dataset.tasks:
        by_dir.setdefault(task.dir_name, []).append(task)
        by_entry.setdefault(task.name, []).append(task)
    task_names: dict[str, list[RegistryTask]] | None = None
    resolved: list[ResolvedTask] = []
    problems: list[str] = []
    claimed: dict[str, str] = {}
    for name in names:
        candidates = by_dir.get(name) or by_entry.get(name)
        if not candidates:
            if task_names is None:  # read task.toml files only when a name needs them
                task_names = {}
                for task in dataset.tasks:
                    known = task_name_of(task)
                    if known is not None:
                        task_names.setdefault(known, []).append(task)
            candidates = task_names.get(name)
        if not candidates:
            pool = sorted({*by_dir, *by_entry, *(task_names or {})})
            close = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
            hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
            problems.append(f"{name!r} is not a task of {dataset.spec}{hint}")
            continue
        dirs = {task.dir_name for task in candidates}
        if len(candidates) > 1 or len(by_dir.get(next(iter(dirs)), [])) > 1:
            problems.append(f"{name!r} names several tasks of {dataset.spec} whose directories are "
                            f"{', '.join(sorted(dirs))}; Harbor's -i filter matches directory names, so "
                            "the dataset must give each task its own directory name")
            continue
        task = candidates[0]
        if task.dir_name in claimed:
            problems.append(f"{name!r} and {claimed[task.dir_name]!r} are the same task (dir {task.dir_name})")
            continue
        claimed[task.dir_name] = name
        resolved.append(ResolvedTask(sample_id=name, task=task, task_name=task_name_of(task) or task.name))
    return resolved, problems


def check_names(task_source: str, names: Sequence[str]) -> list[str]:
    """Style problems of partition names for a registry source that cannot be listed here.

    A Hub package (`org/name@version`) names its tasks `org/name` (Harbor's package rule); a
    registry dataset (`name@version`) is filtered by directory name, so a name is one plain path
    component. Each problem suggests the likely intended name.
    """
    problems = []
    org = task_source.split("/", 1)[0] if "/" in task_source else None
    for name in names:
        if org is not None:
            if ORG_NAME.fullmatch(name) and ".." not in name:
                continue
            base = name.strip().rsplit("/", 1)[-1]
            guess = f"{org}/{base}" if DIR_NAME.fullmatch(base) else None
            hint = f" (did you mean {guess!r}?)" if guess else ""
            problems.append(f"{name!r} is not an org/name task name{hint}: tasks of the Harbor Hub package "
                            f"{task_source} are named org/name (letters, digits, '.', '_', '-')")
        elif not DIR_NAME.fullmatch(name) or name in (".", ".."):
            base = name.strip().rstrip("/").rsplit("/", 1)[-1]
            hint = f" (did you mean {base!r}?)" if base != name and DIR_NAME.fullmatch(base) else ""
            problems.append(f"{name!r} is not a task directory name{hint}: Harbor selects the tasks of the "
                            f"registry dataset {task_source} by directory name (letters, digits, '.', "
                            "'_', '+', '-'), not by [task].name; set harbor.registry_path to a local copy of "
                            "the registry to have names checked against it")
    return problems
