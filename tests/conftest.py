"""Suite-wide rules. Under CI=true a skipped test fails the run (tests/support/ci_skips.py).
Every test process ends by pruning dangling images that compiled tasks left behind."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support import ci_skips


def pytest_configure(config: pytest.Config) -> None:
    ci_skips.register(config)


def _prune_task_images() -> None:
    # Building compiled tasks leaves dangling (untagged) images behind; they carry the label
    # the task Dockerfiles set, so only vero's own are removed. Only old ones: test processes
    # run in parallel, and a build in progress holds young untagged intermediate images.
    if shutil.which("docker"):
        subprocess.run(["docker", "image", "prune", "--force", "--filter", "label=io.vero.task",
                        "--filter", "until=30m"], capture_output=True, check=False, timeout=300)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _prune_task_images()
