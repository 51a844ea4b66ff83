"""Under CI=true a skipped test must fail the run (tests/support/ci_skips.py, which tests/conftest.py
and pants-plugins/conftest.py both apply)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import ci_skips

# The directory that holds `tests/`, so the scratch suite imports the same module.
SOURCE_ROOT = Path(ci_skips.__file__).resolve().parents[2]
CONFTEST = "from tests.support import ci_skips\n\ndef pytest_configure(config):\n    ci_skips.register(config)\n"


def _run_suite(tmp_path: Path, ci: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_x.py").write_text(
        "import pytest\n\ndef test_ok():\n    pass\n\n"
        "def test_needs_docker():\n    pytest.skip('no docker')\n"
    )
    path = os.pathsep.join(filter(None, [str(SOURCE_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "CI": ci, "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


def test_skip_fails_under_ci(tmp_path: Path) -> None:
    result = _run_suite(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "skipped test(s) count as failures" in result.stdout
    assert "test_needs_docker" in result.stdout


def test_skip_is_a_skip_outside_ci(tmp_path: Path) -> None:
    result = _run_suite(tmp_path, "")
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout

