"""Small but complete benchmarks on disk, for tests of the compiler (and of anything that builds)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

BUILD_ROOT = Path(__file__).resolve().parents[2]
FOO_DIR = BUILD_ROOT / "tasks" / "foo"


# The stand-in's packages are this test process's (vero's sources and its dependencies) instead of
# wheels inside the zip; like a PEX it hides the interpreter's own site-packages.
_FAKE_PEX_MAIN = """
import os, sys
sys.path = [p for p in sys.path if not p.endswith(("site-packages", "dist-packages"))] + {paths!r}
if os.environ.get("PEX_INTERPRETER") == "1" and sys.argv[1:2] == ["-c"]:
    code = sys.argv[2]
    sys.argv = ["-c", *sys.argv[3:]]
    exec(compile(code, "<string>", "exec"), {{"__name__": "__main__"}})
else:
    from vero.cli import main
    main()
"""


def fake_runtime_pex(path: Path) -> Path:
    """A PEX-shaped zip (it has PEX-INFO) for builds whose images are never started. It runs like
    the vero PEX where the build needs it to (`PEX_INTERPRETER=1 python PEX -c CODE`, the scorer
    check) with this process's packages; the real PEX is needed to start the images."""
    path.parent.mkdir(parents=True, exist_ok=True)
    def is_stdlib(entry: str) -> bool:
        base = os.path.commonpath([os.path.abspath(entry), sys.base_prefix]) == sys.base_prefix
        return base and not entry.endswith(("site-packages", "dist-packages"))

    paths = [os.path.abspath(entry) for entry in sys.path if entry and os.path.isdir(entry) and not is_stdlib(entry)]
    with zipfile.ZipFile(path, "w") as archive:
        stamp = (1980, 1, 1, 0, 0, 0)
        archive.writestr(zipfile.ZipInfo("PEX-INFO", date_time=stamp), json.dumps({"entry_point": "vero.cli:main"}))
        archive.writestr(zipfile.ZipInfo("__main__.py", date_time=stamp), _FAKE_PEX_MAIN.format(paths=paths))
    return path


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as build.yaml."""
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def mode_a_config(**overrides: Any) -> dict[str, Any]:
    """A valid Mode A build.yaml (as a dict) for `write_mode_a`'s layout; `overrides` replace keys."""
    config: dict[str, Any] = {
        "mode": "A",
        "name": "test/bench",
        "description": "a test benchmark",
        "agent_repo": "agent",
        "dataset": "data",
        "label_fields": ["answer"],
        "entrypoint": "solver.core:solve",
        "scorer": "scorer/scorer.py",
        "solution": "solution",
        "splits": [
            {"split": "train", "access": "viewable"},
            {"split": "validation", "access": "non_viewable"},
            {"split": "test", "access": "no_access"},
        ],
        "budgets": [
            {"split": "train", "total_run_budget": 10},
            {"split": "validation", "total_run_budget": 3, "total_sample_budget": 60},
        ],
        "selection_split": "validation",
        "targets": [{"split": "test", "reward_key": "accuracy"}],
        "read_only_paths": ["README.md"],
    }
    config.update(overrides)
    return config


def _rows(split: str, n: int) -> str:
    return "".join(json.dumps({"id": f"{split}-{i}", "question": f"q{i}", "answer": str(i)}) + "\n"
                   for i in range(n))


def write_agent(agent: Path, files: dict[str, str] | None = None) -> Path:
    """A small baseline agent repo (plain directory)."""
    files = files or {
        "solver/__init__.py": "",
        "solver/core.py": "def solve(row):\n    return ''\n",
        "README.md": "baseline\n",
        "run.sh": "#!/bin/sh\necho run\n",
    }
    for rel, text in files.items():
        path = agent / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        if rel.endswith(".sh"):
            path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return agent


