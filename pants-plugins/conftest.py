"""Under CI=true a skipped plugin test fails the run, as in the product's suite (tests/support/ci_skips.py)."""

from __future__ import annotations

import pytest

from tests.support import ci_skips


def pytest_configure(config: pytest.Config) -> None:
    ci_skips.register(config)
