"""Suite-wide rules. Under CI=true a skipped test fails the run: tests that need Docker or
Harbor must really run in CI, so a missing engine or CLI is an error there, not a skip.
Every test process ends by pruning dangling images that compiled tasks left behind."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_skipped: list[str] = []


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def _prune_task_images() -> None:
    # Building compiled tasks leaves dangling (untagged) images behind; they carry the label
    # the task Dockerfiles set, so only vero's own are removed. Only old ones: test processes
    # run in parallel, and a build in progress holds young untagged intermediate images.
    if shutil.which("docker"):
        subprocess.run(["docker", "image", "prune", "--force", "--filter", "label=io.vero.task",
                        "--filter", "until=30m"], capture_output=True, check=False, timeout=300)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _prune_task_images()
    if _in_ci() and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"CI=true: {len(_skipped)} skipped test(s) count as failures: {', '.join(_skipped)}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
