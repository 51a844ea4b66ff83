"""The README and docs stand alone and agree with the repository: one way to get `vero` on PATH,
harbor job dirs that git ignores, the trial outputs and the oracle contract written down."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support.benchmarks import BUILD_ROOT

ROOT = Path(".") if Path("docs/guide.md").is_file() else BUILD_ROOT
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
PATH_EXPORT = 'export PATH="$PWD/build-support/bin:$PATH"'


def _code_lines(path: Path) -> list[str]:
    """The lines inside fenced code blocks, continuation lines joined."""
    lines: list[str] = []
    inside = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line.strip()
            else:
                lines.append(line)
    return lines


def _section(path: Path, heading: str) -> str:
    return path.read_text().split(heading, 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_there_are_docs_to_check() -> None:
    assert len(DOCS) >= 8 and all(path.is_file() for path in DOCS)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_doc_stands_alone(path: Path) -> None:
    text = path.read_text()
    for outside in ("SPEC", "../shared", "shared/reference"):
        assert outside not in text, f"{path.name} points outside the repository: {outside}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_vero_runs_from_path_the_one_documented_way(path: Path) -> None:
    for line in _code_lines(path):
        assert not re.search(r"vero\.pex\s+(harbor|--)|\$V\b|\bV=", line), f"{path.name}: {line}"


def test_the_way_to_put_vero_on_path_is_documented_where_users_start() -> None:
    for name in ("README.md", "docs/guide.md", "docs/build.md"):
        assert PATH_EXPORT in (ROOT / name).read_text(), name


def test_harbor_job_dirs_in_the_docs_are_git_ignored() -> None:
    ignored = {line.strip().strip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
               if line.startswith("/") and line.rstrip().endswith("/")}
    found = []
    for path in DOCS:
        for line in _code_lines(path):
            if "harbor run" not in line:
                continue
            for written in re.findall(r"\s-o\s+(\S+)", line):
                jobs = written.strip("\"'").removeprefix("$PWD/")
                found.append(jobs)
                assert jobs.startswith("/") or jobs.split("/")[0] in ignored, f"{path.name}: -o {written}"
    assert "jobs" in found  # the quick start's


def test_the_guide_lists_the_trial_outputs_finalize_json_included() -> None:
    after = _section(ROOT / "docs/guide.md", "### After a run")
    for output in ("verifier/reward.json", "verifier/finalize.json", "verifier/test-stdout.txt",
                   "artifacts/eval-sidecar/"):
        assert f"`{output}`" in after, output


def test_the_guide_documents_the_oracle_contract() -> None:
    contract = " ".join(_section(ROOT / "docs/guide.md", "### The oracle contract").split())
    for fact in ("`agent` (uid 1000)", "working directory `/work`", "`/usr/local/bin/vero`", "`VERO_EVAL_URL`",
                 "Only committed code can be evaluated", "agent/oracle.txt"):
        assert fact in contract, fact
