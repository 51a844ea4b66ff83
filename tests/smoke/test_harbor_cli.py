"""The harbor CLI that build-support/setup.sh installs answers."""

from __future__ import annotations

import re
import subprocess

from tests.support.tools import harbor_bin


def test_harbor_version() -> None:
    result = subprocess.run([str(harbor_bin()), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\b0\.2[4-9]\.\d+\b", result.stdout + result.stderr), result.stdout


def test_harbor_run_has_the_flags_vero_uses() -> None:
    result = subprocess.run([str(harbor_bin()), "run", "--help"], capture_output=True, text=True, check=False,
                            env={"COLUMNS": "200", "TERM": "dumb", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    for flag in ("--path", "--include-task-name", "--n-concurrent", "--n-attempts", "--max-retries",
                 "--jobs-dir", "--job-name", "--yes"):
        assert flag in result.stdout, flag