def write_mode_a(root: Path, **overrides: Any) -> Path:
    """Agent repo, dataset, scorer, solution and build.yaml under `root`; returns build.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    write_agent(root / "agent")
    data = root / "data"
    data.mkdir()
    for split, n in (("train", 8), ("validation", 6), ("test", 6)):
        (data / f"{split}.jsonl").write_text(_rows(split, n), encoding="utf-8")
    (root / "scorer").mkdir()
    (root / "scorer" / "scorer.py").write_text(
        "def score(output, row):\n    return float(output == row['answer'])\n", encoding="utf-8")
    (root / "solution").mkdir()
    (root / "solution" / "solve.sh").write_text("#!/bin/sh\necho improve\n", encoding="utf-8")
    return write_yaml(root / "build.yaml", mode_a_config(**overrides))


def write_inner_task(task_dir: Path, package_name: str | None, answer: str = "ok") -> Path:
    """A tiny Harbor task on the local base image: the verifier checks /app/answer.txt."""
    (task_dir / "environment").mkdir(parents=True)
    (task_dir / "tests").mkdir()
    header = f'[task]\nname = "{package_name}"\n\n' if package_name else ""
    (task_dir / "task.toml").write_text(header + "[agent]\ntimeout_sec = 60.0\n", encoding="utf-8")
    (task_dir / "instruction.md").write_text(f"Write {answer} to /app/answer.txt\n", encoding="utf-8")
    (task_dir / "environment" / "Dockerfile").write_text("FROM vero/base:bookworm\nWORKDIR /app\n",
                                                         encoding="utf-8")
    test = task_dir / "tests" / "test.sh"
    test.write_text(f'#!/bin/bash\n[ "$(cat /app/answer.txt)" = {answer} ] '
                    "&& echo 1 > /logs/verifier/reward.txt || echo 0 > /logs/verifier/reward.txt\n",
                    encoding="utf-8")
    test.chmod(0o755)
    return task_dir


def mode_b_config(**overrides: Any) -> dict[str, Any]:
    """A valid Mode B build.yaml (as a dict) for `write_mode_b`'s layout."""
    config: dict[str, Any] = {
        "mode": "B",
        "name": "test/bench-b",
        "description": "a Mode B test benchmark",
        "agent_repo": "agent",
        "inner_task": "inner",
        "harbor": {"agent": "solver.agent:Agent", "n_attempts": 1},
        "partition": {"train": ["task-a", "org/task-b"], "validation": ["task-c"], "test": ["task-d"]},
        "splits": [
            {"split": "train", "access": "viewable"},
            {"split": "validation", "access": "non_viewable"},
        ],
        "budgets": [{"split": "train", "total_run_budget": 4},
                    {"split": "validation", "total_run_budget": 2}],
        "selection_split": "validation",
        "targets": [{"split": "test", "reward_key": "pass_rate"}],
        "k_anonymity_floor": 1,
    }
    config.update(overrides)
    return config


def write_mode_b(root: Path, **overrides: Any) -> Path:
    """Inner tasks (task-a..task-e, task-b named org/task-b), an agent repo and build.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    write_agent(root / "agent", {"solver/__init__.py": "", "solver/agent.py": "class Agent:\n    pass\n"})
    for name in ("task-a", "task-b", "task-c", "task-d", "task-e"):
        write_inner_task(root / "inner" / name, "org/task-b" if name == "task-b" else None)
    return write_yaml(root / "build.yaml", mode_b_config(**overrides))


def snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every file under `root`: its kind+mode and content (link target for symlinks)."""
    found: dict[str, tuple[str, bytes]] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path).encode())
            else:
                found[rel] = (oct(stat.S_IMODE(path.stat().st_mode)), path.read_bytes())
    return found


def write_local_registry(root: Path, tasks: dict[str, Path], *, dataset: str = "bench", version: str = "1.0",
                         git: bool = True, pin: bool = True) -> Path:
    """A Harbor registry.json at `root` whose dataset `dataset@version` holds copies of `tasks`
    ({dir name: task dir}): in a git repository reached through a `file://` URL (the commit
    pinned with `pin`), else as absolute local paths. Returns the registry.json path."""
    repo = root / "registry-repo"
    (repo / "tasks").mkdir(parents=True)
    for dir_name, source in tasks.items():
        shutil.copytree(source, repo / "tasks" / dir_name)
    commit = None
    if git:
        git_id = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgSign=false"]
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], [*git_id, "commit", "-q", "-m", "tasks"]):
            subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True, capture_output=True,
                                text=True).stdout.strip()
    entries = []
    for dir_name in tasks:
        if git:
            entry = {"name": dir_name, "git_url": f"file://{repo}", "path": f"tasks/{dir_name}"}
            if pin and commit is not None:
                entry["git_commit_id"] = commit
        else:
            entry = {"name": dir_name, "path": str(repo / "tasks" / dir_name)}
        entries.append(entry)
    registry = root / "registry.json"
    registry.write_text(json.dumps([{"name": dataset, "version": version, "description": "test registry",
                                     "tasks": entries}], indent=2), encoding="utf-8")
    return registry
