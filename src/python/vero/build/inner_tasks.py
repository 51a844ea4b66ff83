"""Indexing a local Mode B task source and resolving partition names to task directories.

A source is one Harbor task (a dir with task.toml) or a dataset (a dir whose children are tasks).
A partition may name a task by its directory name or by its `[task].name` (SPEC §6).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import tomllib

from vero.errors import VeroError

REQUIRED = ("task.toml", "instruction.md", "environment", "tests/test.sh")


@dataclass(frozen=True)
class InnerTask:
    """One task of the source: its directory and its `[task].name` if it has one."""

    dir: Path
    package_name: str | None


def _package_name(task_dir: Path) -> str | None:
    path = task_dir / "task.toml"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise VeroError(f"unreadable task.toml: {exc}", where=str(path),
                        fix="fix the inner task's task.toml") from None
    section = data.get("task")
    name = section.get("name") if isinstance(section, dict) else None
    return name if isinstance(name, str) else None


def index_source(root: Path, where: str) -> list[InnerTask]:
    """Every task of the source at `root`, sorted by directory name."""
    if not root.is_dir():
        raise VeroError(f"inner_task {root} is not a directory", where=where,
                        fix="point inner_task at a Harbor task dir or a dir of Harbor tasks")
    candidates = [root] if (root / "task.toml").is_file() else sorted(
        child for child in root.iterdir() if child.is_dir() and (child / "task.toml").is_file())
    if not candidates:
        raise VeroError(f"inner_task {root} holds no Harbor task (no task.toml in it or its subdirectories)",
                        where=where, fix="point inner_task at a Harbor task dir or a dir of Harbor tasks")
    return [InnerTask(dir=c, package_name=_package_name(c)) for c in candidates]


def resolve_partition(tasks: list[InnerTask], partition: dict[str, list[str]], where: str) -> dict[str, Path]:
    """Map every partition name to its task directory; unknown or ambiguous names are errors."""
    by_name: dict[str, set[Path]] = {}
    for task in tasks:
        by_name.setdefault(task.dir.name, set()).add(task.dir)
        if task.package_name:
            by_name.setdefault(task.package_name, set()).add(task.dir)
    resolved: dict[str, Path] = {}
    problems: list[str] = []
    for split, names in partition.items():
        for name in names:
            dirs = by_name.get(name, set())
            if len(dirs) == 1:
                resolved[name] = next(iter(dirs))
            elif dirs:
                options = ", ".join(sorted(d.name for d in dirs))
                problems.append(f"partition.{split}: {name!r} is ambiguous ({options})")
            else:
                close = difflib.get_close_matches(name, sorted(by_name), n=3, cutoff=0.5)
                hint = f"did you mean {', '.join(map(repr, close))}?" if close else "no close match"
                problems.append(f"partition.{split}: unknown task {name!r} ({hint})")
    if problems:
        raise VeroError("partition names do not match the inner tasks:\n  " + "\n  ".join(problems),
                        where=where,
                        fix="use task directory names or [task].name values of the inner task source")
    chosen = list(resolved.values())
    twice = sorted({d.name for d in chosen if chosen.count(d) > 1})
    if twice:
        raise VeroError(f"partition names the same task more than once: {', '.join(twice)}", where=where,
                        fix="list each inner task once (by directory name or by [task].name)")
    for task_dir in set(chosen):
        missing = [r for r in REQUIRED if not (task_dir / r).exists()]
        if missing:
            raise VeroError(f"inner task {task_dir.name!r} lacks {', '.join(missing)}", where=str(task_dir),
                            fix="make it a valid Harbor task (`harbor lint` helps)")
    return resolved
