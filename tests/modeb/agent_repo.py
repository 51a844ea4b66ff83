"""The example candidate repo (tasks/bar/agent) as a real git repo: the baseline commit, then
the improvement an optimizer would commit (data/improve-agent.patch, applied with `git apply`)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "tasks" / "bar" / "agent"
PATCH = Path(__file__).resolve().parent / "data" / "improve-agent.patch"
GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1",
           "PATH": "/usr/local/bin:/usr/bin:/bin"}


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` and return its stdout; a failure fails the test with git's message."""
    result = subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
    return result.stdout.strip()


@dataclass(frozen=True)
class AgentRepo:
    path: Path
    baseline: str
    improved: str


def make_agent_repo(tmp_path: Path) -> AgentRepo:
    """A git repo holding the baseline agent (commit 1) and the improved agent (commit 2)."""
    repo = tmp_path / "agent-repo"
    shutil.copytree(AGENT, repo, ignore=shutil.ignore_patterns("__pycache__"))
    git(repo, "init", "--quiet", "--initial-branch", "main")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "baseline")
    baseline = git(repo, "rev-parse", "HEAD")
    git(repo, "apply", str(PATCH))
    git(repo, "commit", "--quiet", "--all", "-m", "teach the agent to sum integers and count words")
    return AgentRepo(path=repo, baseline=baseline, improved=git(repo, "rev-parse", "HEAD"))
