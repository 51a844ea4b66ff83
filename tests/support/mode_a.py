"""A small real Mode A benchmark for tests and benches: arithmetic questions, a trusted scorer,
and an agent repo whose baseline answers 0 and whose improved commit computes the sum."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from vero.baseline import make_baseline_commit

BASELINE_AGENT = "def solve(row):\n    return {'answer': 0}\n"
IMPROVED_AGENT = (
    "def solve(row):\n"
    "    left, right = row['question'].split('+')\n"
    "    return {'answer': int(left) + int(right)}\n"
)
# Right only when the first operand is even: a candidate between baseline and improved.
PARTIAL_AGENT = (
    "def solve(row):\n"
    "    left, right = row['question'].split('+')\n"
    "    if int(left) % 2:\n"
    "        return {'answer': -1}\n"
    "    return {'answer': int(left) + int(right)}\n"
)
SCORER = (
    "def score(output, row):\n"
    "    right = float(output.get('answer') == row['answer'])\n"
    "    return {'score': right, 'exact': right}\n"
)
ENTRYPOINT = "agent:solve"
LABEL_FIELDS = ["answer"]
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "optimizer", "GIT_AUTHOR_EMAIL": "o@example.invalid",
    "GIT_COMMITTER_NAME": "optimizer", "GIT_COMMITTER_EMAIL": "o@example.invalid",
}


@dataclass(frozen=True)
class ModeABench:
    """Paths of a generated benchmark."""

    root: Path
    dataset_dir: Path
    scorer: Path
    agent_repo: Path
    baseline_dir: Path
    baseline_commit: str


def rows(split: str, n: int) -> list[dict[str, object]]:
    """`n` rows `{"id", "question": "a+b", "answer"}`; ids are unique per split."""
    return [{"id": f"{split}-{i}", "question": f"{i}+{i * 3 + 1}", "answer": i + i * 3 + 1} for i in range(n)]


def write_dataset(directory: Path, sizes: dict[str, int]) -> Path:
    """One `<split>.jsonl` per split."""
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(split, n)))
    return directory


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` with a fixed identity and no user config; return stdout."""
    env = {"PATH": os.environ["PATH"], "HOME": str(repo), **GIT_ENV}
    result = subprocess.run(["git", "-c", f"safe.directory={repo}", *args], cwd=repo, env=env,
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


def commit_agent(repo: Path, source: str, message: str = "candidate") -> str:
    """Replace agent.py in `repo`, commit it and return the new HEAD."""
    (repo / "agent.py").write_text(source)
    git(repo, "add", "agent.py")
    git(repo, "commit", "-q", "--no-verify", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def make_mode_a_bench(root: Path, sizes: dict[str, int] | None = None, agent_parent: Path | None = None,
                      extra_files: dict[str, str] | None = None) -> ModeABench:
    """Dataset, scorer, baseline dir (files/ + BASELINE.json) and the optimizer's agent repo.

    The agent repo goes under `agent_parent` when given: a sidecar's fetcher reads it as an
    unprivileged user, who cannot traverse a 0700 `root` (where the labels stay unreadable).
    `extra_files` (relative path -> text) join agent.py in the baseline.
    """
    root.mkdir(parents=True, exist_ok=True)
    dataset = write_dataset(root / "dataset", sizes or {"train": 8, "validation": 8, "test": 6})
    scorer = root / "scorer.py"
    scorer.write_text(SCORER)
    files = root / "baseline" / "files"
    files.mkdir(parents=True)
    (files / "agent.py").write_text(BASELINE_AGENT)
    for name, text in (extra_files or {}).items():
        (files / name).parent.mkdir(parents=True, exist_ok=True)
        (files / name).write_text(text)
    # The commit is computed on a scratch copy: files/ itself must stay a plain directory.
    scratch = root / "baseline-scratch"
    shutil.copytree(files, scratch)
    sha = make_baseline_commit(scratch)
    shutil.rmtree(scratch)
    (root / "baseline" / "BASELINE.json").write_text(json.dumps({"commit": sha}))
    agent_repo = (agent_parent or root) / "agent"
    shutil.copytree(files, agent_repo)
    assert make_baseline_commit(agent_repo) == sha
    return ModeABench(root=root, dataset_dir=dataset, scorer=scorer, agent_repo=agent_repo,
                      baseline_dir=root / "baseline", baseline_commit=sha)


@contextmanager
def shared_tmp() -> Iterator[Path]:
    """A 0755 directory under /tmp that an unprivileged user can traverse (pytest's tmp is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="vero-test-", dir="/tmp"))
    try:
        path.chmod(0o755)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def is_root() -> bool:
    """True when the tests can switch users (CI runs as root)."""
    return os.geteuid() == 0
