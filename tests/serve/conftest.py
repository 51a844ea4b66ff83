"""Fixtures for sidecar tests: a generated benchmark and a root the harness user can traverse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.mode_a import ModeABench, make_mode_a_bench, shared_tmp


@pytest.fixture
def bench(tmp_path: Path, root: Path) -> ModeABench:
    # tmp_path is 0700 root: like /opt/vero/sidecar, the harness user cannot read it. The agent
    # repo, which the sidecar's unprivileged fetcher reads, lives in `root`.
    return make_mode_a_bench(tmp_path / "bench", {"train": 6, "validation": 8, "test": 6}, agent_parent=root)


@pytest.fixture
def root() -> Iterator[Path]:
    with shared_tmp() as path:
        yield path
