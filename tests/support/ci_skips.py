"""Under CI=true a skipped test fails the run: tests that need Docker, Harbor or a built tool must
really run in CI, so a missing engine or CLI is an error there, not a skip.

Shared by the product's tests (tests/conftest.py) and the Pants plugin's (pants-plugins/conftest.py),
so it runs on CPython 3.9 too.
"""

from __future__ import annotations

import os

import pytest


def in_ci() -> bool:
    """Whether CI=true (or 1, yes) is set."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


class SkipsFailInCI:
    """A pytest plugin: it records skipped tests and, under CI=true, fails the session if any."""

    def __init__(self) -> None:
        self.skipped: list[str] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped:
            self.skipped.append(report.nodeid)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not in_ci() or not self.skipped:
            return
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(
                f"CI=true: {len(self.skipped)} skipped test(s) count as failures: {', '.join(self.skipped)}",
                red=True,
            )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def register(config: pytest.Config) -> None:
    """Apply the rule to this pytest run (call it from a conftest's `pytest_configure`)."""
    config.pluginmanager.register(SkipsFailInCI(), "vero-skips-fail-in-ci")
